"""`fbm/approximation`: how well K Ornstein-Uhlenbeck processes approximate fBM (Daems et al., ICLR 2024, Sec. 3).

No training. For each Hurst index: (1) the closed-form time-averaged error E int_0^T (B^H - B_hat^H)^2 dt of the
optimal coefficients omega (A omega = b, Prop. 3 of the paper) against the quadrature ("Riemann") baseline;
(2) MA-fBM paths simulated with the SDE solver (Euler, dt = 1e-3, one shared W per path), whose empirical
covariance on a 20-point grid of (0, T] is compared with the exact covariance of the target process.

Command:  gvlab reproduce fbm/approximation --profile quick   (about 30 s on 2 shared CPU cores, full 45 s)
Expected: both judged claims hold: optimal omega beats quadrature for every H, and the simulated covariance
          matches the closed-form MA-fBM covariance (`cov_error_solver`: Monte Carlo and Euler error only). The
          retired claim (simulated vs fBM covariance <= 0.15) fails at H = 0.8 only, where the closed-form MA-fBM
          covariance (`cov_error_analytic`, the ceiling) is itself as far from fBM: K = 5, gamma_max = 20 cannot
          reach 0.15 there, whatever the number of simulated paths.
          Measured values: report.json; earlier runs and the diagnosis: experiments/fbm/approximation.md.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from gvlab import Claim, TrainConfig, experiment
from gvlab.config import to_dict
from gvlab.sde import fractional
from gvlab.sde.mafbm import sample_paths


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`fbm/approximation` settings.

    Attributes:
        hursts: Hurst indices to evaluate.
        num_terms, gamma_max, kind: the MA-fBM approximation (K, grid span, type I or II).
        horizon: T.
        num_steps: Euler steps on [0, T].
        num_paths: simulated paths per Hurst index.
        grid_points: covariance grid size on (0, T].
        train: only `seed` is used (no optimisation here).
    """

    hursts: tuple[float, ...] = (0.2, 0.35, 0.65, 0.8)
    num_terms: int = 5
    gamma_max: float = 20.0
    kind: Literal["type1", "type2"] = "type1"
    horizon: float = 1.0
    num_steps: int = 1000
    num_paths: int = 20000
    grid_points: int = 20
    train: TrainConfig = TrainConfig(steps=1)


