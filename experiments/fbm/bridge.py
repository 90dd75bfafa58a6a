"""`fbm/bridge`: the fractional Brownian bridge of Daems et al. (ICLR 2024), Sec. 5.1 / Fig. 3 with theta = 0.

Prior dX = s dB^H (MA-fBM, K = 5, gamma_max = 20, type I; s makes Var X_1 = 1, i.e. standard fBM), X_0 = 0,
one observation X_2 = 0 with noise 0.1. A control u_phi(t, X, Y) (MLP 2x128, tanh, zero-initialised output) is
trained on the ELBO; its posterior std over time is compared with the analytic conditional std of fBM,

    Var(X_t | o) = k(t, t) - k(t, 2)^2 / (k(2, 2) + 0.1^2),   k(t, s) = (t^2H + s^2H - |t - s|^2H) / 2,

(and, reported too, of the MA-fBM prior itself, which is what the posterior can reach exactly).

The model is `gvlab.models.fractional_sde.make` (observation X_T with noise 0.1, no context), one fit per H
(H is a setting of the model, fixed at initialisation): the values of H are a declared sweep, one point each; the
posterior std is an evaluator through `run.evaluate`.

Command:  gvlab reproduce fbm/bridge --profile quick   (3 seeds x 800 steps, under 2 min on 2 CPU cores)
Sweep:    gvlab sweep fbm/bridge --list; gvlab sweep fbm/bridge --index I (one H per task), then reproduce gathers
Expected: all claims hold, in quick and full (2000 steps, smaller std errors). Measured values: report.json;
          earlier runs: bridge.md beside this file.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.registry import Sweep
from gvlab.config import to_dict
from gvlab.data import sampled_batches
from gvlab.models import fractional_sde
from gvlab.sde import fractional

EVAL_TIMES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`fbm/bridge` settings.

    Attributes:
        hursts: Hurst indices, one fit each.
        num_terms, gamma_max, kind: the MA-fBM approximation.
        horizon: T, the time of the observation.
        num_steps: Euler steps on [0, T] (gamma_max * T / num_steps < 0.5 for stability).
        obs_noise: standard deviation of the observation noise.
        hidden: control MLP widths.
        eval_samples: posterior paths per seed for the std estimate.
        train: optimisation (batch = paths per step).
    """

    hursts: tuple[float, ...] = (0.3, 0.7)
    num_terms: int = 5
    gamma_max: float = 20.0
    kind: Literal["type1", "type2"] = "type1"
    horizon: float = 2.0
    num_steps: int = 100
    obs_noise: float = 0.1
    hidden: tuple[int, ...] = (128, 128)
    eval_samples: int = 1000
    train: TrainConfig = TrainConfig(steps=2000, batch_size=64, lr=1e-3, num_seeds=3, log_every=50,
                                     ckpt_every=500)


def model_config(cfg: Config, hurst: float) -> fractional_sde.Config:
    return fractional_sde.Config(dim=1, num_terms=cfg.num_terms, gamma_max=cfg.gamma_max, kind=cfg.kind,
                                 omega_horizon=cfg.horizon, hurst=hurst, hidden=cfg.hidden)


def observations(cfg: Config) -> fractional_sde.Observations:
    return fractional_sde.Observations(horizon=cfg.horizon, num_steps=cfg.num_steps, noise=cfg.obs_noise)


def make_spec(cfg: Config, hurst: float) -> Spec:
    """Negative ELBO of the bridge observation X_T = 0; fresh Brownian paths every step (the data are the noise)."""
    method = fractional_sde.make(model_config(cfg, hurst), observations(cfg))
    data = sampled_batches(lambda key: {"obs": jnp.zeros((cfg.train.batch_size, 1, 1))})
    return Spec(method=method, optimizer=optax.adam(cfg.train.lr), data=data)


def analytic_std(cfg: Config, hurst: float, covariance: np.ndarray) -> np.ndarray:
    """Conditional std of X_t given the noisy endpoint, at `EVAL_TIMES`, for a covariance on [t..., T]."""
    k_tt, k_tT, k_TT = np.diag(covariance)[:-1], covariance[:-1, -1], covariance[-1, -1]
    return np.sqrt(k_tt - k_tT**2 / (k_TT + cfg.obs_noise**2))


def covariances(cfg: Config, hurst: float) -> tuple[np.ndarray, np.ndarray]:
    """(standard fBM covariance, covariance of the scaled MA-fBM prior) on EVAL_TIMES + (T,)."""
    ts = jnp.asarray(EVAL_TIMES + (cfg.horizon,), jnp.float32)
    model = fractional_sde.make_model(model_config(cfg, hurst))
    coef = model.coefficients(model.init(jax.random.key(0)))
    scale2 = coef.scale**2
    exact = scale2 * fractional.fbm_covariance(ts, coef.hurst, cfg.kind)
    approx = scale2 * fractional.mafbm_covariance(ts, coef.hurst, coef.gammas, coef.omegas, cfg.kind)
    return np.asarray(exact, np.float64), np.asarray(approx, np.float64)


