"""`mi/mlvgm`: the MI of each latent chunk of a multi-latent generator, and SimCLR on chunk views (Serez, Cristani,
Del Bue, Murino & Morerio, TMLR 2025, arXiv 2501.13718; issue 18).

Setting (fixed before the claims' first run; `gvlab.mi`): the procedural generator `gvlab.mi.generator` (16x16
digits; chunks semantic 10, style 5, geometry 3, texture 64, dead 8; anchors TruncN(0, 1, +-2)).
Part 1, MI per chunk: for each chunk i one member of one fit trains an InfoNCE critic (MLP 256 -> 256 -> 64,
L2-normalised, tau = 0.1; Adam 1e-3, batch B = 256, fresh anchors every step) on (g(z), g(z with chunk i
resampled)); two control members: identical views (nothing resampled: the critic's own ceiling) and independent
views (everything resampled: no shared information). I_hat_i = log(2B - 1) - L_NCE on `estimate_batches` held-out
batches. The chunk's known influence is the generator's own E|g(z) - g(z_i resampled)|^2 (Monte Carlo, no critic).
Part 2, SimCLR (NT-Xent tau = 0.2, encoder 256 -> 256 -> 128, projector 128 -> 64, Adam 1e-3, batch 256, fresh
anchors every step, T_x = random shift <= 1 px) with views that resample chunks 1-4 and keep the semantic chunk,
and views that resample all chunks: the two are members of one fit. Linear probe (`gvlab.probe`, l2 1e-3) on the
frozen encoder features of real digits (1497 train / 300 test, upsampled the same way), evaluated during training.

Claims (issue 18; thresholds from the notes, section 7(d), fixed before any run):
* the dead chunk's estimate is at the ceiling: log(2B - 1) - I_hat_dead <= 0.3 nats on every seed;
* Spearman(ranking of the seed-mean I_hat over the 5 chunks, known influence) >= 0.9 (more influence, less MI);
* probe accuracy (keep semantic) - probe accuracy (perturb all) >= 0.05 (seed mean).
Reported beside them: the identical-view control (the estimator's reachable ceiling), the independent-view floor,
per-seed Spearman and its value along training, the Spearman against the notes' hypothesised order (semantic >
style ~ geometry > texture > dead), the probe on raw pixels (what a linear probe reads without learning), and the
same probes trained on 5 labels per class (where the representation matters more).

Command:  gvlab reproduce mi/mlvgm --profile quick      (2 seeds; full: 3 seeds, longer critic and SimCLR fits)
Shows:    per-chunk MI with the ceiling and the influence, the SimCLR probe curves; figures mi_curves, mi_chunks,
          probe_curves. Notes and diagnosis: experiments/mi/mlvgm.md; numbers: report.json.
Runtime:  quick ~5.5 min, full ~14 min on 2 CPU cores shared with other jobs (load ~9); less on idle cores.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from gvlab import Claim, Spec, TrainConfig, experiment, probe
from gvlab.mi import generator as gen_lib
from gvlab.mi import infonce, views

NOTES_MI_RANK = gen_lib.INFLUENCE_MI_RANK  # the notes' hypothesised order, as MI ranks (1 = least MI)
SIMCLR_VIEWS = ("keep_semantic", "perturb_all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`mi/mlvgm` settings.

    Attributes:
        critic: the MI critic (notes: MLP 256 -> 256 -> 64, SupCon temperature 0.1, as the official
            `train_navigator.py` `--temp 0.1`).
        critic_train: the critic fit (members: 5 chunks + 2 controls; `num_seeds` seeds each).
        estimate_batches: held-out batches of B pairs the final I_hat averages over.
        simclr: SimCLR encoder, projector, temperature (notes: 0.2) and pixel shift.
        probe_l2, probe_steps: the logistic probe's L2 weight and L-BFGS steps.
        probe_per_class: labels per class of the few-label probe (reported beside the claim, not claimed).
        pixel_probe: also fit the probe on raw pixels (the reference beside the SimCLR claim; off in smoke, where
            it would be one more compiled program).
        train: the SimCLR fit (members: the two view kinds).
    """

    critic: views.CriticConfig = views.CriticConfig()
    critic_train: TrainConfig = TrainConfig(steps=1000, batch_size=256, lr=1e-3, num_seeds=3, log_every=50)
    estimate_batches: int = 16
    simclr: views.SimCLRConfig = views.SimCLRConfig()
    probe_l2: float = 1e-3
    probe_steps: int = 100
    probe_per_class: int = 5
    pixel_probe: bool = True
    train: TrainConfig = TrainConfig(steps=1500, batch_size=256, lr=1e-3, num_seeds=3, log_every=100,
                                     eval_every=250)


