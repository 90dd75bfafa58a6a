"""`cvae/attributes`: attribute-conditioned digits with a CVAE (Debbagh 2023, "Learning Structured Output
Representations from Attributes using Deep Conditional Generative Models"; Sohn et al. 2015's CVAE and hybrid).

Data (`gvlab.data.attributes`): scikit-learn's 8x8 digits, dequantised to [0, 1] ((c + u) / 17), conditioned on
a = [one-hot class, heavy ink, wide] (the binary attributes: above the class median on the training split).
Models (fixed before any run), each with several seeds vmapped:
  * deterministic: MLP a -> x trained by mean squared error (one output per condition);
  * CVAE: q(z|x, a), learned prior p(z|a), Gaussian generator p(x|a, z) with a learned per-pixel scale, latent 8,
    one hidden layer of 128, trained on the CVAE bound (alpha = 1);
  * hybrid: Sohn's alpha * CVAE bound + (1 - alpha) * GSNN objective with alpha = 0.5;
  * KL-weighted: the bound with the KL weighted by w in {0.5, 2} (the [UNVERIFIED] "weighted term" variant A).
Adam 1e-3, batch 100. Evaluation on the 300 test digits and their attributes:
  * fidelity: an independent logistic-regression classifier (`gvlab.probe`) trained on real training digits
    labels prior samples (decoder means at z ~ p(z|a)); accuracy against the requested class, and agreement of the
    two attributes recomputed from the samples;
  * diversity: mean pairwise L2 distance among 10 samples per condition (`gvlab.evals.metrics`), next to that of
    real test digits sharing an attribute vector;
  * best-of-10: the smallest squared error among 10 samples, vs the deterministic model's error;
  * conditional log-likelihood log p(x|a) in nats per image of the dequantised data, by importance sampling with
    the recognition network q(z|x, a) as proposal (Sohn's estimator: official `matlab/dcgm/dcgm_ll.m` lines
    278-304), at S = 10, 100, 1000, 5000 (nested prefixes of one draw, `gvlab.evals.likelihood`) to show that it
    has converged; the claim reads S = 5000. Beside it, the same at the same S with prior samples z ~ p(z|a) as
    proposal (the estimator the first design used at S = 100; it has not converged at any of these S).

Variants with alpha = 1 differ only in the KL weight w: they are the members of one fit (`Spec.args`, w per
member); the hybrid changes the objective's form and is a fit of its own.

Command:  gvlab reproduce cvae/attributes --profile quick
Shows:    claims 1-3 (fidelity, diversity, best-of-10 vs the deterministic model) and claim 4 (Sohn's hybrid beats
          the plain CVAE on the conditional log-likelihood, converged importance-sampling estimate); the same
          metrics for every variant, the classifier's accuracy on real test digits, the estimates at every S
          (`cll_s{S}_{variant}`, `cll_prior_s{S}_{variant}`, `hybrid_cll_margin_s{S}`; the first design's
          measurement is kept as `hybrid_cll_prior_s100_margin`), and figures of samples per attribute and of both
          estimators against S. Measured values in report.json / report.md.
Runtime:  quick (3 seeds x 3000 steps) ~11 min, full (5 seeds) ~11 min on 2 CPU cores shared with other jobs (load
          ~12; much less on idle cores); most of it the 2 x 5000 likelihood samples per test image and run.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Method, Spec, TrainConfig, experiment, probe
from gvlab.data import attributes as attr_data
from gvlab.data import digits as digits_data
from gvlab.data import epoch_batches
from gvlab.evals import likelihood, metrics
from gvlab.models import vae
from gvlab.nn import MLP
from gvlab.report.figures import image_grid

VARIANTS = {"cvae": (1.0, 1.0), "hybrid": (0.5, 1.0), "kl0.5": (1.0, 0.5), "kl2": (1.0, 2.0)}  # (alpha, w)
PIXELS = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`cvae/attributes` settings.

    Attributes:
        model: the CVAE architecture (alpha and beta are set per variant).
        variants: which of `VARIANTS` to train besides the deterministic baseline.
        cll_samples: the S at which both conditional log-likelihood estimates are reported (nested prefixes of
            one draw of max(cll_samples)); the claim reads the largest.
        cll_chunk: samples drawn at a time (memory), a divisor of max(cll_samples).
        num_samples: samples per condition for diversity and best-of-K.
        train: optimisation settings of every fit.
    """

    model: vae.Config = vae.Config(latent_dim=8, hidden=(128,), likelihood="gaussian", prior="learned")
    variants: tuple[str, ...] = ("cvae", "hybrid", "kl0.5", "kl2")
    cll_samples: tuple[int, ...] = (10, 100, 1000, 5000)
    cll_chunk: int = 250
    num_samples: int = 10
    train: TrainConfig = TrainConfig(steps=3000, batch_size=100, lr=1e-3, num_seeds=5, log_every=100)


