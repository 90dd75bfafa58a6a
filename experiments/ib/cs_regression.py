"""`ib/cs_regression`: Cauchy-Schwarz divergence information bottleneck for regression (Yu, Yu, Lokse, Jenssen &
Principe, ICLR 2024, arXiv 2404.17951; issue 17) against VIB and plain MSE.

Setting (notes sec. 9(d), fixed before the claim runs; `gvlab.ib`): two data sets, each a set of replicates.
  synthetic  x ~ N(0, I_5), y = sin(2 x1) + x2^2 / 2 + x3 x4 + eps, eps ~ 0.8 N(0, 0.1^2) + 0.2 N(0, 1)
             (contaminated, heavy-tailed); per replicate a fresh draw of 1500 (1200 train, 300 validation) and
             10000 fresh test points. Bayes predictor f(x): its test RMSE, sqrt(E eps^2) = 0.456, is the ceiling.
  diabetes   sklearn's bundled load_diabetes (442 x 10), random 60/20/20 splits per replicate, x and y
             standardised with the training split's statistics.
Network x -> 64 -> 64 -> t (16) -> 64 -> y_hat (ReLU), Adam 1e-3, batch 128, 300 epochs, the parameters with the
best validation RMSE kept (`TrainState.extra`; the official script selects on the test set). Members of one program
per data set (`Spec.args`, replicate-major within a variant): MSE; VIB (beta 1e-3, stochastic t, KL to N(0, I));
CS-IB with the paper's estimator (Proposition 1) for every kernel width sigma in `cs_sigmas` and beta in `betas`,
penalising the normalised CS-QMI I(x; t) as the official code does (sigma 1 for both terms, CS_IB_Housing.py:225-228);
CS-IB with the official `CS_Div` estimator (sigma 1, beta 1e-2), reported. "CS-IB" in the claims is, per replicate,
the sigma = 1 paper-estimator member with the lowest validation RMSE over beta (the design fixed before the first
run). sigma = 0.5 joined the grid after that run: its validation-selected result is reported, never claimed.

Claims (issue 17, fixed before any run): synthetic mean test RMSE(CS-IB) < MSE; diabetes mean test RMSE(CS-IB)
<= 1.03 x MSE. Reported: every member's RMSE (mean, spread), VIB, the noise floor, RMSE against f(x); RMSE under
PGD (L-infinity on the standardised inputs, eps in `eps`, `attack_steps` steps of eps / 4, random start, per-example
squared error as the official `PGD`); the information plane I_CS(x; t) vs I_CS(t; y) and the generalisation gap.

Command:  gvlab reproduce ib/cs_regression --profile quick
Shows:    the two claims, a table per data set, figures: validation curves, test RMSE per member, RMSE vs eps,
          the information plane. Measured values: report.json / report.md, not here.
Runtime:  quick (3 replicates) a few minutes on 2 CPU cores; full (5 replicates) about twice that.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.errors import ConfigError
from gvlab.ib import data as ib_data
from gvlab.ib import evaluation, regression
from gvlab.train.parallel import data_mesh

DATASETS = ("synthetic", "diabetes")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`ib/cs_regression` settings.

    Attributes:
        datasets: data sets to run, from `DATASETS` (the claims need both).
        replicates: synthetic draws / diabetes splits; every variant trains on each (members of one fit).
        num_train, num_val, num_test: synthetic sizes per replicate.
        epochs: passes over each training split (steps = epochs x floor(n_train / batch)).
        cs_sigmas, betas: the CS-IB (paper estimator) grid, selected per replicate on validation RMSE.
        vib_beta: VIB's KL weight. code_beta: beta of the official-estimator member (sigma 1).
        eps: PGD radii (standardised input units). attack_steps, attack_examples: PGD steps and test points.
        plane_examples: training points for the information plane estimates.
        model: the network and the QMI kernel (`gvlab.ib.regression.Config`).
        train: batch size, lr, seed, logging (`steps` is set from `epochs`).
    """

    datasets: tuple[str, ...] = DATASETS
    replicates: int = 5
    num_train: int = 1200
    num_val: int = 300
    num_test: int = 10000
    epochs: int = 300
    cs_sigmas: tuple[float, ...] = (1.0, 0.5)  # must hold 1.0: the claims read it
    betas: tuple[float, ...] = (0.0, 1e-3, 1e-2)
    vib_beta: float = 1e-3
    code_beta: float = 1e-2
    eps: tuple[float, ...] = (0.1, 0.2, 0.3)
    attack_steps: int = 20
    attack_examples: int = 1000
    plane_examples: int = 500
    model: regression.Config = regression.Config()
    train: TrainConfig = TrainConfig(steps=1, batch_size=128, lr=1e-3, log_every=10)


