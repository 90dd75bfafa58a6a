"""`adversarial/latent_quantization`: a quantised-latent VAE filter in front of a digits classifier (Kyatham et al.
2019, "Variational Inference with Latent Space Quantization for Adversarial Resilience", arXiv 1903.09940; issue
17). [UNVERIFIED] method reconstruction from the abstract: no official code is known (notes section 3).

Setting (fixed before the claims' runs; notes 3(d)): digits c / 16 in [0, 1] (`gvlab.data.digits`, 1497 train,
300 test). Classifier C: MLP 64 -> 128 -> 10 (the undefended model: its clean accuracy is the ceiling). Filters,
trained on clean training images only (`gvlab.defenses.lsq`): latent 8, MLP 64 -> 128 -> (mu, log sigma^2) with a
spectrally normalised encoder (power-iteration vectors in the state slot), mu = tanh(K h), decoder mirrored;
members of one fit: LSQ with L = 5 (the claims' filter) and L = 3, and the continuous VAE (no quantisation).
Feature squeezing (3-bit depth, Xu et al. 2018) beside them. Attacks (`gvlab.attacks`, L-infinity, inputs kept in
[0, 1], eps in {0.1, 0.2, 0.3}): FGSM and PGD-10 (step eps/4, random start) on C alone (gray-box: the filter is
unknown to the attacker), and white-box BPDA through the filter with PGD-20: the identity backward for the whole
filter (Athalye et al. 2018), and the straight-through estimator at Q only (exact encoder and decoder gradients);
an example counts as robust only if it survives both.

Claims (issue 17, fixed before any run; mean over seeds): clean accuracy of C o LSQ >= 0.90 x that of C; gray-box
PGD at eps = 0.2: accuracy(C o LSQ) - accuracy(C) >= 0.30; accuracy(C o LSQ) >= accuracy(C o continuous VAE) - 0.02
under the same attack. BPDA white-box numbers are reported, not claimed: a large drop is the expected, known outcome
for quantisation defences (obfuscated gradients, Athalye et al. 2018), and the report shows it.

Command:  gvlab reproduce adversarial/latent_quantization --profile quick
Shows:    clean and attacked accuracies of C, C o LSQ(L = 5, 3), C o VAE and C o squeeze per eps and attack (seeds),
          the three claims, the white-box drop; figures: filter training curves with the claim's metrics over
          steps, accuracy against eps, example images. Measured values: report.json / report.md.
Runtime:  quick (3 seeds, 2000 filter steps) about 1 minute, full (5 seeds, 3000 steps) about 1.5 minutes on 2
          shared CPU cores; notes and measured runs: experiments/adversarial/latent_quantization.md.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.attacks import bpda, fgsm, pgd
from gvlab.data import digits as digits_data
from gvlab.data import epoch_batches
from gvlab.defenses import lsq, make_classifier, squeeze_bits
from gvlab.errors import ConfigError
from gvlab.report.figures import image_grid

IMAGE = digits_data.IMAGE_SHAPE
BOUNDS = (0.0, 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`adversarial/latent_quantization` settings.

    Attributes:
        filter: the filter VAE (latent, widths, KL weight beta, Lipschitz gain K).
        levels: LSQ levels as members of the filter fit; the first is the claims' L (the continuous VAE, L = 0, is
            always added).
        classifier_hidden: widths of C. classifier_steps: its training steps (same batch size, lr and seeds).
        squeeze_bits: bit depth of the feature-squeezing baseline.
        epsilons: L-infinity radii attacked. claim_eps: the radius the claims read (one of `epsilons`).
        attack_steps: PGD steps of the gray-box attack (step eps/4). bpda_steps: PGD steps of the white-box ones.
        train: the filter fit (steps, batch, lr, seeds, curve evaluation interval).
    """

    filter: lsq.Config = lsq.Config(latent_dim=8, hidden=(128,), beta=0.01, lipschitz=3.0)
    levels: tuple[int, ...] = (5, 3)
    classifier_hidden: tuple[int, ...] = (128,)
    classifier_steps: int = 1500
    squeeze_bits: int = 3
    epsilons: tuple[float, ...] = (0.1, 0.2, 0.3)
    claim_eps: float = 0.2
    attack_steps: int = 10
    bpda_steps: int = 20
    train: TrainConfig = TrainConfig(steps=3000, batch_size=64, lr=1e-3, num_seeds=5, log_every=100,
                                     eval_every=250)


