"""`unlearning/laf`: Label-Agnostic Forgetting on digits (Shen et al., ICLR 2024, arXiv 2404.00506; issue 17).

Setting (notes sec. 2(d), fixed before any run; `gvlab.unlearning`): the fixed digits split (1497 train, 300 test,
pixels / 16), an MLP classifier 64 -> 128 -> 64 (linear embedding) -> 10, Adam 1e-3, batch 64. Forget sets, all
members of every fit: each class in `forget_classes` (class removal) and one random 10% of the training set
(random removal). Methods: the original model, retraining on D_r from scratch (the oracle), fine-tuning on D_r,
NegGrad+ (beta = 0.95), LAF (label-free: VAEs on embeddings, then alternating UE / RA steps on the extractor), its
UE-only and RA-only ablations, and LAF+R (LAF, then the head alone trained on 10% of D_r's labels). Metrics: accuracy
on D_r, D_f, the test rows of the remaining / forgotten classes, and a logistic-regression MIA on sorted softmax
outputs (fraction of D_f called member). Every fit trains (forget sets x seeds) runs in one program.

Claims (issue 17, fixed before any run; class removal, mean over forget classes and seeds): forgotten-class test
accuracy after LAF <= 0.5 x the original's and <= 0.40; remaining-class test accuracy >= original - 0.10; LAF+R's
remaining-class test accuracy >= LAF's (the paper's LAF+R repairs utility, i.e. accuracy on the remaining data).
Random removal and the MIA are reported beside retraining, not claimed.

Command:  gvlab reproduce unlearning/laf --profile quick
Shows:    the claims; every method's metrics beside the retrained oracle for both tasks (log; per-run values and
          their means `mean/<task>/<method>/<metric>` in report.json / report.md);
          figures: LAF's forgotten / remaining test accuracy along the unlearning steps, and per-method bars.
Runtime:  quick (forget classes 0, 3, 8 + random, 3 seeds: 12 runs per method) about 1 min, full (all 10 classes:
          33 runs per method) about 2 min, on 2 CPU cores shared with other jobs. Three compiled fits:
          original + retrain (members: forget sets), LAF + ablations (members: variants x forget sets, the VAE phase
          then the UE / RA phase), fine-tune + NegGrad+ + LAF+R (members: method x forget set), all warm-started
          (`fit(init=...)`) except the first.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.data import digits as digits_data
from gvlab.unlearning import classifier as clf
from gvlab.unlearning import evaluate as ev
from gvlab.unlearning import forget, laf

METRICS = ("train_remain", "train_forget", "test", "test_remain", "test_forget", "mia_forget", "mia_heldout",
           "mia_accuracy")
LAF_VARIANTS = {"laf": (1.0, 1.0), "laf_ue_only": (1.0, 0.0), "laf_ra_only": (0.0, 1.0)}  # (use_ue, use_ra)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`unlearning/laf` settings.

    Attributes:
        forget_classes: classes removed one at a time (members of every fit).
        random_fraction: the random-removal forget set's share of the training set.
        label_fraction: share of D_r whose labels LAF+R may use.
        model: the classifier.
        method: LAF's VAE and unlearning settings.
        vae_steps, unlearn_steps: steps of LAF's VAE phase and of its UE/RA phase (batch `unlearn_batch`).
        finetune_steps: steps of fine-tuning, NegGrad+ and LAF+R's head repair (batch `train.batch_size`).
        neggrad_beta: NegGrad+'s weight of the remaining-data loss.
        mia_members: D_r examples (and as many test rows) that train the MIA attacker; mia_steps: its L-BFGS steps.
        train: the original model's and the retrained oracle's fit (steps, batch, lr, seeds).
    """

    forget_classes: tuple[int, ...] = tuple(range(10))
    random_fraction: float = 0.1
    label_fraction: float = 0.1
    model: clf.Config = clf.Config()
    method: laf.Config = laf.Config()
    # 480 steps of batch 32: ~10 epochs of the training set (`Train.py::vae_train`, 10 epochs, loaders of 32).
    vae_steps: int = 480
    # 400 steps at 10x the MNIST learning rates: the official 20 epochs of ~188 batches of a MNIST class at lr_ue
    # 5e-5 / lr_ra 1e-4 move the extractor by lr x steps = 0.19 / 0.38; 400 x (5e-4 / 1e-3) = 0.2 / 0.4.
    unlearn_steps: int = 400
    unlearn_batch: int = 32
    # 200 steps: LAF+R's labelled cross-entropy (135 examples, head only) flattens near 0.01 by then (exploration
    # run on the training loss, forget class 3); fine-tuning and NegGrad+ share the program and the count.
    finetune_steps: int = 200
    neggrad_beta: float = 0.95
    mia_members: int = 150
    mia_steps: int = 100
    train: TrainConfig = TrainConfig(steps=1000, batch_size=64, lr=1e-3, num_seeds=3, log_every=100)