def members(cfg: Config) -> list[tuple[str, float, float]]:
    """The variants of every fit: (variant, beta, sigma)."""
    grid = [("cs_ib", b, s) for s in cfg.cs_sigmas for b in cfg.betas]
    return [("mse", 0.0, 1.0), ("vib", cfg.vib_beta, 1.0)] + grid + [("cs_ib_code", cfg.code_beta, 1.0)]


def label(member: tuple[str, float, float]) -> str:
    variant, beta, sigma = member
    return {"mse": "MSE", "vib": f"VIB b={beta:g}", "cs_ib": f"CS-IB s={sigma:g} b={beta:g}",
            "cs_ib_code": f"CS-IB code s={sigma:g} b={beta:g}"}[variant]


def replicates(cfg: Config, name: str, key) -> dict[str, np.ndarray]:
    """Per-replicate splits `{train_x, train_y, val_x, val_y, test_x, test_y[, test_f]}`, leaves [P, ...]."""
    if name == "diabetes":
        return ib_data.diabetes_splits(cfg.train.seed, cfg.replicates)
    if name != "synthetic":
        raise ConfigError(f"unknown data set {name!r}; choose from {list(DATASETS)}")
    out: dict[str, list] = {}
    n = cfg.num_train
    for p in range(cfg.replicates):
        draw = ib_data.heavy_tailed(jax.random.fold_in(key, 2 * p), n + cfg.num_val)
        test = ib_data.heavy_tailed(jax.random.fold_in(key, 2 * p + 1), cfg.num_test)
        parts = {"train_x": draw["x"][:n], "train_y": draw["y"][:n], "val_x": draw["x"][n:], "val_y": draw["y"][n:],
                 "test_x": test["x"], "test_y": test["y"], "test_f": test["f"]}
        for k, v in parts.items():
            out.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.stack(v) for k, v in out.items()}