def _members(cfg: Config) -> tuple[int, ...]:
    return tuple(cfg.levels) + (0,)


def _name(cfg: Config, levels: int) -> str:
    return "vae" if levels == 0 else "lsq" if levels == cfg.levels[0] else f"lsq_L{levels}"


def _accuracy(logits, y):
    return jnp.mean(jnp.argmax(logits, -1) == y)


def graybox_examples(params, data, key, *, cfg: Config) -> dict:
    """Gray-box PGD examples at `claim_eps` against one classifier run (the filter curve's attacked inputs)."""
    _, predict = make_classifier(cfg.classifier_hidden, 10)
    clf = functools.partial(predict, params)
    return {"x_adv": pgd(clf, data["x"], data["y"], key, cfg.claim_eps, cfg.claim_eps / 4, cfg.attack_steps,
                         bounds=BOUNDS)}


def defended_accuracies(params, data, key, *, cfg: Config) -> dict:
    """One run's accuracies: clean, and per eps [E] under FGSM and PGD on C (gray-box) and BPDA (white-box).

    `params`: {"classifier", "filter", "extra" (power-iteration vectors), "levels"} of one filter run and the
    classifier run of its seed. Outputs `<attack>_<defence>`, defence in none / filter / squeeze.
    """
    _, predict = make_classifier(cfg.classifier_hidden, 10)
    model = lsq.make_model(cfg.filter, IMAGE)
    x, y, levels = data["x"], data["y"], params["levels"]
    clf = functools.partial(predict, params["classifier"])
    lsq_filter = lambda v: model.filter(params["filter"], params["extra"], v, levels)  # noqa: E731
    squeeze = lambda v: squeeze_bits(v, cfg.squeeze_bits)  # noqa: E731

    def straight_through_at_q(v):  # exact encoder and decoder gradients, identity only at the quantiser
        q, _ = model.encode(params["filter"], params["extra"], v)
        return model.decode(params["filter"], model.latent(q.loc, levels)).astype(v.dtype)

    def correct(defence, v):
        return jnp.argmax(clf(defence(v)), -1) == y

    def per_eps(eps):
        def attack(fn, steps):
            return pgd(fn, x, y, key, eps, eps / 4, steps, bounds=BOUNDS)

        x_fgsm, x_pgd = fgsm(clf, x, y, None, eps, bounds=BOUNDS), attack(clf, cfg.attack_steps)
        identity = correct(lsq_filter, attack(lambda v: clf(bpda(lsq_filter)(v)), cfg.bpda_steps))
        straight = correct(lsq_filter, attack(lambda v: clf(straight_through_at_q(v)), cfg.bpda_steps))
        out = {f"{name}_{d}": jnp.mean(correct(fn, xa)) for name, xa in (("fgsm", x_fgsm), ("pgd", x_pgd))
               for d, fn in (("none", lambda v: v), ("filter", lsq_filter), ("squeeze", squeeze))}
        x_sq = attack(lambda v: clf(bpda(squeeze)(v)), cfg.bpda_steps)
        return {**out, "bpda_identity_filter": jnp.mean(identity), "bpda_st_filter": jnp.mean(straight),
                "bpda_filter": jnp.mean(identity & straight), "bpda_squeeze": jnp.mean(correct(squeeze, x_sq))}

    out = jax.lax.map(per_eps, jnp.asarray(cfg.epsilons, x.dtype))
    x_hat = lsq_filter(x)
    return {**out, "clean_none": _accuracy(clf(x), y), "clean_filter": _accuracy(clf(x_hat), y),
            "clean_squeeze": _accuracy(clf(squeeze(x)), y),
            "recon_filter": jnp.mean(jnp.sum(jnp.square(x_hat - x).reshape(x.shape[0], -1), 1))}


def filter_curve(params, key, *, cfg: Config, classifier, data) -> dict:
    """During the filter fit: clean and gray-box (claim eps) accuracy through the filter at every L of the fit
    (a run's own L is picked when plotting), with classifier seed 0 for every run; evals see parameters only, so
    the exact singular values stand in for the state's power-iteration vectors."""
    del key
    _, predict = make_classifier(cfg.classifier_hidden, 10)
    model = lsq.make_model(cfg.filter, IMAGE)
    out = {}
    for levels in _members(cfg):
        for name, x in (("clean", data["x"]), ("graybox", data["x_adv"])):
            out[f"{name}_L{levels}"] = _accuracy(predict(classifier, model.filter(params, None, x, levels)),
                                                 data["y"])
    return out