def critic_members() -> tuple[tuple[str, ...], jax.Array]:
    """Names and resampling masks [M, Z]: each chunk alone, then the identical and independent controls."""
    names = gen_lib.NAMES + ("identical", "independent")
    masks = [gen_lib.chunk_mask([i]) for i in range(len(gen_lib.CHUNKS))]
    masks += [gen_lib.chunk_mask([]), gen_lib.chunk_mask(range(len(gen_lib.CHUNKS)))]
    return names, jnp.stack(masks)


def held_out_mi(run, data, key, *, critic: views.CriticConfig, batch_size: int, num_batches: int) -> dict:
    """Evaluator: I_hat = log(2B - 1) - mean L_NCE over `num_batches` fresh batches, and the member's influence
    E|g(z) - g(z')|^2 (sum over pixels; the generator's own measure, no critic) on the same views;
    run = {"params", "mask"}."""
    del data
    sample = views.latent_batches(batch_size).batch
    gen = gen_lib.make()

    def one(i):
        batch = sample({}, key, i)
        x, x_view = views.view_pair(gen, batch, run["mask"])
        distance = jnp.mean(jnp.sum(jnp.square(x - x_view), axis=-1))
        return views.critic_loss(critic, run["params"], batch, run["mask"]), distance

    loss, distance = jax.lax.map(one, jnp.arange(num_batches))
    return {"loss": jnp.mean(loss), "mi": infonce.mi_estimate(jnp.mean(loss), batch_size),
            "influence": jnp.mean(distance)}