def run_dataset(cfg: Config, run, name: str) -> tuple[dict, dict]:
    """Fit every member on every replicate of `name` (one program) and evaluate; returns (results, curves)."""
    arrays = replicates(cfg, name, run.key(f"data/{name}"))
    grid, reps = members(cfg), cfg.replicates
    tiled = {k: np.tile(v, (len(grid),) + (1,) * (v.ndim - 1)) for k, v in arrays.items()}  # run = v * P + p
    source = ib_data.regression_source(tiled["train_x"], tiled["train_y"], tiled["val_x"], tiled["val_y"],
                                       cfg.train.batch_size)
    spec = Spec(regression.make(cfg.model), optax.adam(cfg.train.lr), source,
                args=regression.stack_args([m for m in grid for _ in range(reps)]))
    per_epoch = arrays["train_x"].shape[1] // cfg.train.batch_size
    train = dataclasses.replace(cfg.train, steps=cfg.epochs * per_epoch, num_seeds=1,
                                log_every=min(cfg.train.log_every, per_epoch))  # a curve point every epoch
    result = run.fit(spec, train, name=name, mesh=data_mesh(1))
    inputs = {"params": regression.selected_params(result),
              **{k: v for k, v in tiled.items() if not k.startswith("val")}}
    evaluator = functools.update_wrapper(functools.partial(
        evaluation.evaluate, cfg=cfg.model, eps=cfg.eps, attack_steps=cfg.attack_steps,
        attack_examples=cfg.attack_examples, plane_examples=cfg.plane_examples), evaluation.evaluate)
    scores = run.evaluate(f"scores/{name}", evaluator, inputs, key=run.key(f"attack/{name}"),
                          extra=repr((cfg.model, cfg.eps, cfg.attack_steps, cfg.attack_examples)))
    shape = (len(grid), reps)
    scores = {k: np.asarray(v).reshape(shape + np.shape(v)[1:]) for k, v in scores.items()}
    best_val = np.asarray(result.state.extra["val_rmse"]).reshape(shape)
    out = {"best_step": np.asarray(result.state.extra["step"]).reshape(shape), "best_val_rmse": best_val}
    out.update(scores)
    # CS-IB = per replicate the paper-estimator member with the lowest validation RMSE.
    cs_rows = np.asarray([i for i, m in enumerate(grid) if m[0] == "cs_ib"])
    chosen = cs_rows[np.argmin(best_val[cs_rows], axis=0)]  # [P]
    pick = {k: v[chosen, np.arange(reps)] for k, v in scores.items()}
    mse_row, vib_row, code_row = 0, 1, len(grid) - 1
    res = {"cs_ib/test_rmse": pick["test_rmse"], "cs_ib/adv_rmse": pick["adv_rmse"],
           "cs_ib/chosen_member": chosen,
           "mse/test_rmse": scores["test_rmse"][mse_row], "vib/test_rmse": scores["test_rmse"][vib_row],
           "cs_ib_code/test_rmse": scores["test_rmse"][code_row],
           "mse/adv_rmse": scores["adv_rmse"][mse_row], "vib/adv_rmse": scores["adv_rmse"][vib_row],
           "cs_ib_grid_minus_mse": pick["test_rmse"] - scores["test_rmse"][mse_row],
           "members": {label(m): {k: v[i] for k, v in out.items()} for i, m in enumerate(grid)}}
    for sigma in cfg.cs_sigmas:  # the same selection within one kernel width (sigma 1: the official setting)
        rows = np.asarray([i for i, m in enumerate(grid) if m[0] == "cs_ib" and m[2] == sigma])
        within = rows[np.argmin(best_val[rows], axis=0)]
        res[f"cs_ib_sigma{sigma:g}/test_rmse"] = scores["test_rmse"][within, np.arange(reps)]
        res[f"cs_ib_sigma{sigma:g}/minus_mse"] = res[f"cs_ib_sigma{sigma:g}/test_rmse"] - scores["test_rmse"][mse_row]
    # The claims read the design fixed before the first run: sigma = 1 (notes 9(d), the official setting), beta on
    # validation. The wider sigma grid was added after that run had failed: reported, never claimed (ib/cs_regression.md).
    official = res["cs_ib_sigma1/test_rmse"]
    res["cs_ib_minus_mse"] = official - scores["test_rmse"][mse_row]
    res["cs_ib_over_mse"] = official.mean() / scores["test_rmse"][mse_row].mean()
    if "test_rmse_f" in scores:
        res.update({"noise_floor_rmse": ib_data.noise_floor_rmse(), "cs_ib/test_rmse_f": pick["test_rmse_f"],
                    "mse/test_rmse_f": scores["test_rmse_f"][mse_row]})
    gap = scores["test_rmse"] - scores["train_rmse"]  # [V, P]
    res["corr_i_xt_gap"] = np.corrcoef(scores["i_xt"].reshape(-1), gap.reshape(-1))[0, 1]
    for i, m in enumerate(grid):
        run.log(f"{name} {label(m):24s} test RMSE {scores['test_rmse'][i].mean():.4f} +- "
                f"{scores['test_rmse'][i].std():.4f}  PGD {np.round(scores['adv_rmse'][i].mean(0), 3)}  "
                f"I(x;t) {scores['i_xt'][i].mean():.3f}  best step {out['best_step'][i]}")
    run.log(f"{name}: CS-IB (validation-selected: {[label(grid[c]) for c in chosen]}) "
            f"{pick['test_rmse'].mean():.4f} vs MSE {scores['test_rmse'][mse_row].mean():.4f}, "
            f"VIB {scores['test_rmse'][vib_row].mean():.4f}")
    curves = {"history": result.history.rows, "scores": scores, "grid": grid, "reps": reps}
    return res, curves


