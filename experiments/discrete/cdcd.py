"""`discrete/cdcd`: class-conditional discrete diffusion on quantised digits, with and without CDCD's contrastive
term (Zhu et al. 2023, *Discrete Contrastive Diffusion*, arXiv 2206.07771; issue 18).

Setting (fixed before any run; `gvlab.diffusion.discrete`): scikit-learn's 8x8 digits quantised to K = 4 levels
(count // 4, bins [0, 4, 8, 12, 17)), 64 tokens plus [MASK]; VQ-Diffusion's mask-and-replace path (official
`alpha_schedule`); an x0-parameterised class-conditional MLP (`gvlab.nn.TimeMLP` on one-hot x_t, t / T and the
class); loss T * L_{t-1} at a uniform t (the official `vb_stochastic` loss divided by p_t = 1 / T) plus the adaptive
auxiliary x0 loss (weight 1e-3, official ImageNet config). CDCD subtracts lambda T (intra + inter) with step-wise
terms (`contrastive_term(..., "step")`, the positive's x_t), 4 intra negatives (the 8 rows permuted, official
`neg_sampling(x, 'random')`) and 4 inter negatives (training digits of other classes). Members of one fit: lambda in
(0, *lambdas) at T = 10 (`Spec.args`); a second fit is vanilla at T = 20. Adam, uniform random batches.

Correspondence: a logistic classifier (`gvlab.probe`) on one-hot tokens of the real quantised training digits labels
50 samples per class; its accuracy on the real quantised test digits is the ceiling. lambda is chosen on one set of
samples (validation key) and every number is read on another (test key). Quality: Frechet distance to the real test
digits in the PCA-16 space of the real training digits.

Claims (issue 18, fixed before any run): acc(CDCD, T=10) - acc(vanilla, T=10) >= -0.01 (seed mean), and the CDCD
loss is finite at every logged step (every seed). Reported, not gated (paper direction): the same difference > 0,
acc(CDCD, T=10) - acc(vanilla, T=20) (>= -0.02 would match the "fewer steps" claim), FD(CDCD) / FD(V10), lambda sweep.

Command:  gvlab reproduce discrete/cdcd --profile quick
Shows:    accuracies per variant and seed, the classifier ceiling, the lambda sweep, FD; figures: the correspondence
          curve during training, samples per class. Measured values are in report.json, not here.
Runtime:  quick (1000 steps, batch 64, 3 seeds) ~5 min, full (3000 steps, batch 128) ~25 min on 2 loaded CPU
          cores; the step-wise negatives dominate a step's cost (the vanilla T = 20 fit is ~10x faster per step).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.data import digits as digits_data
from gvlab.diffusion import discrete
from gvlab.nn import TimeMLP
from gvlab.probe import fit_logistic, logits as probe_logits
from gvlab.types import DataSource, Method

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`discrete/cdcd` settings.

    Attributes:
        levels: K, grey levels of the tokens (count // (17 / K), capped at K - 1).
        steps_short, steps_long: T of CDCD / vanilla, and of the longer vanilla baseline (0: skip it).
        lambdas: contrastive weights swept as members of the T = steps_short fit (lambda 0, vanilla, is added).
        mode: "step" or "sample" (`gvlab.diffusion.discrete.contrastive_term`).
        intra_negatives, inter_negatives, chunks: negatives per example and the chunks the intra ones permute.
        aux_weight: weight of VQ-Diffusion's auxiliary x0 loss.
        hidden, class_features: the denoiser MLP.
        samples_per_class, curve_samples_per_class: generated digits per class for the final and the curve scores.
        pca_dim: dimension of the Frechet-distance features.
        train: steps, batch, lr, seeds.
    """

    levels: int = 4
    steps_short: int = 10
    steps_long: int = 20
    lambdas: tuple[float, ...] = (5e-5, 1e-3, 1e-2)
    mode: str = "step"
    intra_negatives: int = 4
    inter_negatives: int = 4
    chunks: int = 8
    aux_weight: float = 1e-3
    hidden: tuple[int, ...] = (256, 256)
    class_features: int = 64
    samples_per_class: int = 50
    curve_samples_per_class: int = 10
    pca_dim: int = 16
    train: TrainConfig = TrainConfig(steps=3000, batch_size=128, lr=1e-3, num_seeds=3, log_every=100,
                                     eval_every=250)