@experiment(
    "adversarial/latent_quantization",
    config=Config(),
    smoke={"filter.hidden": (16,), "filter.latent_dim": 4, "levels": (5,), "classifier_hidden": (16,),
           "classifier_steps": 10, "epsilons": (0.2,), "attack_steps": 2, "bpda_steps": 2, "train.steps": 10,
           "train.batch_size": 32, "train.num_seeds": 2, "train.log_every": 5, "train.eval_every": 0,
           "train.ckpt_every": 0},
    quick={"train.steps": 2000, "train.num_seeds": 3},
    claims=[
        Claim(statement="Clean accuracy through the LSQ filter (L = 5) is at least 0.90 x the undefended "
                        "classifier's (its ceiling)", metric="lsq/clean_ratio", op=">=", threshold=0.90,
              source="issue 17; notes sec. 3(d), first assertion"),
        Claim(statement="Gray-box PGD at eps = 0.2 (attacker knows C, not the filter): accuracy(C o LSQ) - "
                        "accuracy(C) >= 0.30", metric="lsq/graybox_gain", op=">=", threshold=0.30,
              source="issue 17; notes sec. 3(d), second assertion; Kyatham et al. 2019, abstract"),
        Claim(statement="Quantisation does not hurt: gray-box PGD eps = 0.2 accuracy(C o LSQ) - accuracy(C o "
                        "continuous VAE) >= -0.02", metric="lsq/minus_vae", op=">=", threshold=-0.02,
              source="issue 17; notes sec. 3(d), third assertion"),
    ],
)
def latent_quantization(cfg: Config, run) -> dict:
    """LSQ filter vs continuous VAE vs feature squeezing under gray-box and white-box (BPDA) attacks on digits."""
    if cfg.claim_eps not in cfg.epsilons or 0 in cfg.levels:
        raise ConfigError(f"claim_eps must be one of epsilons {cfg.epsilons}; levels must be >= 2 ({cfg.levels})")
    train, test = digits_data.digits("train", "unit"), digits_data.digits("test", "unit")
    clf_method, _ = make_classifier(cfg.classifier_hidden, 10)
    clf_train = dataclasses.replace(cfg.train, steps=cfg.classifier_steps, eval_every=0)
    classifier = run.fit(Spec(clf_method, optax.adam(cfg.train.lr), epoch_batches(train, cfg.train.batch_size)),
                         clf_train, name="classifier")
    examples = run.evaluate("graybox-examples", functools.partial(graybox_examples, cfg=cfg), classifier, test)

    members = _members(cfg)
    curve = functools.partial(filter_curve, cfg=cfg, classifier=classifier.params_of(0),
                              data={**test, "x_adv": examples["x_adv"][0]})
    spec = Spec(lsq.make(cfg.filter, IMAGE), optax.adam(cfg.train.lr),
                epoch_batches({"x": train["x"]}, cfg.train.batch_size),
                evals={"test": curve}, args={"levels": jnp.asarray(members, jnp.float32)})
    filters = run.fit(spec, name="filter")

    pair = np.asarray([classifier.seeds.index(s) for s in filters.seeds])  # each filter run's classifier run
    inputs = {"classifier": jax.tree.map(lambda a: a[pair], classifier.params), "filter": filters.params,
              "extra": filters.state.extra, "levels": filters.args["levels"]}
    scores = run.evaluate("defended-accuracies", functools.partial(defended_accuracies, cfg=cfg), inputs, test)

    e = cfg.epsilons.index(cfg.claim_eps)
    acc: dict = {}  # "<defence>/<metric>": [S] (clean, recon) or [S, E] (attacks)
    for m, levels in enumerate(members):
        runs, name = filters.runs_of(m), _name(cfg, levels)
        for key, value in scores.items():  # "<metric>_<defence>", defence in filter / none / squeeze
            metric, defence = key.rsplit("_", 1)
            if defence == "filter":
                acc[f"{name}/{metric}"] = value[runs]
            elif m == 0:  # the classifier alone and squeezing: the same for every member of a seed
                acc[f"{defence}/{metric}"] = value[runs]
    acc["none/bpda"] = acc["none/pgd"]  # without a filter the white-box attack is PGD on C itself
    results: dict = {}
    for key, value in acc.items():  # one entry per eps, so that the report lists every seed's value
        results.update({f"{key}/eps{eps:g}": value[:, i] for i, eps in enumerate(cfg.epsilons)} if value.ndim == 2
                       else {key: value})
    for name in [_name(cfg, v) for v in members] + ["squeeze"]:
        results[f"{name}/whitebox_drop"] = acc[f"{name}/pgd"][:, e] - acc[f"{name}/bpda"][:, e]
    results["lsq/clean_ratio"] = acc["lsq/clean"] / acc["none/clean"]
    results["lsq/graybox_gain"] = acc["lsq/pgd"][:, e] - acc["none/pgd"][:, e]
    results["lsq/minus_vae"] = acc["lsq/pgd"][:, e] - acc["vae/pgd"][:, e]
    results["lsq/clean_minus_vae"] = acc["lsq/clean"] - acc["vae/clean"]
    for name in [_name(cfg, v) for v in members] + ["none", "squeeze"]:
        run.log(f"{name:8s} clean {acc[f'{name}/clean'].mean():.3f}  gray-box PGD "
                + " ".join(f"{a:.3f}" for a in acc[f"{name}/pgd"].mean(0))
                + "  white-box BPDA " + " ".join(f"{a:.3f}" for a in acc[f"{name}/bpda"].mean(0)))
    _figures(cfg, run, filters, acc, test, examples["x_adv"][0])
    return results