def _deterministic_net(hidden: tuple[int, ...]) -> MLP:
    return MLP(tuple(hidden) + (PIXELS,), "relu")


def deterministic(hidden: tuple[int, ...]) -> Method:
    """MLP a -> x trained by mean squared error: the baseline that can give one output per condition."""
    net = _deterministic_net(hidden)

    def init(key, batch):
        return net.init(key, batch["c"][:1])

    def loss(params, batch, key, step):
        pred = net.apply(params, batch["c"]).reshape(batch["x"].shape)
        mse = jnp.mean(jnp.sum(jnp.square(pred - batch["x"]), axis=(1, 2)))
        return mse, {"det/mse": mse}

    return Method(init=init, loss=loss)


def _data():
    counts, labels = digits_data.split_counts("train")
    test_counts, test_labels = digits_data.split_counts("test")
    medians = attr_data.thresholds()
    train = {"x": jnp.asarray(counts, jnp.float32), "c": jnp.asarray(attr_data.attributes(counts, labels, *medians))}
    test = {"x": digits_data.dequantize(jnp.asarray(test_counts, jnp.float32), jax.random.key(12345)),
            "c": jnp.asarray(attr_data.attributes(test_counts, test_labels, *medians)), "labels": test_labels}
    return train, test, medians


def _source(train: dict, batch_size: int):
    return epoch_batches(train, batch_size,
                         transform=lambda b, key: {"x": digits_data.dequantize(b["x"], key), "c": b["c"]})


def _classifier() -> dict:
    """Logistic regression on real training digits at the decoder's scale ((c + 1/2) / 17), and its test accuracy."""
    counts, labels = digits_data.split_counts("train")
    test_counts, test_labels = digits_data.split_counts("test")
    scale = lambda c: jnp.asarray((c.reshape(len(c), -1) + 0.5) / digits_data.LEVELS, jnp.float32)  # noqa: E731
    clf = probe.fit_logistic(scale(counts), jnp.asarray(labels), num_classes=10)
    return {"probe": clf._asdict(), "accuracy": probe.accuracy(clf, scale(test_counts), jnp.asarray(test_labels))}


def _real_diversity(test: dict) -> float:
    """Mean pairwise L2 among real test digits with the same attribute vector (groups of two or more)."""
    x = np.asarray(test["x"]).reshape(len(test["labels"]), -1)
    keys = [tuple(row) for row in np.asarray(test["c"])]
    values = []
    for group in set(keys):
        idx = [i for i, k in enumerate(keys) if k == group]
        if len(idx) > 1:
            d = np.sqrt(((x[idx][:, None] - x[idx][None]) ** 2).sum(-1))
            values.append(d[np.triu_indices(len(idx), 1)].mean())
    return float(np.mean(values))


def _recount(images: np.ndarray) -> np.ndarray:
    """Generated means on the dequantised scale back to grey levels 0..16 for the attribute rules."""
    return np.clip(np.rint(images * digits_data.LEVELS - 0.5), 0, digits_data.LEVELS - 1)


def deterministic_error(params, test: dict, key, *, hidden: tuple[int, ...]) -> dict[str, jax.Array]:
    """One run's squared error of the deterministic model on the test digits (summed over pixels, mean over N)."""
    pred = _deterministic_net(hidden).apply(params, test["c"]).reshape(test["x"].shape)
    return {"error": jnp.mean(jnp.sum(jnp.square(pred - test["x"]), axis=(1, 2)))}


def cvae_scores(params, test: dict, key, *, model: vae.Config, cll_samples: tuple[int, ...], cll_chunk: int,
                num_samples: int):
    """One run: CLL at each S of `cll_samples` (`[C]`, recognition and prior proposals), best-of-K error, diversity,
    and one sample per condition."""
    net = vae.make_model(model, digits_data.IMAGE_SHAPE, test["c"].shape[1])
    x, c = test["x"], test["c"]
    k_is, k_prior, k_gen = jax.random.split(key, 3)
    num = max(cll_samples)
    log_w = likelihood.sampled_log_weights(lambda k, n: net.log_weights(params, x, k, n, c), k_is, num, cll_chunk)
    prior_w = likelihood.sampled_log_weights(lambda k, n: net.prior_log_weights(params, x, k, n, c), k_prior, num,
                                             cll_chunk)
    cll = jnp.mean(likelihood.iwae_curve(log_w, cll_samples), axis=1)
    cll_prior = jnp.mean(likelihood.iwae_curve(prior_w, cll_samples), axis=1)
    samples = jax.vmap(lambda k: net.generate(params, k, c))(jax.random.split(k_gen, num_samples))
    best = jnp.mean(jnp.min(jnp.sum(jnp.square(samples - x[None]), axis=(2, 3)), axis=0))
    diversity = jnp.mean(metrics.mean_pairwise_distance(samples))  # over pairs of the K samples, per condition
    return {"cll": cll, "cll_prior": cll_prior, "best_of_k": best, "diversity": diversity, "first_sample": samples[0]}