def rank(values) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (scipy's `rankdata`; scipy is only a test dependency)."""
    values = np.asarray(values)
    return np.array([np.sum(values < v) + (np.sum(values == v) + 1) / 2.0 for v in values])


def spearman(mi: np.ndarray, reference: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the ranks."""
    return float(np.corrcoef(rank(mi), rank(reference))[0, 1])


@functools.partial(jax.jit, static_argnums=(2, 3))
def raw_pixel_probe(train: dict, test: dict, l2: float, steps: int) -> dict:
    """The ceiling of a linear probe without representation learning: logistic regression on raw pixels."""
    fitted = probe.fit_logistic(train["x"].reshape(len(train["y"]), -1), train["y"], 10, l2=l2, steps=steps)
    return {"accuracy": probe.accuracy(fitted, test["x"].reshape(len(test["y"]), -1), test["y"])}


def _pixel_probes(cfg: Config, train: dict, test: dict, few_index) -> dict:
    out = {"": raw_pixel_probe(train, test, cfg.probe_l2, cfg.probe_steps)["accuracy"]}
    if few_index is not None:
        subset = {"x": train["x"][few_index], "y": train["y"][few_index]}
        out["_few"] = raw_pixel_probe(subset, test, cfg.probe_l2, cfg.probe_steps)["accuracy"]
    return out


RETIRED_NOTES_ORDER = (
    "the notes' order is a guess about the generator, not a property of the method: the generator's own pixel change "
    "when one chunk is resampled (no critic involved) orders the chunks geometry 14.2 > semantic 8.5 > style 3.6 > "
    "texture 0.45 > dead 6e-6, and that measured influence is the reference of the live claim (chosen after a "
    "300-step, 1-seed exploration run, disclosed in mlvgm.md)")
RETIRED_PROBE_GAP = (
    "unreachable with full labels: the perturb-all encoder's probe matches the raw-pixel probe (0.957-0.973 "
    "measured, raw pixels 0.973) and accuracy is at most 1, so the gap is at most ~0.04 < 0.05; the paper's ordering "
    "holds on every seed and step, and the 5-labels-per-class gap is reported (`probe_few_gap`), not claimed: it was "
    "seen before a claim on it could be fixed")


@experiment(
    "mi/mlvgm",
    config=Config(),
    smoke={"critic.hidden": (16, 8), "critic_train.steps": 3, "critic_train.batch_size": 16,
           "critic_train.num_seeds": 1, "critic_train.log_every": 1, "estimate_batches": 1,
           "pixel_probe": False, "probe_per_class": 0, "simclr.encoder": (16, 8), "simclr.projector": (8,), "probe_steps": 3,
           "train.steps": 3, "train.batch_size": 16, "train.num_seeds": 1, "train.log_every": 1,
           "train.eval_every": 0},
    quick={"critic_train.steps": 600, "critic_train.num_seeds": 2, "train.steps": 1000, "train.num_seeds": 2,
           "train.eval_every": 200},
    claims=[
        Claim(statement="A dead (unused) latent chunk cannot lower the MI between anchor and view: its estimate is "
                        "at the ceiling, log(2B - 1) - I_hat_dead <= 0.3 nats (every seed)",
              metric="dead_gap", op="<=", threshold=0.3, reduce="all",
              source="Serez et al. 2025, Sec. 3 and Table 1 (under-used latents); notes 7(d) gate "
                     "I_hat_5 >= log(2B - 1) - 0.3"),
        Claim(statement="InfoNCE between anchor and chunk-resampled view ranks the chunks by their influence: "
                        "Spearman(seed-mean I_hat, the generator's measured influence) >= 0.9",
              metric="spearman", op=">=", threshold=0.9,
              source="Serez et al. 2025, Sec. 3 (MI quantifies each latent's contribution); notes 7(d)"),
        Claim(statement="... ranked against the notes' hypothesised order (semantic > style = geometry > texture > "
                        "dead): Spearman >= 0.9",
              metric="spearman_notes_order", op=">=", threshold=0.9,
              source="notes 7(d)", retired=RETIRED_NOTES_ORDER),
        Claim(statement="Views that keep the semantic latent and resample the others make better SimCLR positives "
                        "than views that resample all chunks: linear-probe accuracy gap >= 0.05 (seed mean)",
              metric="probe_gap", op=">=", threshold=0.05,
              source="Serez et al. 2025, Sec. 5 (chunk views vs random perturbation of all chunks); notes 7(d)",
              retired=RETIRED_PROBE_GAP),
    ],
)
def mlvgm(cfg: Config, run) -> dict:
    """Per-chunk MI of the procedural generator, then SimCLR on chunk views with a linear probe."""
    names, masks = critic_members()
    batch = cfg.critic_train.batch_size
    critic_spec = Spec(views.make_critic(cfg.critic), optax.adam(cfg.critic_train.lr), views.latent_batches(batch),
                       args={"mask": masks})
    critic_fit = run.fit(critic_spec, cfg.critic_train, name="critic")
    settings = {"critic": cfg.critic, "batch_size": batch, "num_batches": cfg.estimate_batches}
    estimate_fn = functools.update_wrapper(functools.partial(held_out_mi, **settings), held_out_mi)
    estimate = run.evaluate("critic/held_out", estimate_fn, {"params": critic_fit.params,
                                                             "mask": critic_fit.args["mask"]}, extra=repr(settings))
    seeds = cfg.critic_train.num_seeds
    mi = np.asarray(estimate["mi"]).reshape(len(names), seeds)  # runs are member-major
    ceiling = infonce.ceiling(batch)
    pixel = np.asarray(estimate["influence"]).reshape(len(names), seeds).mean(1)
    # More influence -> less shared information: the reference MI rank is the reverse of the influence rank.
    reference = rank(-pixel[:len(gen_lib.CHUNKS)])
    chunks = len(gen_lib.CHUNKS)
    results = {f"mi/{name}": mi[i] for i, name in enumerate(names)}
    results.update({f"influence/{name}": pixel[i] for i, name in enumerate(gen_lib.NAMES)})
    results.update({
        "ceiling": ceiling,
        "dead_gap": ceiling - mi[names.index("dead")],
        "identical_gap": ceiling - mi[names.index("identical")],
        "dead_minus_identical": mi[names.index("dead")] - mi[names.index("identical")],
        "spearman": spearman(mi[:chunks].mean(1), reference),
        "spearman_per_seed": np.array([spearman(mi[:chunks, s], reference) for s in range(seeds)]),
        "spearman_notes_order": spearman(mi[:chunks].mean(1), np.asarray(NOTES_MI_RANK)),
    })
    # The ranking along training (training-batch estimates, seed means): has the claim's metric stopped moving?
    curve_steps, curves = critic_fit.history.column("nce/mi")
    curves = np.asarray(curves).reshape(len(curve_steps), len(names), seeds).mean(2)[:, :chunks]
    results["spearman_by_step"] = np.array([spearman(row, reference) for row in curves])
    results["spearman_steps"] = np.asarray(curve_steps)
    run.log(f"I_hat per member {dict(zip(names, np.round(mi.mean(1), 3)))}, ceiling {ceiling:.3f}; influence "
            f"{dict(zip(gen_lib.NAMES, np.round(pixel, 4)))}; Spearman {results['spearman']:.3f}")

    train, test = gen_lib.real_digits("train"), gen_lib.real_digits("test")
    simclr_masks = jnp.stack([gen_lib.chunk_mask(range(1, chunks)), gen_lib.chunk_mask(range(chunks))])
    simclr_spec = Spec(views.make_simclr(cfg.simclr), optax.adam(cfg.train.lr),
                       views.latent_batches(cfg.train.batch_size), args={"mask": simclr_masks},
                       evals={"probe": views.probe_eval(cfg.simclr, train, test, l2=cfg.probe_l2,
                                                        steps=cfg.probe_steps, per_class=cfg.probe_per_class)})
    simclr_fit = run.fit(simclr_spec, name="simclr")
    steps, accuracy = simclr_fit.history.column("eval/probe/accuracy")
    final = np.asarray(accuracy[-1]).reshape(len(SIMCLR_VIEWS), cfg.train.num_seeds)
    results.update({f"probe/{name}": final[i] for i, name in enumerate(SIMCLR_VIEWS)})
    results["probe_gap"] = final[0] - final[1]
    if cfg.probe_per_class:
        few = np.asarray(simclr_fit.history.column("eval/probe/accuracy_few")[1][-1]).reshape(final.shape)
        results.update({f"probe_few/{name}": few[i] for i, name in enumerate(SIMCLR_VIEWS)})
        results["probe_few_gap"] = few[0] - few[1]
    if cfg.pixel_probe:
        few_index = views.few_labels(train["y"], cfg.probe_per_class) if cfg.probe_per_class else None
        raw = run.artifact("raw_pixel_probe", lambda: _pixel_probes(cfg, train, test, few_index),
                           inputs=(cfg.probe_l2, cfg.probe_steps, cfg.probe_per_class))
        results.update({f"probe{suffix}/raw_pixels": float(value) for suffix, value in raw.items()})
    run.log(f"probe accuracy keep-semantic {np.round(final[0], 3)}, perturb-all {np.round(final[1], 3)}, raw "
            f"pixels {results.get('probe/raw_pixels', 'not run')}")
    few_curve = simclr_fit.history.column("eval/probe/accuracy_few")[1] if cfg.probe_per_class else None
    _figures(run, critic_fit, names, mi, pixel, ceiling, steps, accuracy, few_curve)
    return results


def _figures(run, critic_fit, names, mi, pixel, ceiling, probe_steps, accuracy, few_curve) -> None:
    import matplotlib.pyplot as plt

    steps, curves = critic_fit.history.column("nce/mi")
    curves = np.asarray(curves).reshape(len(steps), len(names), -1)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, name in enumerate(names):
        ax.plot(steps, curves[:, i].mean(1), label=name, color=f"C{i}")
        ax.fill_between(steps, curves[:, i].min(1), curves[:, i].max(1), color=f"C{i}", alpha=0.2)
    ax.axhline(ceiling, color="k", ls="--", lw=0.8, label="log(2B - 1)")
    ax.set_xlabel("critic step")
    ax.set_ylabel("I_hat (nats, training batch)")
    ax.set_title("InfoNCE MI estimate per resampled chunk (seed mean, min-max)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    run.figure("mi_curves", fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    chunks = len(gen_lib.NAMES)
    for i, name in enumerate(gen_lib.NAMES):
        ax.errorbar(pixel[i], mi[i].mean(), yerr=mi[i].std(), fmt="o", color=f"C{i}", label=name)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.axhline(ceiling, color="k", ls="--", lw=0.8)
    ax.set_xlabel("influence E|g(z) - g(z')|^2")
    ax.set_ylabel("held-out I_hat (nats)")
    ax.set_title(f"chunks: MI vs influence ({chunks} chunks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.figure("mi_chunks", fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    acc = np.asarray(accuracy).reshape(len(probe_steps), len(SIMCLR_VIEWS), -1)
    for i, name in enumerate(SIMCLR_VIEWS):
        ax.plot(probe_steps, acc[:, i].mean(1), marker="o", label=name, color=f"C{i}")
        ax.fill_between(probe_steps, acc[:, i].min(1), acc[:, i].max(1), color=f"C{i}", alpha=0.2)
        if few_curve is not None:
            few = np.asarray(few_curve).reshape(acc.shape)
            ax.plot(probe_steps, few[:, i].mean(1), marker="x", ls="--", color=f"C{i}", label=f"{name}, few labels")
    ax.set_xlabel("SimCLR step")
    ax.set_ylabel("linear-probe accuracy (real digits)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.figure("probe_curves", fig)
