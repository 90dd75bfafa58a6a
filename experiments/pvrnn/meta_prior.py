"""Experiment `pvrnn/meta_prior`: PV-RNN's meta-prior sweep and error regression on PFSM sequences.

Ahmadi & Tani (Neural Computation 2019, arXiv 1811.01339) claim that the meta-prior w, the weight of the KL
term of PV-RNN's lower bound, sets how the network models randomness: with a high w it develops (nearly)
deterministic dynamics whose prior sigma is small, with a low w it behaves as a random process, an
intermediate w reproduces the data's transition probabilities best, and error regression (ER) predicts better
than a VRNN (Chung et al. 2015). This is a mini-experiment: 1-D primitive sequences from a
probabilistic finite-state machine (`gvlab.data.pfsm`: A -> B 0.3, A -> C 0.7, B -> A, C -> A), a one-layer
PV-RNN (d = 24, z = 2, tau = 2) trained full batch for each w in {1e-4, 5e-3, 0.5} (w^(1) = w), a VRNN
baseline, and held-out test sequences.

Measurements (one fit whose members are the w, `Spec.args`, times the seeds; arrays over the seeds):
* P1: mean prior sigma over `generate_length` steps of free generation (t > 1, all latent units).
* P2: the generated sequences are segmented into primitives by template matching (`pfsm.segment`) and
  P^(B | A) is estimated from consecutive well-formed slots (template MSE < `template_tolerance`), with half a
  count added to each of A -> B and A -> C (Jeffreys) so an empty count gives 0.5 rather than NaN.
* P3: for every window end e = H..T - horizon of each test sequence, the mean squared error of the
  `horizon`-step prediction of x[e : e + horizon], averaged over steps, positions and test sequences, for ER
  (H = 10, 30 Adam iterations per window at lr 0.05, then the prior means rolled forward), for the same model
  without ER (the prior means rolled from t = 1: the model has no encoder, so nothing else reads the
  observations), and for the VRNN (filtering with the encoder means, then the prior means).
  As a reference the data's own limit is reported: `oracle_over_mode` is the error of a predictor that knows
  the true label of every primitive already started divided by that of one that knows none (both predict the
  most probable continuation); for this PFSM and horizon 8 it lies well above the ratio 0.5, which no
  single-continuation predictor can then reach against a no-ER baseline that predicts the most probable path.

Budget adaptations (not in the paper): Adam at lr 3e-3 on the weights and 3e-2 on the adaptive vectors for a
few thousand full-batch steps, instead of lr 1e-3 for 200k epochs; adaptive vectors start at 0 rather than at
the prior's first-epoch pre-activations; predictions roll the prior *means* (the lab's ER code samples).

Command:  gvlab reproduce pvrnn/meta_prior --profile quick   (about 1 min on 2 CPU cores; full ~5 min)
Expected: every claim fails at these training lengths: the prior sigma does not fall monotonically with w (at
          the highest w it rises), P^(B|A) is not closest to 0.3 at the intermediate w, ER's gain over the ER-free
          rollout is bounded by the label oracle, and ER does not beat the VRNN; the prior sigma is still falling
          at the end of training for every w (figure prior_sigma). Measured: report.json; history: meta_prior.md.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.config import to_dict
from gvlab.data import pfsm
from gvlab.models import pvrnn as pvrnn_lib
from gvlab.models import vrnn as vrnn_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`pvrnn/meta_prior` settings.

    Attributes:
        pvrnn: PV-RNN architecture (its `meta_prior` is replaced by each value of `meta_priors`).
        vrnn: VRNN baseline architecture.
        er: error-regression settings (window H, iterations, lr, prediction horizon).
        meta_priors: the swept w, ascending (w^(1) = w).
        er_meta_prior: the w whose model is compared with and without ER and against the VRNN (P3).
        num_train: training sequences (full batch: `train.batch_size` must equal it).
        num_test: held-out test sequences for ER.
        length: steps per sequence.
        num_generated: free-generation runs per model (P1, P2).
        generate_length: steps of each free-generation run.
        adaptive_lr: Adam learning rate of the adaptive vectors (`train.lr` is that of the weights).
        template_tolerance: largest template MSE of a slot counted as a well-formed primitive (P2).
        train: optimisation settings shared by every fit.
    """

    pvrnn: pvrnn_lib.Config = pvrnn_lib.Config(hidden=(24,), latent=(2,), tau=(2.0,))
    vrnn: vrnn_lib.Config = vrnn_lib.Config(hidden=24, latent=2, features=16)
    er: pvrnn_lib.ERConfig = pvrnn_lib.ERConfig(window=10, iterations=30, lr=0.05, horizon=8)
    meta_priors: tuple[float, ...] = (1e-4, 5e-3, 0.5)
    er_meta_prior: float = 5e-3
    num_train: int = 24
    num_test: int = 8
    length: int = 96
    num_generated: int = 32
    generate_length: int = 500
    adaptive_lr: float = 3e-2
    template_tolerance: float = 0.05
    train: TrainConfig = TrainConfig(steps=6000, batch_size=24, lr=3e-3, num_seeds=5, log_every=250)


