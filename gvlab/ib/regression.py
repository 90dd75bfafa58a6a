"""Information-bottleneck regression: CS-IB (Yu et al., ICLR 2024) with VIB and plain-MSE baselines, one `Method`.

Network (CS_IB_Housing.py:99-200, sizes of the notes' mini-experiment): an encoder MLP x -> h (ReLU after every
layer), linear heads mu(h) and log sigma^2(h) of the bottleneck t (`enc_mean`, `enc_std` of the official
`CS_IB_network`), and a decoder MLP t -> y_hat. t = mu + noise * sigma * eps, eps ~ N(0, I): `noise = 0` gives the
deterministic t the official training loop uses (it calls `model(x, training=False)`, CS_IB_Housing.py:216, so
enc_std is never used), `noise = 1` the stochastic t of VIB (reparameterised). Predictions at test time use t = mu.

One objective covers every variant; its weights are the run's `args` (`Spec.args`), so a sweep over variants and
betas is one compiled program:

    L = w_mse * mean (y_hat - y)^2
      + w_cs * D_CS(p(y|x) || q(y_hat|x))          [Proposition 1, `gvlab.losses.cs_conditional_divergence`]
      + w_cs_code * D_CS^code(...)                 [official CS_Div, loss_cs.py:46-61, log2]
      + beta_qmi * I_CS(x; t)                      [Proposition 2; normalised as the code, loss_cs.py:109-115]
      + beta_kl * mean_n KL(N(mu_n, sigma_n^2) || N(0, I))    [VIB, Alemi et al. 2017, Eq. 7]

* CS-IB (CS_IB_Housing.py:225-229): w_cs = 1, beta_qmi = beta, noise = 0; kernel width `args["sigma"]` for the
  prediction term (1 in the official script, on standardised x) and `Config.qmi_sigma` (1) for I_CS(x; t).
* VIB: w_mse = 1 (the Gaussian decoder's negative log-likelihood up to scale and constant), beta_kl = beta,
  noise = 1.
* MSE: w_mse = 1, nothing else (t deterministic).

Validation selection lives in `TrainState.extra`: every step the loss measures the validation RMSE of the current
parameters on `batch["val_x"], batch["val_y"]` and keeps the best parameters so far (`extra["params"]`). The
official script selects the best *test* RMSE over epochs (CS_IB_Housing.py:322, 356-365); selecting on a
validation split keeps the test set clean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gvlab import dists
from gvlab.losses.cs import cs_conditional_divergence, cs_quadratic_mutual_information
from gvlab.nn import MLP
from gvlab.types import Method

WEIGHTS = ("mse", "cs", "cs_code", "qmi", "kl")
"""The per-run objective weights (`args` keys); see the module docstring."""

ARGS = WEIGHTS + ("noise", "sigma")
"""Every per-run `args` key: the weights, the encoder noise switch and the prediction term's kernel width."""

VARIANTS = ("mse", "vib", "cs_ib", "cs_ib_code")
"""Named settings of the weights: plain MSE, VIB, CS-IB (paper estimator), CS-IB with the code's `CS_Div`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Architecture and kernel settings (static).

    Attributes:
        hidden: encoder widths (ReLU after each), x -> h.
        bottleneck: K, the dimension of t.
        decoder_hidden: decoder widths before the scalar output, t -> y_hat.
        qmi_sigma: width of both kernels of I_CS(x; t) (CS_IB_Housing.py:225).
        qmi_normalize: penalise I(x;t) / sqrt(I(x;x) I(t;t)) (the official `CS_QMI_normalized`) instead of I(x;t).
    """

    hidden: tuple[int, ...] = (64, 64)
    bottleneck: int = 16
    decoder_hidden: tuple[int, ...] = (64,)
    qmi_sigma: float = 1.0
    qmi_normalize: bool = True

    def __post_init__(self):
        if self.bottleneck < 1 or not self.hidden or min(self.hidden + self.decoder_hidden, default=1) < 1:
            raise ValueError(f"need a non-empty encoder and positive widths, got {self}")
        if not self.qmi_sigma > 0:
            raise ValueError(f"qmi_sigma must be > 0, got {self.qmi_sigma}")