def cvae_spec(cfg: Config, source, condition_dim: int, alpha: float = 1.0, weight: float = 1.0,
              args: dict | None = None) -> Spec:
    """The CVAE with hybrid weight `alpha` and KL weight `weight` (or one per member: `args={"beta": [M]}`)."""
    model_cfg = dataclasses.replace(cfg.model, alpha=alpha, beta=weight)
    return Spec(method=vae.make(model_cfg, digits_data.IMAGE_SHAPE, condition_dim),
                optimizer=optax.adam(cfg.train.lr), data=source, args=args)



@experiment(
    "cvae/attributes",
    config=Config(),
    smoke={"model.hidden": (16,), "variants": ("cvae", "hybrid"), "cll_samples": (2, 4), "cll_chunk": 2,
           "num_samples": 3,
           "train.steps": 20, "train.num_seeds": 2, "train.log_every": 10},
    quick={"train.num_seeds": 3},
    claims=[
        Claim(statement="CVAE prior samples are classified as the requested digit >= 85% of the time by an "
                        "independent classifier trained on real digits (mean over seeds)",
              metric="fidelity_cvae", op=">=", threshold=0.85, reduce="mean",
              source="notes' mini-experiment (Debbagh 2023: controlled generation from attributes)"),
        Claim(statement="CVAE samples are diverse: per condition they vary at least a tenth as much as real test "
                        "digits sharing the attribute vector (the deterministic model's diversity is 0)",
              metric="diversity_ratio_cvae", op=">=", threshold=0.1, reduce="mean",
              source="Sohn et al. 2015, Sec. 4 (one-to-many mapping); notes' mini-experiment"),
        Claim(statement="Best-of-10 squared error of CVAE samples is below the deterministic model's error",
              metric="best_of_k_minus_deterministic", op="<", threshold=0.0, reduce="mean",
              source="Sohn et al. 2015, Table 1 protocol; notes' mini-experiment"),
        Claim(statement="The hybrid objective (alpha = 0.5) gives a higher conditional log-likelihood than the "
                        "plain CVAE bound (margin in nats per image), estimated by importance sampling with the "
                        "recognition network as proposal at S = 5000 (converged: see the estimates at S = 10-5000)",
              metric="hybrid_cll_margin", op=">", threshold=0.0, reduce="mean",
              source="Sohn et al. 2015, Sec. 3.3 and Table 2 (hybrid objective); estimator as the official "
                     "matlab/dcgm/dcgm_ll.m, lines 278-304"),
    ],
)
def attributes(cfg: Config, run) -> dict:
    """Deterministic baseline and CVAE variants conditioned on digit attributes; fidelity, diversity, CLL."""
    unknown = set(cfg.variants) - set(VARIANTS)
    if unknown or "cvae" not in cfg.variants:
        raise ValueError(f"variants must include 'cvae' and come from {sorted(VARIANTS)}, got {cfg.variants}")
    train, test, medians = _data()
    condition_dim, test_xc = train["c"].shape[1], {"x": test["x"], "c": test["c"]}
    classifier = run.artifact("classifier", _classifier)
    clf, clf_accuracy = probe.LogisticProbe(**classifier["probe"]), float(classifier["accuracy"])
    run.log(f"independent classifier: {clf_accuracy:.3f} accuracy on real test digits")
    real_diversity = _real_diversity(test)

    source = _source(train, cfg.train.batch_size)
    det = run.fit(Spec(method=deterministic(cfg.model.hidden), optimizer=optax.adam(cfg.train.lr), data=source),
                  name="deterministic")
    det_mse = run.evaluate("deterministic", functools.partial(deterministic_error, hidden=cfg.model.hidden), det,
                           test_xc)["error"]

    # Variants that differ only in the KL weight are members of one fit; the hybrid's objective has another form.
    weighted = [name for name in cfg.variants if VARIANTS[name][0] == 1.0]
    weights = {"beta": jnp.asarray([VARIANTS[name][1] for name in weighted], jnp.float32)}
    fits = {"kl-weights": run.fit(cvae_spec(cfg, source, condition_dim, args=weights), name="kl-weights")}
    for name in cfg.variants:
        if name not in weighted:
            fits[name] = run.fit(cvae_spec(cfg, source, condition_dim, *VARIANTS[name]), name=name)
    evaluator = functools.partial(cvae_scores, model=cfg.model, cll_samples=tuple(cfg.cll_samples),
                                  cll_chunk=cfg.cll_chunk, num_samples=cfg.num_samples)
    scored = {name: run.evaluate(f"scores-{name}", evaluator, fit, test_xc, key=run.key("eval"), mode="sequential")
              for name, fit in fits.items()}

    out: dict[str, np.ndarray] = {"deterministic_error": det_mse, "classifier_accuracy": np.array(clf_accuracy),
                                  "real_diversity": np.array(real_diversity)}
    for name in cfg.variants:
        fit_name, member = ("kl-weights", weighted.index(name)) if name in weighted else (name, 0)
        runs = fits[fit_name].runs_of(member)
        scores = {metric: values[runs] for metric, values in scored[fit_name].items()}
        first = scores.pop("first_sample")  # [seeds, N, 8, 8]: one sample per condition
        fidelity = np.array([float(probe.accuracy(clf, jnp.asarray(s.reshape(len(s), -1)), jnp.asarray(test["labels"])))
                             for s in first])
        attrs = [attr_data.attributes(_recount(s), test["labels"], *medians)[:, 10:] for s in first]
        agreement = np.array([np.mean(a == np.asarray(test["c"])[:, 10:]) for a in attrs])
        for metric, values in scores.items():
            if metric in ("cll", "cll_prior"):  # [seeds, C]: one entry per S; `cll_{name}` is the largest S
                out.update({f"{metric}_s{s}_{name}": values[:, j] for j, s in enumerate(cfg.cll_samples)})
                values = values[:, -1]
            out[f"{metric}_{name}"] = values
        out[f"fidelity_{name}"] = fidelity
        out[f"attribute_agreement_{name}"] = agreement
        out[f"diversity_ratio_{name}"] = scores["diversity"] / real_diversity
        run.log(f"{name}: fidelity {fidelity.mean():.3f}, attribute agreement {agreement.mean():.3f}, diversity "
                f"{scores['diversity'].mean():.3f} (real {real_diversity:.3f}), best-of-{cfg.num_samples} "
                f"{scores['best_of_k'].mean():.3f} (deterministic {det_mse.mean():.3f}), CLL "
                f"{scores['cll'].mean():.2f}, from prior samples {scores['cll_prior'].mean():.2f}")
    out["best_of_k_minus_deterministic"] = out["best_of_k_cvae"] - det_mse
    if "hybrid" in cfg.variants:
        out["hybrid_cll_margin"] = out["cll_hybrid"] - out["cll_cvae"]
        for s in cfg.cll_samples:
            out[f"hybrid_cll_margin_s{s}"] = out[f"cll_s{s}_hybrid"] - out[f"cll_s{s}_cvae"]
            out[f"hybrid_cll_prior_margin_s{s}"] = out[f"cll_prior_s{s}_hybrid"] - out[f"cll_prior_s{s}_cvae"]
        if 100 in cfg.cll_samples:  # the first design's measurement (prior samples, S = 100), kept for comparison
            out["hybrid_cll_prior_s100_margin"] = out["hybrid_cll_prior_margin_s100"]
    _figures(cfg, run, fits["kl-weights"].params_of(fits["kl-weights"].runs_of(weighted.index("cvae"))[0]), out)
    return out