def tokens(split: str, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantised digits `int32 [N, 64]` in {0..levels-1} and labels."""
    counts, labels = digits_data.split_counts(split)
    x = np.minimum(counts.astype(np.int32) * levels // digits_data.LEVELS, levels - 1)
    return x.reshape(len(x), -1), labels.astype(np.int32)


def make_model(cfg: Config, num_steps: int):
    """`(net, x0_logits(params, x_t [B, 64], t [B], c [B]) -> [B, 64, K])`."""
    net = TimeMLP(out_features=64 * cfg.levels, hidden=cfg.hidden, num_classes=NUM_CLASSES,
                  class_features=cfg.class_features)

    def x0_logits(params, x_t, t, c):
        features = jax.nn.one_hot(x_t, cfg.levels + 1).reshape(x_t.shape[0], -1)
        out = net.apply(params, features, t.astype(jnp.float32) / num_steps, c)
        return out.reshape(x_t.shape + (cfg.levels,))

    return net, x0_logits


def make_spec(cfg: Config, num_steps: int, lambdas: tuple[float, ...], train_x, train_y, evals) -> Spec:
    """The diffusion loss with the CDCD term weighted by `args["lam"]` (one member per lambda)."""
    path = discrete.MaskAndReplace(cfg.levels, num_steps)
    net, x0_logits = make_model(cfg, num_steps)

    def batch(arrays, key, step):
        del step
        index_key, intra_key, inter_key = jax.random.split(key, 3)
        index = jax.random.randint(index_key, (cfg.train.batch_size,), 0, arrays["x"].shape[0])
        x, y = arrays["x"][index], arrays["y"][index]
        count = {"intra": cfg.intra_negatives, "inter": cfg.inter_negatives} if lambdas else {"intra": 0, "inter": 0}
        intra = jax.vmap(lambda k: discrete.shuffle_chunks(k, x, cfg.chunks))(
            jax.random.split(intra_key, count["intra"]))
        inter = arrays["x"][discrete.other_class_negatives(inter_key, y, arrays["y"], count["inter"], NUM_CLASSES)]
        # batch axis first: the fit splits a batch's leading axis over devices
        return {"x": x, "y": y, "intra": jnp.swapaxes(intra, 0, 1), "inter": jnp.swapaxes(inter, 0, 1)}

    def init(key, example):
        return net.init(key, jnp.zeros((1, 64 * (cfg.levels + 1))), jnp.zeros((1,)), example["y"][:1])

    def loss(params, example, key, step, args):
        x0, y = example["x"], example["y"]
        time_key, noise_key = jax.random.split(key)
        t = jax.random.randint(time_key, y.shape, 1, num_steps + 1)
        x_t = path.marginal(noise_key, x0, t)
        logits = x0_logits(params, x_t, t, y)
        vb = path.loss(x0, x_t, t, logits)
        aux = discrete.auxiliary_term(path, x0, t, logits)
        contrast = sum(discrete.contrastive_term(path, x_t, t, logits, jnp.swapaxes(example[name], 0, 1), cfg.mode)
                       for name in ("intra", "inter") if example[name].shape[1] > 0)
        total = num_steps * jnp.mean(vb + cfg.aux_weight * aux - args["lam"] * contrast)
        bound = num_steps * jnp.mean(vb) + jnp.mean(discrete.prior_term(path, x0))
        return total, {"loss/bound_nats": bound, "loss/aux": jnp.mean(aux), "loss/contrastive": jnp.mean(contrast)}

    data = DataSource(arrays={"x": jnp.asarray(train_x), "y": jnp.asarray(train_y)}, batch=batch)
    return Spec(Method(init=init, loss=loss), optax.adam(cfg.train.lr), data, evals=evals,
                args={"lam": jnp.asarray((0.0, *lambdas), jnp.float32)})


def generate(cfg: Config, num_steps: int, params, key, per_class: int):
    """`per_class` samples of every class from the ancestral sampler: `(tokens [10 n, 64], labels [10 n])`."""
    path = discrete.MaskAndReplace(cfg.levels, num_steps)
    _, x0_logits = make_model(cfg, num_steps)
    labels = jnp.repeat(jnp.arange(NUM_CLASSES), per_class)
    x = discrete.ancestral_sample(path, lambda x_t, t: x0_logits(params, x_t, t, labels), key, (labels.shape[0], 64))
    return x, labels


def features(cfg: Config, x):
    return jax.nn.one_hot(x, cfg.levels).reshape(x.shape[0], -1)


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) between two sample sets' Gaussians."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = jnp.cov(a, rowvar=False), jnp.cov(b, rowvar=False)

    def sqrtm(m):
        w, v = jnp.linalg.eigh(m)
        return (v * jnp.sqrt(jnp.clip(w, 0.0))[None]) @ v.T

    root = sqrtm(cov_a)
    return jnp.sum((mu_a - mu_b) ** 2) + jnp.trace(cov_a + cov_b - 2.0 * sqrtm(root @ cov_b @ root))


def correspondence(params, data, key, *, cfg: Config, num_steps: int):
    """One run's classifier accuracy on validation and test samples, and the test samples' Frechet distance."""
    out = {}
    for name, sub_key in zip(("val", "test"), jax.random.split(key)):
        x, labels = generate(cfg, num_steps, params, sub_key, cfg.samples_per_class)
        predicted = jnp.argmax(probe_logits(data["probe"], features(cfg, x)), -1)
        out[f"acc_{name}"] = jnp.mean(predicted == labels)
    out["first_per_class"] = x[:: cfg.samples_per_class]  # one test sample per class, for the figure
    project = lambda z: (z / (cfg.levels - 1) - data["pca_mean"][None]) @ data["pca_basis"]  # noqa: E731
    out["fd_test"] = frechet_distance(project(x), project(data["test_x"]))
    return out


def fit_variant(cfg: Config, run, num_steps: int, lambdas, train_x, train_y, aux: dict, name: str):
    """Train one fit (members: lambda 0 and `lambdas`) and score every run (`correspondence`, cached)."""
    def curve(params, key):
        x, labels = generate(cfg, num_steps, params, key, cfg.curve_samples_per_class)
        return {"acc": jnp.mean(jnp.argmax(probe_logits(aux["probe"], features(cfg, x)), -1) == labels)}

    spec = make_spec(cfg, num_steps, lambdas, train_x, train_y, {"corr": curve})
    result = run.fit(spec, name=name)
    evaluator = functools.update_wrapper(functools.partial(correspondence, cfg=cfg, num_steps=num_steps),
                                         correspondence)
    scores = run.evaluate(f"correspondence-{name}", evaluator, result, aux, key=run.key("samples"),
                          extra=repr((cfg, num_steps)))
    per_member = {m: {k: np.asarray(v)[result.runs_of(m)] for k, v in scores.items()} for m in range(len(lambdas) + 1)}
    return result, per_member


@experiment(
    "discrete/cdcd",
    config=Config(),
    smoke={"steps_short": 3, "steps_long": 0, "lambdas": (1e-3,), "intra_negatives": 2, "inter_negatives": 2,
           "hidden": (16,), "class_features": 8, "samples_per_class": 3, "curve_samples_per_class": 1,
           "pca_dim": 4, "train.steps": 4, "train.batch_size": 16, "train.num_seeds": 1, "train.log_every": 2,
           "train.eval_every": 2},
    quick={"train.steps": 1000, "train.batch_size": 64, "train.eval_every": 100},
    claims=[
        Claim(statement="CDCD at T = 10 is not worse than vanilla at T = 10 in classifier-measured correspondence: "
                        "acc(C10) - acc(V10) >= -0.01 (lambda chosen on validation samples)",
              metric="cdcd_minus_vanilla_t10", op=">=", threshold=-0.01,
              source="issue 18; notes sec. 1(d) gate; Zhu et al. 2023, abstract (better correspondence)"),
        Claim(statement="The CDCD loss stays finite at every logged step (chosen lambda, every seed)",
              metric="cdcd_loss_finite", op=">=", threshold=1.0, reduce="all",
              source="issue 18; notes sec. 1(a) caveat (the subtracted term is unbounded below)"),
    ],
)
def cdcd_digits(cfg: Config, run) -> dict:
    """Vanilla vs CDCD discrete diffusion (T = 10) and vanilla T = 20 on quantised digits."""
    train_x, train_y = tokens("train", cfg.levels)
    test_x, test_y = tokens("test", cfg.levels)

    def classifier():
        probe = fit_logistic(features(cfg, jnp.asarray(train_x)), jnp.asarray(train_y), NUM_CLASSES)
        real = train_x / (cfg.levels - 1)
        _, _, vt = np.linalg.svd(real - real.mean(0), full_matrices=False)
        return {"probe": probe._asdict(), "pca_mean": real.mean(0), "pca_basis": vt[: cfg.pca_dim].T}

    stats = run.artifact("classifier", classifier, inputs=(train_x, train_y, cfg.levels, cfg.pca_dim))
    from gvlab.probe import LogisticProbe
    aux = {"probe": LogisticProbe(**stats["probe"]), "pca_mean": jnp.asarray(stats["pca_mean"], jnp.float32),
           "pca_basis": jnp.asarray(stats["pca_basis"], jnp.float32), "test_x": jnp.asarray(test_x, jnp.float32)}
    ceiling = float(jnp.mean(jnp.argmax(probe_logits(aux["probe"], features(cfg, jnp.asarray(test_x))), -1)
                             == test_y))
    train_accuracy = float(jnp.mean(jnp.argmax(probe_logits(aux["probe"], features(cfg, jnp.asarray(train_x))), -1)
                                    == train_y))
    project = lambda z: (z / (cfg.levels - 1) - aux["pca_mean"][None]) @ aux["pca_basis"]  # noqa: E731
    real_fd = float(frechet_distance(project(jnp.asarray(train_x[:NUM_CLASSES * cfg.samples_per_class],
                                                         jnp.float32)), project(aux["test_x"])))

    short, scores = fit_variant(cfg, run, cfg.steps_short, cfg.lambdas, train_x, train_y, aux, "t_short")
    results = {"classifier_ceiling": ceiling, "classifier_train_accuracy": train_accuracy,
               "fd_real_train_vs_test": real_fd}
    for m, lam in enumerate((0.0, *cfg.lambdas)):
        label = "vanilla_t10" if m == 0 else f"cdcd_t10_lam{lam:g}"
        for metric in ("acc_val", "acc_test", "fd_test"):
            results[f"{label}/{metric}"] = scores[m][metric]
    val = [np.mean(scores[m]["acc_val"]) for m in range(1, len(cfg.lambdas) + 1)]
    chosen = 1 + int(np.argmax(val))
    results["chosen_lambda"] = cfg.lambdas[chosen - 1]
    results["cdcd_minus_vanilla_t10"] = scores[chosen]["acc_test"] - scores[0]["acc_test"]
    results["fd_ratio_cdcd_over_vanilla_t10"] = scores[chosen]["fd_test"] / scores[0]["fd_test"]
    _, loss = short.history.column("loss")
    loss = loss.reshape(loss.shape[0], -1)[:, short.runs_of(chosen)]
    results["cdcd_loss_finite"] = np.all(np.isfinite(loss), axis=0).astype(np.float32)
    results["cdcd_loss_final"] = loss[-1]
    if cfg.steps_long:
        _, long_scores = fit_variant(cfg, run, cfg.steps_long, (), train_x, train_y, aux, "t_long")
        results["vanilla_t20/acc_test"] = long_scores[0]["acc_test"]
        results["vanilla_t20/fd_test"] = long_scores[0]["fd_test"]
        results["cdcd_minus_vanilla_t20"] = scores[chosen]["acc_test"] - long_scores[0]["acc_test"]
    run.log(f"ceiling {ceiling:.3f}; V10 {np.mean(scores[0]['acc_test']):.3f}, C10 (lambda {cfg.lambdas[chosen - 1]:g}) "
            f"{np.mean(scores[chosen]['acc_test']):.3f}")
    _figures(cfg, run, short, chosen, np.stack([scores[m]["first_per_class"][0] for m in (0, chosen)]))
    return results


def _figures(cfg: Config, run, short, chosen: int, shown: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    from gvlab.report.figures import image_grid

    steps, acc = short.history.column("eval/corr/acc")
    acc = acc.reshape(acc.shape[0], -1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m, lam in enumerate((0.0, *cfg.lambdas)):
        curve = acc[:, short.runs_of(m)]
        ax.plot(steps, curve.mean(1), marker="o", ms=3, label="vanilla" if m == 0 else f"CDCD lambda={lam:g}")
        ax.fill_between(steps, curve.min(1), curve.max(1), alpha=0.15)
    ax.set(xlabel="training step", ylabel="classifier accuracy of samples",
           title=f"correspondence during training (T = {cfg.steps_short})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("correspondence_curve", fig)
    run.figure("samples", image_grid(shown.reshape(2, NUM_CLASSES, 8, 8) / (cfg.levels - 1),
                                     row_labels=["vanilla", "CDCD"], title="one test sample per class (seed 0)"))