def variant_args(variant: str, beta: float = 0.0, sigma: float = 1.0) -> dict[str, float]:
    """The `args` of a named variant (`VARIANTS`): compression weight `beta`, prediction kernel width `sigma`
    (used by the CS variants only; 1 in the official training script, CS_IB_Housing.py:228)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    weights = dict.fromkeys(ARGS, 0.0)
    weights["sigma"] = sigma
    if variant == "mse":
        weights["mse"] = 1.0
    elif variant == "vib":
        weights.update(mse=1.0, kl=beta, noise=1.0)
    elif variant == "cs_ib":
        weights.update(cs=1.0, qmi=beta)
    elif variant == "cs_ib_code":
        weights.update(cs_code=1.0, qmi=beta)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    return weights


def stack_args(members: Sequence[tuple]) -> dict[str, np.ndarray]:
    """`Spec.args` for members `[(variant, beta[, sigma]), ...]`: `{key: [M]}` float32 arrays (`ARGS`)."""
    rows = [variant_args(*m) for m in members]
    return {k: np.asarray([r[k] for r in rows], np.float32) for k in ARGS}


def _networks(cfg: Config):
    return {"encoder": MLP(tuple(cfg.hidden)), "mean": MLP((cfg.bottleneck,)), "log_var": MLP((cfg.bottleneck,)),
            "decoder": MLP(tuple(cfg.decoder_hidden) + (1,))}


def init(cfg: Config, key: jax.Array, x: Float[Array, "N d"]) -> dict:
    """Parameters for inputs shaped like `x` `[N, d]`."""
    nets = _networks(cfg)
    keys = jax.random.split(key, 4)
    h = jnp.zeros((1, cfg.hidden[-1]), x.dtype)
    t = jnp.zeros((1, cfg.bottleneck), x.dtype)
    return {"encoder": nets["encoder"].init(keys[0], x[:1]), "mean": nets["mean"].init(keys[1], h),
            "log_var": nets["log_var"].init(keys[2], h), "decoder": nets["decoder"].init(keys[3], t)}


def encode(cfg: Config, params: dict, x: Float[Array, "N d"]) -> tuple[Array, Array]:
    """Mean and log-variance of t given x, each `[N, K]`."""
    nets = _networks(cfg)
    h = jax.nn.relu(nets["encoder"].apply(params["encoder"], x))
    return nets["mean"].apply(params["mean"], h), nets["log_var"].apply(params["log_var"], h)


def decode(cfg: Config, params: dict, t: Float[Array, "N K"]) -> Float[Array, " N"]:
    """y_hat = g(t), `[N]`."""
    return _networks(cfg)["decoder"].apply(params["decoder"], t)[:, 0]


def predict(cfg: Config, params: dict, x: Float[Array, "N d"]) -> Float[Array, " N"]:
    """The deterministic prediction g(mu(x)) used for evaluation and attacks (rows independent)."""
    return decode(cfg, params, encode(cfg, params, x)[0])


def gaussian_kl(mean: Float[Array, "N K"], log_var: Float[Array, "N K"]) -> Float[Array, ""]:
    """mean_n KL(N(mu_n, diag sigma_n^2) || N(0, I)) = mean_n 1/2 sum_k (mu^2 + sigma^2 - log sigma^2 - 1)
    (VIB's rate term, Alemi et al. 2017 Eq. 7 with r(z) = N(0, I)), via `gvlab.dists.kl_divergence`."""
    q = dists.DiagNormal.from_log_variance(mean, log_var)
    standard = dists.DiagNormal(jnp.zeros_like(mean), jnp.ones_like(mean))
    return jnp.mean(dists.kl_divergence(q, standard))


def objective_terms(cfg: Config, params: dict, x: Float[Array, "N d"], y: Float[Array, " N"], key: jax.Array,
                    noise: Float[Array, ""] | float = 0.0, sigma: Float[Array, ""] | float = 1.0
                    ) -> dict[str, Array]:
    """Every term of the objective for one batch (unweighted), with t drawn as `mu + noise * sigma_t * eps`;
    `sigma` is the width of the prediction term's kernels on x, y and y_hat (shared, as loss_cs.py:46-50; traced
    per run from `args`).

    Returns `{"mse", "cs", "cs_code", "qmi", "kl"}`, scalars (CS terms as in `gvlab.losses.cs`: "cs" in nats,
    "cs_code" in bits as the official `CS_Div`).
    """
    mean, log_var = encode(cfg, params, x)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    t = mean + noise * jnp.exp(0.5 * log_var) * eps
    y_hat = decode(cfg, params, t)
    return {
        "mse": jnp.mean(jnp.square(y_hat - y)),
        "cs": cs_conditional_divergence(x, y, y_hat, sigma, estimator="paper"),
        "cs_code": cs_conditional_divergence(x, y, y_hat, sigma, estimator="code"),
        "qmi": cs_quadratic_mutual_information(x, t, cfg.qmi_sigma, normalize=cfg.qmi_normalize),
        "kl": gaussian_kl(mean, log_var),
    }


def weighted_loss(terms: Mapping[str, Array], args: Mapping[str, Array]) -> Array:
    """sum_k args[k] * terms[k] over the objective's terms (`WEIGHTS`)."""
    return sum(args[k] * terms[k] for k in WEIGHTS)


def make(cfg: Config) -> Method:
    """The regression IB `Method` (the variant comes from `args`, see `stack_args`).

    Batches: `{"x": [B, d], "y": [B], "val_x": [V, d], "val_y": [V]}`. `loss(..., args=..., extra=...)` returns
    the weighted objective, every term under `ib/` and the validation RMSE under `select/`, and the updated
    selection state `extra = {"params", "val_rmse", "step"}` (the best parameters on the validation split so far).
    """

    def init_params(key, batch):
        return init(cfg, key, batch["x"])

    def init_extra(key, batch, params):
        del key, batch
        return {"params": params, "val_rmse": jnp.asarray(jnp.inf, jnp.float32), "step": jnp.zeros((), jnp.int32)}

    def loss(params, batch, key, step, *, args, extra):
        terms = objective_terms(cfg, params, batch["x"], batch["y"], key, args["noise"], args["sigma"])
        total = weighted_loss(terms, args)
        frozen = jax.lax.stop_gradient(params)
        val_rmse = jnp.sqrt(jnp.mean(jnp.square(predict(cfg, frozen, batch["val_x"]) - batch["val_y"])))
        better = val_rmse < extra["val_rmse"]
        new_extra = {"params": jax.tree.map(lambda a, b: jnp.where(better, a, b), frozen, extra["params"]),
                     "val_rmse": jnp.where(better, val_rmse, extra["val_rmse"]),
                     "step": jnp.where(better, step, extra["step"]).astype(jnp.int32)}
        metrics = {f"ib/{k}": v for k, v in terms.items()}
        metrics.update({"select/val_rmse": val_rmse, "select/best_val_rmse": new_extra["val_rmse"]})
        return total, metrics, new_extra

    return Method(init=init_params, loss=loss, init_extra=init_extra)


def selected_params(result: Any) -> Any:
    """The validation-selected parameters of every run of a `FitResult` (leaves [R, ...])."""
    return result.state.extra["params"]