@experiment(
    "ib/cs_regression",
    config=Config(),
    smoke={"replicates": 2, "num_train": 128, "num_val": 32, "num_test": 64, "epochs": 2, "cs_sigmas": (1.0,),
           "betas": (0.0, 1e-2), "eps": (0.1,), "attack_steps": 2, "attack_examples": 16, "plane_examples": 32,
           "model.hidden": (8,), "model.bottleneck": 4, "model.decoder_hidden": (8,), "train.batch_size": 64,
           "train.log_every": 1},
    quick={"replicates": 3},
    claims=[
        Claim(statement="Heavy-tailed synthetic regression: CS-IB's test RMSE is below MSE's (mean over "
                        "replicates of RMSE(CS-IB) - RMSE(MSE) < 0)",
              metric="synthetic/cs_ib_minus_mse", op="<", threshold=0.0,
              source="issue 17; notes sec. 9(d); Yu et al. 2024, Sec. 5 (robust to non-Gaussian noise)"),
        Claim(statement="Diabetes: CS-IB is not worse than MSE: mean RMSE(CS-IB) <= 1.03 x mean RMSE(MSE)",
              metric="diabetes/cs_ib_over_mse", op="<=", threshold=1.03,
              source="issue 17; notes sec. 9(d) (non-inferiority; the paper's margins are 1-4%)"),
    ],
)
def cs_regression(cfg: Config, run) -> dict:
    """CS-IB vs VIB vs MSE: test RMSE, PGD RMSE and the information plane on synthetic and diabetes data."""
    results, curves = {}, {}
    for name in cfg.datasets:
        res, curves[name] = run_dataset(cfg, run, name)
        results.update({f"{name}/{k}": v for k, v in res.items()})
    _figures(cfg, run, curves)
    return results


def _figures(cfg: Config, run, curves: dict) -> None:
    import matplotlib.pyplot as plt

    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        for i, m in enumerate(c["grid"]):
            rows = [r for r in c["history"] if c["reps"] * i <= r.get("member", 0) < c["reps"] * (i + 1)]
            steps = sorted({r["step"] for r in rows})
            value = [np.mean([r["select/val_rmse"] for r in rows if r["step"] == s]) for s in steps]
            ax.plot(steps, value, color=f"C{i}", lw=1, label=label(m))
        ax.set(xlabel="step", ylabel="validation RMSE (mean over replicates)", title=name, yscale="log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    run.figure("validation_curves", fig)

    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        rmse = c["scores"]["test_rmse"]
        ax.errorbar(np.arange(len(c["grid"])), rmse.mean(1), yerr=rmse.std(1), fmt="o", capsize=3)
        if name == "synthetic":
            ax.axhline(ib_data.noise_floor_rmse(), color="k", ls="--", lw=0.8, label="noise floor (Bayes f)")
            ax.legend(fontsize=7)
        ax.set_xticks(np.arange(len(c["grid"])), [label(m) for m in c["grid"]], rotation=70, fontsize=6)
        ax.set(ylabel="test RMSE", title=name)
    fig.tight_layout()
    run.figure("test_rmse", fig)

    fig, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 7.2), squeeze=False)
    for col, name in enumerate(names):
        c = curves[name]
        s = c["scores"]
        for i, m in enumerate(c["grid"]):
            adv = np.concatenate([s["clean_rmse_attacked"][i][:, None], s["adv_rmse"][i]], axis=1).mean(0)
            axes[0, col].plot((0.0,) + tuple(cfg.eps), adv, marker="o", color=f"C{i}", lw=1, label=label(m))
            axes[1, col].scatter(s["i_xt"][i], s["i_ty"][i], color=f"C{i}", s=14, label=label(m))
        axes[0, col].set(xlabel="PGD eps (L-inf, standardised x)", ylabel="test RMSE under attack", title=name)
        axes[1, col].set(xlabel="I_CS(x; t) (normalised)", ylabel="I_CS(t; y) (normalised)",
                         title=f"{name}: information plane (training points)")
        axes[0, col].legend(fontsize=6)
    fig.tight_layout()
    run.figure("adversarial_and_information_plane", fig)