def covariances(cfg: Config, key) -> dict[str, np.ndarray]:
    """Per Hurst index: the errors of optimal and Riemann omega, and the exact, closed-form MA-fBM and simulated
    covariances on the grid (`num_paths` paths of B_hat^H, path key `fold_in(key, i)` for the i-th H)."""
    gammas = fractional.gamma_grid(cfg.num_terms, cfg.gamma_max)
    ts = jnp.linspace(cfg.horizon / cfg.grid_points, cfg.horizon, cfg.grid_points)
    out: dict[str, list] = {"error_optimal": [], "error_riemann": [], "exact": [], "analytic": [], "empirical": []}
    for i, hurst in enumerate(cfg.hursts):
        h = jnp.asarray(hurst, jnp.float32)
        optimal = fractional.optimal_coefficients(h, gammas, cfg.horizon, cfg.kind)
        riemann = fractional.riemann_coefficients(h, gammas)
        out["error_optimal"].append(float(fractional.approximation_error(h, gammas, optimal, cfg.horizon, cfg.kind)))
        out["error_riemann"].append(float(fractional.approximation_error(h, gammas, riemann, cfg.horizon, cfg.kind)))
        out["exact"].append(np.asarray(fractional.fbm_covariance(ts, h, cfg.kind), np.float64))
        out["analytic"].append(np.asarray(fractional.mafbm_covariance(ts, h, gammas, optimal, cfg.kind), np.float64))
        paths = sample_paths(jax.random.fold_in(key, i), gammas, optimal, num_paths=cfg.num_paths, kind=cfg.kind,
                             num_steps=cfg.num_steps, dt=cfg.horizon / cfg.num_steps,
                             save_every=cfg.num_steps // cfg.grid_points)
        out["empirical"].append(np.cov(np.asarray(paths, np.float64), rowvar=False))
    return {name: np.asarray(values) for name, values in out.items()}


def relative_frobenius(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@experiment(
    "fbm/approximation",
    config=Config(),
    smoke={"hursts": (0.3, 0.7), "num_steps": 200, "num_paths": 500, "grid_points": 10},
    quick={"num_paths": 4000},
    claims=[
        Claim(statement="The optimal coefficients beat the quadrature baseline in time-averaged squared error, "
                        "for every Hurst index (ratio optimal / quadrature < 1)",
              metric="error_ratio_max", op="<", threshold=1.0,
              source="Daems et al. 2024, Sec. 3 (optimal omega vs Riemann discretisation)"),
        Claim(statement="The empirical covariance of simulated MA-fBM paths matches the exact covariance "
                        "(relative Frobenius error <= 0.15 for every Hurst index)",
              metric="cov_error_max", op="<=", threshold=0.15,
              source="notes' mini-experiment E1 (K = 5, gamma_max = 20, T = 1)",
              retired="unreachable (issue 16): the threshold is the notes', not the paper's, and the measured "
                      "ceiling, the closed-form MA-fBM covariance itself (no simulation), is 0.245 from the fBM "
                      "covariance at H = 0.8 with K = 5, gamma_max = 20 (cov_error_analytic_max); last measured "
                      "0.247 (quick), 0.238 (full). Replaced by the simulation against the closed-form MA-fBM "
                      "covariance (cov_error_solver_max); the approximation error stays reported as a ceiling"),
        Claim(statement="The empirical covariance of simulated MA-fBM paths matches the closed-form covariance of "
                        "the MA-fBM process they simulate (Prop. 3 coefficients; relative Frobenius error <= 0.15 "
                        "for every Hurst index); the closed-form MA-fBM vs fBM error (cov_error_analytic_max) is "
                        "reported beside it as the ceiling of any simulation against fBM",
              metric="cov_error_solver_max", op="<=", threshold=0.15,
              source="issue 16 (fixed before the run); notes' mini-experiment E1 bound; Daems et al. 2024, Sec. 3"),
    ],
)
def fbm_approximation(cfg: Config, run) -> dict:
    """MA-fBM approximation quality: optimal vs quadrature omega, and simulated vs exact covariance."""
    import matplotlib.pyplot as plt

    key = run.key("paths")
    cov = run.artifact("covariances", lambda: covariances(cfg, key), inputs=(to_dict(cfg), key))
    results = {"error_optimal": cov["error_optimal"], "error_riemann": cov["error_riemann"]}
    for name, (a, b) in {"cov_error": ("empirical", "exact"), "cov_error_analytic": ("analytic", "exact"),
                         "cov_error_solver": ("empirical", "analytic")}.items():
        results[name] = np.asarray([relative_frobenius(x, y) for x, y in zip(cov[a], cov[b])])
    ts = np.linspace(cfg.horizon / cfg.grid_points, cfg.horizon, cfg.grid_points)
    fig, axes = plt.subplots(1, len(cfg.hursts), figsize=(3.2 * len(cfg.hursts), 3), squeeze=False)
    for i, hurst in enumerate(cfg.hursts):
        ax = axes[0, i]
        ax.plot(ts, np.diag(cov["exact"][i]), "k-", label="exact Var")
        ax.plot(ts, np.diag(cov["analytic"][i]), "C0--", label="MA-fBM Var (closed form)")
        ax.plot(ts, np.diag(cov["empirical"][i]), "C3.", label="MA-fBM Var (simulated)")
        ax.set_title(f"H = {hurst:g}: cov error {results['cov_error'][i]:.3f}")
        ax.set_xlabel("t")
        run.log(f"H={hurst:g}: error optimal {results['error_optimal'][i]:.2e}, riemann "
                f"{results['error_riemann'][i]:.2e}, covariance error {results['cov_error'][i]:.3f}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    run.figure("variances", fig)
    ratio = results["error_optimal"] / results["error_riemann"]
    return {**results, "error_ratio": ratio, "error_ratio_max": float(ratio.max()),
            "cov_error_max": float(results["cov_error"].max()),
            "cov_error_solver_max": float(results["cov_error_solver"].max()),
            "cov_error_analytic_max": float(results["cov_error_analytic"].max()), "hursts": np.asarray(cfg.hursts)}