def posterior_std(params, data, key, *, cfg: Config) -> dict:
    """Evaluator of one run: std over `eval_samples` posterior paths at EVAL_TIMES (`std` [times]) and 64 paths.

    H is read from the parameters (`hurst_logit`), so one evaluator serves every H.
    """
    del data
    model = fractional_sde.make_model(model_config(cfg, 0.5))
    dt = cfg.horizon / cfg.num_steps
    index = np.rint(np.asarray(EVAL_TIMES) / dt).astype(int)
    keys = jax.random.split(key, cfg.eval_samples)
    xs = jax.vmap(lambda k: model.sample(params, k, jnp.zeros((1,)), jnp.zeros((cfg.num_steps, 0)), cfg.num_steps,
                                         dt).ys[:, 0, 0])(keys)
    return {"std": jnp.std(xs[:, index], axis=0), "paths": xs[:64]}


def train_point(cfg: Config, run, point: dict, index: int) -> dict:
    """One H of the sweep: its fit, the posterior std against the analytic bridge, and 20 paths for the figure."""
    del index
    hurst = point["hurst"]
    tag = f"H{hurst:g}"
    fit = run.fit(make_spec(cfg, hurst), name=tag)
    scores = run.evaluate(f"posterior_std_{tag}", functools.partial(posterior_std, cfg=cfg), fit,
                          key=run.key(f"eval-{tag}"), extra=to_dict(cfg))
    std, paths = scores["std"], scores["paths"]
    exact, approx = covariances(cfg, hurst)
    target, target_approx = analytic_std(cfg, hurst, exact), analytic_std(cfg, hurst, approx)
    run.log(f"{tag}: posterior std {np.round(std.mean(0), 3)} vs analytic {np.round(target, 3)}")
    return {f"std_rel_error_{tag}": np.mean(np.abs(std - target) / target, axis=1),
            f"std_rel_error_vs_mafbm_{tag}": np.mean(np.abs(std - target_approx) / target_approx, axis=1),
            f"std_t1_{tag}": std[:, EVAL_TIMES.index(1.0)],
            f"analytic_std_t1_{tag}": float(target[EVAL_TIMES.index(1.0)]),
            f"final_elbo_{tag}": fit.history.last("elbo/elbo"),
            "band": {"std": std, "target": target, "target_approx": target_approx, "paths": paths[:, :20]}}


SWEEP = Sweep(points=lambda cfg: [{"hurst": hurst} for hurst in cfg.hursts], run=train_point)


@experiment(
    "fbm/bridge",
    config=Config(),
    smoke={"hidden": (16,), "num_steps": 50, "eval_samples": 64, "train.steps": 10, "train.batch_size": 8,
           "train.num_seeds": 2, "train.log_every": 5, "train.ckpt_every": 5},
    quick={"train.steps": 800, "train.num_seeds": 3},
    claims=[
        Claim(statement="The learned posterior std over time matches the analytic conditional std of the fBM "
                        "bridge, H = 0.3 (mean relative error <= 0.2, every seed)",
              metric="std_rel_error_H0.3", op="<=", threshold=0.2, reduce="all",
              source="Daems et al. 2024, Sec. 5.1 and Fig. 3 (bridge); threshold from the mini-experiment design"),
        Claim(statement="Same for H = 0.7", metric="std_rel_error_H0.7", op="<=", threshold=0.2, reduce="all",
              source="Daems et al. 2024, Sec. 5.1 and Fig. 3"),
        Claim(statement="The rough (H = 0.3) bridge is wider than the smooth (H = 0.7) one at t = 1 "
                        "(std difference > 0.1; analytic 0.79 vs 0.58)",
              metric="std_gap_t1", op=">", threshold=0.1, reduce="all", paper="0.21 (analytic)",
              source="Daems et al. 2024, Fig. 3"),
    ],
    sweep=SWEEP,
)
def fbm_bridge(cfg: Config, run) -> dict:
    """Fractional Brownian bridge: learned posterior std vs the analytic conditional std, H = 0.3 and 0.7."""
    results, bands = {}, {}
    for point in run.gather():  # one per H: finished ones (`gvlab sweep fbm/bridge --index i`) are loaded
        band = point["results"].pop("band")
        bands[point["point"]["hurst"]] = tuple(np.asarray(band[k]) for k in ("std", "target", "target_approx",
                                                                                "paths"))
        results.update(point["results"])
    low, high = min(cfg.hursts), max(cfg.hursts)
    # float32 as the evaluator returned them (JSON keeps their exact values), so the gap rounds as it always did
    results["std_gap_t1"] = np.float32(results[f"std_t1_H{low:g}"]) - np.float32(results[f"std_t1_H{high:g}"])
    _figures(cfg, run, bands)
    return results


def _figures(cfg: Config, run, bands) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bands), figsize=(5 * len(bands), 3.5), squeeze=False)
    ts = np.linspace(0, cfg.horizon, cfg.num_steps + 1)
    for ax, (hurst, (std, target, target_approx, paths)) in zip(axes[0], bands.items()):
        for path in paths[0, :20]:
            ax.plot(ts, path, color="0.7", lw=0.6)
        times = np.asarray(EVAL_TIMES)
        ax.fill_between(times, -target, target, alpha=0.25, label="analytic fBM ±1 std")
        ax.plot(times, target_approx, "k--", lw=1, label="analytic MA-fBM std")
        ax.errorbar(times, std.mean(0), yerr=std.std(0), fmt="o", color="C3", label="learned posterior std")
        ax.plot(times, -std.mean(0), "o", color="C3")
        ax.set_title(f"H = {hurst:g}")
        ax.set_xlabel("t")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("fractional Brownian bridge: posterior samples and std, X_0 = 0, X_2 = 0 (noise 0.1)")
    fig.tight_layout()
    run.figure("bridge_bands", fig)