def _tag(w: float) -> str:
    return f"w{w:g}"


def pvrnn_scores(params, data, key, *, cfg: Config) -> dict:
    """Evaluator of one run: free generation (`generated` [G, L, D], mean prior sigma `sigma_prior`), ER
    predictions on the test sequences (`er_predictions` [N, P, K, D]) and the ER-free prior-mean rollout (`free`)."""
    model = pvrnn_lib.make_model(cfg.pvrnn, cfg.num_train, cfg.length, er=cfg.er)
    weights = params["weights"]
    gen_key, er_key = jax.random.split(key)
    generated, scales = jax.vmap(lambda k: model.generate(weights, k, cfg.generate_length))(
        jax.random.split(gen_key, cfg.num_generated))
    sigma_prior = jnp.mean(scales[:, 1:])  # t = 1 is the fixed N(0, I)
    er = jax.vmap(lambda x, k: model.error_regression(weights, x, k, data["meta_prior"], data["meta_prior_first"]))(
        data["test_x"], jax.random.split(er_key, data["test_x"].shape[0]))
    free, _ = model.generate(weights, key, cfg.length, stochastic=False)
    return {"generated": generated, "sigma_prior": sigma_prior, "er_predictions": er.predictions, "free": free}


def vrnn_predictions(params, data, key, *, cfg: Config) -> dict:
    """Evaluator of one VRNN run: filter, then roll the prior, from every window end (`[N, P, K, D]`)."""
    model = vrnn_lib.make_model(cfg.vrnn)
    return {"predictions": jax.vmap(lambda x: model.predict(params, x, data["ends"], cfg.er.horizon))(data["test_x"])}