def _tile(tree, times: int):
    """Per-member leaves [M, ...] repeated per seed -> [M * S, ...] (member-major, as fit lays runs out)."""
    return jax.tree.map(lambda a: np.repeat(np.asarray(a), times, axis=0), tree)


def _tile_members(arrays, times: int):
    """Per-member arrays [M, ...] repeated as `times` blocks -> [times * M, ...] (member b * M + m is set m)."""
    return jax.tree.map(lambda a: np.tile(np.asarray(a), (times,) + (1,) * (np.ndim(a) - 1)), arrays)


def _classifier(params):
    """The classifier's parts of parameters that also carry LAF's VAEs."""
    return {"extractor": params["extractor"], "head": params["head"]}


def _runs(tree, index):
    return jax.tree.map(lambda a: np.asarray(a)[np.asarray(index)], tree)


@experiment(
    "unlearning/laf",
    config=Config(),
    smoke={"forget_classes": (3,), "model.hidden": (16,), "model.embed_dim": 8, "method.vae_hidden": (8,),
           "method.latent_dim": 2, "vae_steps": 2, "unlearn_steps": 2, "finetune_steps": 3,
           "mia_members": 20, "mia_steps": 3, "train.steps": 4, "train.num_seeds": 2, "train.log_every": 2},
    quick={"forget_classes": (0, 3, 8)},
    claims=[
        Claim(statement="LAF (no labels) removes the class: forgotten-class test accuracy <= 0.5 x the original's "
                        "(measured: LAF's minus half the original's, per forget class and seed)",
              metric="class/laf/test_forget_minus_half_original", op="<=", threshold=0.0,
              source="issue 17; notes sec. 2(d); Shen et al. 2024, class removal"),
        Claim(statement="Forgotten-class test accuracy after LAF <= 0.40", metric="class/laf/test_forget", op="<=",
              threshold=0.40, source="issue 17; notes sec. 2(d)"),
        Claim(statement="LAF keeps the rest: remaining-class test accuracy >= original - 0.10",
              metric="class/laf_minus_original/test_remain", op=">=", threshold=-0.10,
              source="issue 17; notes sec. 2(d)"),
        Claim(statement="LAF+R (10% of D_r's labels, head only) >= LAF on remaining-class test accuracy",
              metric="class/laf_r_minus_laf/test_remain", op=">=", threshold=0.0,
              source="issue 17; Shen et al. 2024, LAF+R"),
    ],
)
def laf_digits(cfg: Config, run) -> dict:
    """Original, retrain, fine-tune, NegGrad+, LAF (+ ablations) and LAF+R on class and random forget sets."""
    s_count = cfg.train.num_seeds
    train, test = digits_data.digits("train", "unit"), digits_data.digits("test", "unit")
    x, y = np.asarray(train["x"]).reshape(-1, 64), np.asarray(train["y"])
    x_test, y_test = np.asarray(test["x"]).reshape(-1, 64), np.asarray(test["y"])
    n = len(y)
    masks = np.stack([forget.class_forget_mask(y, c) for c in cfg.forget_classes]
                     + [forget.random_forget_mask(n, cfg.random_fraction, seed=cfg.train.seed)])
    labels = list(cfg.forget_classes) + [-1]  # -1: the random forget set
    sets = len(labels)
    model = clf.make_classifier(cfg.model)

    # 1. The original model (member 0: nothing forgotten) and the retrained oracles, from scratch, one program. Their
    # parameters carry LAF's two untrained VAEs (`laf.make_init`; zero gradients, zero updates) for step 2's warm start.
    all_masks = np.concatenate([np.zeros((1, n), bool), masks])
    source = forget.remaining_batches(forget.member_arrays(x, y, all_masks), cfg.train.batch_size)
    method = clf.cross_entropy(model)._replace(init=laf.make_init(cfg.method, model, cfg.model.embed_dim))
    base = run.fit(Spec(method, optax.adam(cfg.train.lr), source), name="original_and_retrain")
    original = _tile_members(_runs(base.params, range(s_count)), sets)  # run m S + s: seed s of the original
    retrain = _runs(base.params, range(s_count, (sets + 1) * s_count))  # [sets * S]

    # 2. LAF and its ablations (members = variants x forget sets), warm-started from the original: the VAE phase
    # (VAE_s on all data, VAE_u on D_f, over the original embeddings), then the UE / RA phase.
    arrays = forget.member_arrays(x, y, masks)
    variants = len(LAF_VARIANTS)
    gates = np.asarray([g for g in LAF_VARIANTS.values() for _ in range(sets)], np.float32)  # [variants * sets, 2]
    laf_method, laf_tx = laf.laf_method(cfg.method, model, cfg.model.embed_dim, cfg.vae_steps)
    curve_eval = functools.partial(_class_curve, model=model, data={"x": x_test, "y": y_test},
                                   classes=cfg.model.num_classes)
    every = max(cfg.unlearn_steps // 10, 1)
    unlearned = run.fit(
        Spec(laf_method, laf_tx, forget.paired_batches(_tile_members(arrays, variants), cfg.unlearn_batch),
             evals={"test": curve_eval}, args={"use_ue": gates[:, 0], "use_ra": gates[:, 1]}),
        dataclasses.replace(cfg.train, steps=cfg.vae_steps + cfg.unlearn_steps, batch_size=cfg.unlearn_batch,
                            eval_every=every, log_every=every),
        name="laf", init=_tile_members(original, variants))

    # 4. Fine-tuning (beta = 1: descent on D_r only), NegGrad+ (warm-started from the original) and LAF+R (LAF's
    # model, its head alone trained on a labelled 10% of D_r): members of one program, three blocks of forget sets.
    rng = np.random.default_rng(cfg.train.seed + 1)
    labelled = np.stack([forget.subset_mask(~m, cfg.label_fraction, int(rng.integers(1 << 30))) for m in masks])
    blocks = [arrays, arrays, forget.member_arrays(x, y, masks, remain_masks=labelled)]
    block_args = [(1.0, 1.0), (cfg.neggrad_beta, 1.0), (1.0, 0.0)]  # (beta, train_extractor)
    laf_params = _runs(_classifier(unlearned.params), range(sets * s_count))  # variant "laf" comes first
    tuned = run.fit(
        Spec(clf.neggrad_plus(model, beta=cfg.neggrad_beta), optax.adam(cfg.train.lr),
             forget.paired_batches(jax.tree.map(lambda *a: np.concatenate(a), *blocks), cfg.train.batch_size),
             args={k: np.repeat(np.asarray(v, np.float32), sets) for k, v in zip(("beta", "train_extractor"),
                                                                                  zip(*block_args))}),
        dataclasses.replace(cfg.train, steps=cfg.finetune_steps), name="supervised",
        init=jax.tree.map(lambda *a: np.concatenate(a), _classifier(original), _classifier(original), laf_params))

    # Evaluation: every method's classifier, one run per (forget set, seed), against the same forget-set inputs.
    mia_members = np.stack([rng.choice(np.flatnonzero(~m), cfg.mia_members, replace=False) for m in masks])
    inputs = _tile({"forget_mask": masks, "forget_class": np.asarray(labels, np.int32), "mia_members": mia_members},
                   s_count)
    classifiers = {"original": _classifier(original), "retrain": _classifier(retrain),
                   "finetune": _runs(tuned.params, range(sets * s_count)),
                   "neggrad_plus": _runs(tuned.params, range(sets * s_count, 2 * sets * s_count)),
                   "laf_r": _runs(tuned.params, range(2 * sets * s_count, 3 * sets * s_count))}
    for v, name in enumerate(LAF_VARIANTS):
        classifiers[name] = _runs(_classifier(unlearned.params), range(v * sets * s_count, (v + 1) * sets * s_count))
    evaluator = functools.update_wrapper(functools.partial(ev.unlearning_metrics, classifier=model,
                                                           mia_steps=cfg.mia_steps), ev.unlearning_metrics)
    data = {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}
    is_class = np.repeat(np.asarray(labels) >= 0, s_count)
    results: dict[str, np.ndarray] = {}
    for name, params in classifiers.items():
        scores = run.evaluate(f"metrics/{name}", evaluator, {"params": params, **inputs}, data,
                              extra=repr((cfg.model, cfg.mia_steps)))
        for metric in METRICS:
            results[f"class/{name}/{metric}"] = scores[metric][is_class]
            if metric != "test_forget":  # a random forget set has no forgotten class (NaN)
                results[f"random/{name}/{metric}"] = scores[metric][~is_class]
    for task in ("class", "random"):
        for name in classifiers:
            for metric in METRICS:
                if name != "retrain" and f"{task}/{name}/{metric}" in results:
                    results[f"{task}/{name}_minus_retrain/{metric}"] = (results[f"{task}/{name}/{metric}"]
                                                                         - results[f"{task}/retrain/{metric}"])
            results[f"{task}/{name}/forget_minus_test"] = (results[f"{task}/{name}/train_forget"]
                                                           - results[f"{task}/{name}/test"])
    results["class/laf/test_forget_minus_half_original"] = (results["class/laf/test_forget"]
                                                            - 0.5 * results["class/original/test_forget"])
    results["class/laf_minus_original/test_remain"] = (results["class/laf/test_remain"]
                                                       - results["class/original/test_remain"])
    results["class/laf_r_minus_laf/test_remain"] = results["class/laf_r/test_remain"] - results["class/laf/test_remain"]
    # Seed-and-set means, so that report.md shows every method's metrics beside the retrained oracle's.
    for task in ("class", "random"):
        for name in classifiers:
            for metric in METRICS + ("forget_minus_test",):
                if f"{task}/{name}/{metric}" in results:
                    results[f"mean/{task}/{name}/{metric}"] = np.asarray(np.mean(results[f"{task}/{name}/{metric}"]))
    _log_table(run, results, list(classifiers))
    _figures(run, cfg, unlearned, results, list(classifiers), labels)
    return results


def _class_curve(params, key, *, model, data, classes: int) -> dict:
    """Spec.evals along LAF's fit: test accuracy of every class (the forgotten one is read off per member)."""
    del key
    acc = ev.class_accuracies(model.logits(params, data["x"]), data["y"], classes)
    return {f"class_{c}": acc[c] for c in range(classes)}


def _log_table(run, results: dict, names: list[str]) -> None:
    for task in ("class", "random"):
        run.log(f"{task} removal (mean over forget sets x seeds; retrain = oracle):")
        run.log("  " + " ".join(f"{m:>12}" for m in ["method"] + list(METRICS)))
        for name in names:
            row = [np.mean(results.get(f"{task}/{name}/{m}", np.nan)) for m in METRICS]
            run.log("  " + f"{name:>12} " + " ".join(f"{v:12.3f}" for v in row))


def _laf_curves(unlearned, labels: list[int], vae_steps: int) -> tuple[np.ndarray, dict]:
    """UE/RA steps and, per variant, [runs, steps, 2] forgotten-class and mean remaining-class test accuracy."""
    sets = len(labels)
    rows = [r for r in unlearned.history.rows if "eval/test/class_0" in r and r["step"] > vae_steps]
    steps = np.asarray(sorted({r["step"] for r in rows}))
    curves: dict = {}
    for r in rows:
        m = r.get("member", 0)
        variant, label = list(LAF_VARIANTS)[m // sets], labels[m % sets]
        if label < 0:
            continue
        classes = sum(1 for k in r if k.startswith("eval/test/class_"))
        acc = np.asarray([r[f"eval/test/class_{c}"] for c in range(classes)])
        entry = curves.setdefault(variant, {}).setdefault((m, r["seed"]), {})
        entry[r["step"]] = (acc[label], np.delete(acc, label).mean())
    out = {v: np.asarray([[runs[k][t] for t in steps] for k in sorted(runs)]) for v, runs in curves.items()}
    return steps - vae_steps, out


def _figures(run, cfg: Config, unlearned, results: dict, names: list[str], labels: list[int]) -> None:
    import matplotlib.pyplot as plt

    steps, curves = _laf_curves(unlearned, labels, cfg.vae_steps)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    original = [np.nanmean(results[f"class/original/test_{k}"]) for k in ("forget", "remain")]
    oracle = [np.nanmean(results[f"class/retrain/test_{k}"]) for k in ("forget", "remain")]
    for i, (ax, title) in enumerate(zip(axes, ("forgotten class", "remaining classes (class mean)"))):
        for j, (variant, curve) in enumerate(curves.items()):
            mean, std = curve[..., i].mean(0), curve[..., i].std(0)
            ax.plot(np.r_[0, steps], np.r_[original[i], mean], marker="o", color=f"C{j}", label=variant)
            ax.fill_between(steps, mean - std, mean + std, color=f"C{j}", alpha=0.2)
        ax.axhline(oracle[i], color="k", ls="--", lw=1, label="retrain (oracle)")
        ax.set(xlabel="unlearning step (UE + RA)", ylabel="test accuracy", title=f"LAF: {title}", ylim=(0, 1.02))
    axes[0].axhline(0.40, color="r", ls=":", lw=1, label="claim bound 0.40")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    run.figure("laf_curve", fig)

    shown = ("test_remain", "test_forget", "mia_forget")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, task in zip(axes, ("class", "random")):
        for j, metric in enumerate(shown):
            values = [np.nanmean(results[f"{task}/{n}/{metric}"]) if task == "class" or metric != "test_forget"
                      else np.nanmean(results[f"{task}/{n}/train_forget"]) for n in names]
            ax.bar(np.arange(len(names)) + 0.27 * j, values, 0.27, label=metric if task == "class" or
                   metric != "test_forget" else "train_forget (D_f)")
        ax.set_xticks(np.arange(len(names)) + 0.27, names, rotation=30, fontsize=7)
        ax.set(title=f"{task} removal (retrain = oracle)", ylim=(0, 1.25))
        ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    run.figure("methods", fig)
