"""`collapse/relu_cvae`: a ReLU CVAE loses active latent dimensions as input-output correlation grows (Dang et al.,
ICLR 2024, Sec. 5 and `Synthetic_CVAE_Relu_correlation.py`).

Data (fixed before any run; the linear study's construction, `gvlab.data.correlated`): N = 4000 pairs, d = 16,
y ~ N(0, diag s^2) with s^2 log-spaced in [0.05, 2], condition x_i = rho y_i / s_i + sqrt(1 - rho^2) n_i, five
values rho in {0, 0.5, 0.8, 0.9, 0.95}. Model (`gvlab.models.vae` as a CVAE): q(z|y, x) and p(y|x, z) are ReLU MLPs
with one hidden layer of 64, latent 16, learnable encoder variance, p(z|x) = N(0, I) (eta_enc = 1), Gaussian
decoder with fixed eta_dec = 0.5, beta = 1; Adam 1e-3, batch 128. Measured: active units AU = #{i : E KL(q(z_i|y, x)
|| p(z_i)) > 0.01} over the N pairs, and the linear theory's count #{theta_i > beta eta_dec^2} with theta the
eigenvalues of the data's conditional covariance (a reference, not a claim: the networks are not linear).

The five values of rho are a declared sweep: each is one run (a fit of every seed on its own dataset) that can go
to its own machine (`gvlab sweep collapse/relu_cvae --list`, `--index i`); `reproduce` gathers them.

Command:  gvlab reproduce collapse/relu_cvae --profile quick
Shows:    active units per rho and seed, the linear theory's count, and Spearman(rho, AU) per seed; a figure of
          AU vs rho and of the sorted per-dimension KLs. Measured values in report.json / report.md.
Runtime:  quick (3 seeds x 3000 steps, N = 2000) ~1 min, full (5 seeds x 6000 steps, N = 4000) ~4 min on 2 CPU
          cores.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, collapse, diagnostics, experiment
from gvlab.registry import Sweep
from gvlab.data import epoch_batches
from gvlab.data.correlated import correlated_pairs
from gvlab.models import vae


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`collapse/relu_cvae` settings.

    Attributes:
        rhos: input-output correlations, one dataset each (a member of the fit).
        num_pairs, dim, min_var, max_var: the data (see the module docstring).
        model: the CVAE (condition and output both `dim`-dimensional).
        kl_threshold: a dimension is active when its mean KL exceeds this (nats).
        train: optimisation settings of every fit.
    """

    rhos: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95)
    num_pairs: int = 4000
    dim: int = 16
    min_var: float = 0.05
    max_var: float = 2.0
    model: vae.Config = vae.Config(latent_dim=16, hidden=(64,), likelihood="gaussian", decoder_std=0.5)
    kl_threshold: float = 0.01
    train: TrainConfig = TrainConfig(steps=6000, batch_size=128, lr=1e-3, num_seeds=5, log_every=200)


def _pairs(cfg: Config, run, index: int, rho: float) -> dict:
    """Dataset `index` of the sweep (its own key, so a point draws the same data wherever it runs)."""
    variances = jnp.geomspace(cfg.min_var, cfg.max_var, cfg.dim)
    return correlated_pairs(jax.random.fold_in(run.key("data"), index), cfg.num_pairs, variances, rho)


def train_point(cfg: Config, run, point: dict, index: int) -> dict:
    """One sweep point: a CVAE on the pairs of one rho (every seed in one fit), its per-dimension KLs and the linear
    theory's active count for that dataset."""
    pairs = _pairs(cfg, run, index, point["rho"])
    spec = Spec(method=vae.make(cfg.model, (cfg.dim,), condition_dim=cfg.dim), optimizer=optax.adam(cfg.train.lr),
                data=epoch_batches({"x": pairs["y"], "c": pairs["x"]}, cfg.train.batch_size))
    fit = run.fit(spec, name=f"rho{point['rho']:g}")
    evaluator = functools.partial(vae.kl_per_dimension, cfg=cfg.model, image_shape=(cfg.dim,), condition_dim=cfg.dim)
    kl = run.evaluate("kl", evaluator, fit, {"x": pairs["y"], "c": pairs["x"]})["kl"]  # [seeds, D]
    optimum = collapse.cvae_optimum(collapse.conditional_covariance(pairs["x"], pairs["y"]), cfg.model.latent_dim,
                                    cfg.model.beta, cfg.model.prior_std, cfg.model.decoder_std)
    return {"kl": kl, "theory_active": int(optimum.num_active)}


SWEEP = Sweep(points=lambda cfg: [{"rho": rho} for rho in cfg.rhos], run=train_point)


@experiment(
    "collapse/relu_cvae",
    config=Config(),
    smoke={"rhos": (0.0, 0.95), "dim": 4, "num_pairs": 256, "model.latent_dim": 4, "model.hidden": (8,),
           "train.steps": 20, "train.num_seeds": 2, "train.batch_size": 64, "train.log_every": 10},
    quick={"num_pairs": 2000, "train.steps": 3000, "train.num_seeds": 3},
    claims=[
        Claim(statement="Active units fall as the input-output correlation rho grows: Spearman(rho, AU) <= -0.8 "
                        "over the five values of rho (mean over seeds)",
              metric="spearman", op="<=", threshold=-0.8, reduce="mean",
              source="Dang et al. 2024, Sec. 5 (ReLU CVAE, synthetic correlation study); notes' mini-experiment (ii)"),
    ],
    sweep=SWEEP,
)
def relu_cvae(cfg: Config, run) -> dict:
    """ReLU CVAEs over rho: active units vs rho, next to the linear theory's count."""
    import matplotlib.pyplot as plt

    points = run.gather()  # one per rho: finished ones (e.g. `gvlab sweep ... --index i`) are loaded, not rerun
    kls = [np.asarray(p["results"]["kl"]) for p in points]  # each [seeds, D]
    theory = np.asarray([p["results"]["theory_active"] for p in points], int)
    au = np.stack([np.sum(kl > cfg.kl_threshold, axis=1) for kl in kls], axis=1)  # [seeds, rhos]
    for i, rho in enumerate(cfg.rhos):
        run.log(f"rho {rho:g}: active units {au[:, i]} (linear theory {theory[i]})")
    spearman = np.asarray(jax.vmap(diagnostics.spearman_correlation, (None, 0))(
        jnp.asarray(cfg.rhos), jnp.asarray(au, jnp.float32)))

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for row in au:
        left.plot(cfg.rhos, row, "o-", color="C0", alpha=0.6)
    left.plot(cfg.rhos, theory, "k--", label="linear theory")
    left.set(xlabel="rho", ylabel="active units", title="ReLU CVAE: active units vs rho")
    left.legend()
    for i, rho in enumerate(cfg.rhos):
        right.plot(np.sort(kls[i][0])[::-1], label=f"rho = {rho:g}")
    right.axhline(cfg.kl_threshold, color="grey", lw=0.5)
    right.set(yscale="log", xlabel="dimension (sorted)", ylabel="mean KL (nats)", title="per-dimension KL, seed 0")
    right.legend(fontsize=7)
    fig.tight_layout()
    run.figure("active_units", fig)
    return {"active_units": au, "theory_active": theory, "spearman": spearman}