def _figures(cfg: Config, run, filters, acc: dict, test: dict, x_adv) -> None:
    import matplotlib.pyplot as plt

    members = _members(cfg)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    steps, recon = filters.history.column("lsq/recon")
    for m, levels in enumerate(members):
        runs, label = filters.runs_of(m), _name(cfg, levels) + (f" (L={levels})" if levels else "")
        axes[0].plot(steps, recon[:, runs].mean(1), color=f"C{m}", label=label)
        for ax, metric in zip(axes[1:], ("clean", "graybox")):
            eval_steps, values = filters.history.column(f"eval/test/{metric}_L{levels}")
            ax.plot(eval_steps, values[:, runs].mean(1), "o-", color=f"C{m}", label=label)
    none = acc["none/clean"].mean(), acc["none/pgd"][:, cfg.epsilons.index(cfg.claim_eps)].mean()
    for ax, level, title in zip(axes[1:], none, ("clean accuracy C(F(x))", f"gray-box PGD eps={cfg.claim_eps}")):
        ax.axhline(level, color="k", ls="--", lw=1, label="no filter (mean over seeds)")
        ax.set(title=title, xlabel="filter step", ylim=(0, 1.02))
    axes[0].set(title="filter training: ||x - D(Q(z))||^2", xlabel="step", yscale="log")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("training_curves", fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3), sharey=True)
    names = ["none", "squeeze"] + [_name(cfg, v) for v in members]
    for ax, (attack, title) in zip(axes, (("fgsm", "gray-box FGSM"), ("pgd", "gray-box PGD"),
                                          ("bpda", "white-box BPDA-PGD"))):
        for i, name in enumerate(names):
            values = acc[f"{name}/{attack}"]
            ax.errorbar(cfg.epsilons, values.mean(0), yerr=values.std(0), marker="o", capsize=3, label=name,
                        color=f"C{i}")
        ax.set(title=title, xlabel="eps (L-infinity)", ylim=(0, 1.02))
    axes[0].set_ylabel("accuracy (mean, std over seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    run.figure("accuracy_vs_eps", fig)

    model, params = lsq.make_model(cfg.filter, IMAGE), filters.params_of(0)
    extra = jax.tree.map(lambda a: a[0], filters.state.extra)
    x, xa = test["x"][:10], x_adv[:10]

    def images():
        return {"grid": np.stack([x, model.filter(params, extra, x, cfg.levels[0]), xa,
                                  model.filter(params, extra, xa, cfg.levels[0]), squeeze_bits(xa, cfg.squeeze_bits)])}

    grid = run.artifact("figure-images", images, inputs=(params, extra, x, xa, repr(cfg.filter)))["grid"]
    run.figure("examples", image_grid(grid, row_labels=["clean", "LSQ(clean)", f"PGD eps={cfg.claim_eps}",
                                                        "LSQ(adv)", "squeeze(adv)"],
                                      title="test digits, seed 0 (gray-box attack on C)"))