def _column(history, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`(steps, values [steps, R])`: the logged values of `name` for every run of a fit."""
    steps, values = history.column(name)
    return steps, values.reshape(len(steps), -1)


def _targets(x: np.ndarray, ends: np.ndarray, horizon: int) -> np.ndarray:
    return x[:, ends[:, None] + np.arange(horizon)[None, :]]  # [N, P, K, D]


@experiment(
    "pvrnn/meta_prior",
    config=Config(),
    smoke={"pvrnn.hidden": (8,), "pvrnn.latent": (1,), "vrnn.hidden": 8, "vrnn.latent": 1, "vrnn.features": 4,
           "er.window": 4, "er.iterations": 2, "er.horizon": 4, "num_train": 8, "num_test": 2, "length": 32,
           "num_generated": 4, "generate_length": 48, "train.steps": 10, "train.batch_size": 8,
           "train.num_seeds": 2, "train.log_every": 5},
    quick={"train.steps": 1500, "train.num_seeds": 3, "generate_length": 300},
    claims=[
        Claim(statement="P1: the prior's mean sigma in free generation decreases strictly as the meta-prior w "
                        "grows over the sweep (1 = strictly decreasing; every seed)",
              metric="sigma_prior_monotone", op=">=", threshold=1.0, reduce="all",
              source="Ahmadi & Tani 2019, abstract; research notes Sec. 2(d) P1"),
        Claim(statement="P1 (ends): sigma_p(lowest w) - sigma_p(highest w) > 0, every seed",
              metric="sigma_prior_drop", op=">", threshold=0.0, reduce="all",
              source="Ahmadi & Tani 2019, abstract; research notes Sec. 2(d) P1"),
        Claim(statement="P2: the generated P^(B|A) is closest to the true 0.3 at the intermediate w "
                        "(margin = min over the other w of |P^ - 0.3| minus that at w = 5e-3; mean over seeds)",
              metric="p2_margin", op=">", threshold=0.0, reduce="mean",
              source="Ahmadi & Tani 2019, abstract (intermediate w generalises best); research notes Sec. 2(d) P2"),
        Claim(statement="P3: error regression predicts held-out continuations with at most half the error of "
                        "the same model without it (MSE ratio ER / no-ER, mean over seeds)",
              metric="er_over_free", op="<=", threshold=0.5, reduce="mean",
              source="research notes Sec. 2(d) P3 (ER, H = 10)"),
        Claim(statement="P3: error regression predicts better than the VRNN baseline (MSE ratio ER / VRNN < 1, "
                        "every seed)",
              metric="er_over_vrnn", op="<", threshold=1.0, reduce="all",
              source="Ahmadi & Tani 2019, abstract (ER vs VRNN, on robot data)"),
    ],
)
def pvrnn_meta_prior(cfg: Config, run) -> dict:
    """PV-RNN meta-prior sweep on PFSM sequences: prior sigma, transition statistics, and ER vs no-ER vs VRNN."""
    if cfg.train.batch_size != cfg.num_train:
        raise ValueError(f"full batch: train.batch_size ({cfg.train.batch_size}) must equal num_train "
                         f"({cfg.num_train})")
    if cfg.er_meta_prior not in cfg.meta_priors:
        raise ValueError(f"er_meta_prior {cfg.er_meta_prior} must be one of meta_priors {cfg.meta_priors}")
    train = pfsm.sample(run.key("pfsm/train"), cfg.num_train, cfg.length)
    test = pfsm.sample(run.key("pfsm/test"), cfg.num_test, cfg.length)
    test_x = np.asarray(test["x"])
    ends = np.arange(cfg.er.window, cfg.length - cfg.er.horizon + 1)
    targets = _targets(test_x, ends, cfg.er.horizon)

    method = pvrnn_lib.make(cfg.pvrnn, cfg.num_train, cfg.length)
    optimizer = pvrnn_lib.make_optimizer(cfg.train.lr, cfg.adaptive_lr)
    spec = Spec(method=method, optimizer=optimizer, data=pvrnn_lib.sequence_source(train["x"]),
                args=pvrnn_lib.meta_prior_args(cfg.meta_priors))
    result = run.fit(spec, name="pvrnn")
    scores = functools.partial(pvrnn_scores, cfg=cfg)
    steps, prior_scale = _column(result.history, "pvrnn/prior_scale")
    out, per_w = {}, {}
    for m, w in enumerate(cfg.meta_priors):
        tag, runs = _tag(w), result.runs_of(m)
        data = {"test_x": jnp.asarray(test_x), "meta_prior": jnp.float32(w), "meta_prior_first": jnp.float32(w)}
        got = run.evaluate(f"pvrnn_{tag}", scores, result.member_params(m), data, key=run.key("evaluate"),
                           extra=to_dict(cfg))
        generated, sigma_prior, er_pred, free = (got[k] for k in ("generated", "sigma_prior", "er_predictions", "free"))
        er_mse = np.mean(np.square(er_pred - targets[None]), axis=(1, 2, 3, 4))
        free_mse = np.mean(np.square(_targets(free, ends, cfg.er.horizon)[:, None] - targets[None]),
                           axis=(1, 2, 3, 4))
        p_hat, wellformed = [], []
        for seed_generated in generated:
            labels, errors = pfsm.segment(seed_generated)
            good = errors < cfg.template_tolerance
            counts = pfsm.transition_counts(labels, good)
            p_hat.append((counts[pfsm.A, pfsm.B] + 0.5) / (counts[pfsm.A, pfsm.B] + counts[pfsm.A, pfsm.C] + 1.0))
            wellformed.append(good.mean())
        per_w[w] = {"generated": generated, "er_pred": er_pred, "free": free, "steps": steps,
                    "prior_scale": prior_scale[:, runs]}
        out.update({f"sigma_prior_{tag}": sigma_prior, f"p_b_given_a_{tag}": np.asarray(p_hat),
                    f"wellformed_{tag}": np.asarray(wellformed), f"er_mse_{tag}": er_mse, f"free_mse_{tag}": free_mse,
                    f"er_over_free_{tag}": er_mse / free_mse,
                    f"train_mse_{tag}": _column(result.history, "pvrnn/mse")[1][-1, runs],
                    f"train_kl_{tag}": _column(result.history, "pvrnn/kl")[1][-1, runs]})
        run.log(f"w={w:g}: sigma_p {np.mean(sigma_prior):.3f}, P^(B|A) {np.mean(p_hat):.3f}, "
                f"ER/no-ER {np.mean(er_mse / free_mse):.3f}")

    vrnn_spec = Spec(method=vrnn_lib.make(cfg.vrnn), optimizer=optax.adam(cfg.train.lr),
                     data=pvrnn_lib.sequence_source(train["x"]))
    vrnn_result = run.fit(vrnn_spec, name="vrnn")
    vrnn_pred = run.evaluate("vrnn", functools.partial(vrnn_predictions, cfg=cfg), vrnn_result,
                             {"test_x": jnp.asarray(test_x), "ends": jnp.asarray(ends)},
                             extra=to_dict(cfg))["predictions"]
    vrnn_mse = np.mean(np.square(vrnn_pred - targets[None]), axis=(1, 2, 3, 4))

    sigmas = np.stack([out[f"sigma_prior_{_tag(w)}"] for w in cfg.meta_priors])  # [W, seeds]
    errors = np.abs(np.stack([out[f"p_b_given_a_{_tag(w)}"] for w in cfg.meta_priors]) - 0.3)
    mid = cfg.meta_priors.index(cfg.er_meta_prior)
    others = np.delete(errors, mid, axis=0)
    er_tag = _tag(cfg.er_meta_prior)
    oracle = pfsm.label_oracle_predictions(np.asarray(test["labels"]), ends, cfg.er.horizon)
    mode = pfsm.label_oracle_predictions(np.asarray(test["labels"]), ends, cfg.er.horizon, known=False)
    oracle_mse = float(np.mean(np.square(oracle - targets[..., 0])))
    mode_mse = float(np.mean(np.square(mode - targets[..., 0])))
    out.update({
        "sigma_prior_monotone": np.all(np.diff(sigmas, axis=0) < 0, axis=0).astype(np.float64),
        "sigma_prior_drop": sigmas[0] - sigmas[-1],
        "p2_margin": others.min(axis=0) - errors[mid],
        "er_mse": out[f"er_mse_{er_tag}"],
        "free_mse": out[f"free_mse_{er_tag}"],
        "vrnn_mse": vrnn_mse,
        "er_over_free": out[f"er_mse_{er_tag}"] / out[f"free_mse_{er_tag}"],
        "er_over_vrnn": out[f"er_mse_{er_tag}"] / vrnn_mse,
        "vrnn_train_mse": _column(vrnn_result.history, "vrnn/mse")[1][-1],
        "oracle_mse": oracle_mse,
        "mode_mse": mode_mse,
        "oracle_over_mode": oracle_mse / mode_mse,
        "data_p_b_given_a": pfsm.prob_b_given_a(np.asarray(train["labels"])),
    })
    run.log(f"ER {np.mean(out['er_mse']):.4f}, no-ER {np.mean(out['free_mse']):.4f}, VRNN {np.mean(vrnn_mse):.4f}, "
            f"label oracle {oracle_mse:.4f}, most-probable path {mode_mse:.4f}")
    _figures(cfg, run, per_w, out, test_x, ends, vrnn_pred)
    return out


def _figures(cfg: Config, run, per_w: dict, out: dict, test_x: np.ndarray, ends: np.ndarray,
             vrnn_pred: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    shown = min(cfg.generate_length, 160)
    fig, axes = plt.subplots(len(cfg.meta_priors), 1, figsize=(10, 1.9 * len(cfg.meta_priors)), sharex=True,
                             squeeze=False)
    for ax, w in zip(axes[:, 0], cfg.meta_priors):
        for i in range(min(3, cfg.num_generated)):
            ax.plot(per_w[w]["generated"][0, i, :shown, 0], lw=1)
        ax.set_title(f"w = {w:g}: free generation (seed 0), sigma_p = {np.mean(out[f'sigma_prior_{_tag(w)}']):.3f}, "
                     f"P^(B|A) = {np.mean(out[f'p_b_given_a_{_tag(w)}']):.2f}", fontsize=9)
    axes[-1, 0].set_xlabel("t")
    fig.tight_layout()
    run.figure("generated_sequences", fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    sigmas = np.stack([out[f"sigma_prior_{_tag(w)}"] for w in cfg.meta_priors])
    for seed in range(sigmas.shape[1]):
        axes[0].plot(cfg.meta_priors, sigmas[:, seed], "o-", alpha=0.5, label=f"seed {seed}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("meta-prior w")
    axes[0].set_ylabel("mean prior sigma (free generation)")
    axes[0].legend(fontsize=7)
    for w in cfg.meta_priors:
        axes[1].plot(per_w[w]["steps"], per_w[w]["prior_scale"].mean(axis=1), label=f"w = {w:g}")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("prior sigma (posterior pass)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    run.figure("prior_sigma", fig)

    er_w = cfg.er_meta_prior
    er_pred, free = per_w[er_w]["er_pred"][0, 0], per_w[er_w]["free"][0]
    horizon = cfg.er.horizon
    fig, axes = plt.subplots(4, 1, figsize=(10, 8))
    for ax, (name, pred) in zip(axes[:3], [("ER", er_pred), ("no ER (prior rollout)", None),
                                           ("VRNN", vrnn_pred[0, 0])]):
        ax.plot(test_x[0, :, 0], color="black", lw=1, label="truth")
        for j in range(0, len(ends), horizon):
            e = ends[j]
            t = np.arange(e, e + horizon)
            ax.plot(t, free[t, 0] if pred is None else pred[j, :, 0], color="C3", lw=1.2)
        ax.set_title(f"{name}: {horizon}-step predictions from every {horizon}th window end (test sequence 0, "
                     f"seed 0)", fontsize=9)
    targets = _targets(test_x, ends, horizon)[None]  # [1, N, P, K, D]
    per_step = {
        "ER": np.mean(np.square(per_w[er_w]["er_pred"] - targets), axis=(0, 1, 2, 4)),
        "no ER": np.mean(np.square(_targets(per_w[er_w]["free"], ends, horizon)[:, None] - targets),
                         axis=(0, 1, 2, 4)),
        "VRNN": np.mean(np.square(vrnn_pred - targets), axis=(0, 1, 2, 4)),
    }
    for name, values in per_step.items():
        axes[3].plot(np.arange(1, horizon + 1), values, "o-", label=name)
    axes[3].set_xlabel("steps ahead")
    axes[3].set_ylabel("MSE")
    axes[3].set_title(f"prediction error by horizon (PV-RNN w = {er_w:g}; mean over seeds and test sequences)",
                      fontsize=9)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    run.figure("prediction", fig)