def _figures(cfg: Config, run, params, out: dict) -> None:
    import matplotlib.pyplot as plt

    combos = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    conds = jnp.asarray([np.concatenate([np.eye(10)[d], combo]) for d in range(10) for combo in combos
                         for _ in range(2)], jnp.float32)
    net, key = vae.make_model(cfg.model, digits_data.IMAGE_SHAPE, conds.shape[1]), run.key("grid")
    images = run.artifact("grid-samples", lambda: {"images": net.generate(params, key, conds)},
                          inputs=(params, key, conds, repr(cfg.model)))["images"].reshape(10, 8, 8, 8)
    labels = [f"{'heavy' if h else 'light'}/{'wide' if w else 'narrow'}" for h, w in combos for _ in range(2)]
    run.figure("samples_per_attribute", image_grid(images, row_labels=[str(d) for d in range(10)],
                                                   title="CVAE prior samples (seed 0): columns " + ", ".join(
                                                       dict.fromkeys(labels))))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    counts = np.asarray(cfg.cll_samples)
    for i, name in enumerate(cfg.variants):
        for metric, style, label in (("cll", "-o", "q(z|x,a)"), ("cll_prior", "--s", "prior p(z|a)")):
            values = np.stack([out[f"{metric}_s{s}_{name}"] for s in counts], axis=1)  # [seeds, C]
            ax.errorbar(counts, values.mean(0), yerr=values.std(0), fmt=style, color=f"C{i}", ms=3, capsize=2,
                        label=f"{name}, {label}")
    ax.set_xscale("log")
    ax.set(xlabel="importance samples S", ylabel="log p(x|a) (nats / image)",
           title="conditional log-likelihood estimates vs S (mean, std over seeds)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    run.figure("conditional_log_likelihood", fig)
