"""Sparse subspace variational inference (SSVI; Li et al., ICLR 2024) for the Bayesian MLP of `gvlab.bayes.mlp`.

The posterior lives on a support S_l of fixed size k_l = round(density * I_l O_l) per layer: on S_l a mean-field
Gaussian, off S_l the weight is exactly 0. The supports are `TrainState.extra = {"masks": {layer: bool [I, O]}}`
(drawn uniformly at random by `init_extra`), checkpointed and resumed with the run. `Method.step` alternates:

1. a parameter step on the masked ELBO (`mlp.negative_elbo`, gradients of inactive entries are 0 by the masks),
   then parameters and every params-shaped optimiser slot (moments) multiplied by the masks (the official
   `RigLScheduler.reset_momentum` / `apply_mask_to_weights` after every optimiser step);
2. after step t (counted from 1), when t % update_every == 0 and t < t_end, a removal-and-addition update of
   each support (`update_support`; `rigl_torch/RigL.py::_rigl_step`):
   * drop fraction alpha_t = alpha / 2 (1 + cos(pi t / t_end)), n = floor(alpha_t k);
   * removal: keep the top k - n active entries by `criterion`: "snr", SNR(|theta|) = E|theta| / sqrt(Var|theta|)
     with E|theta| = mu erf(mu / (sqrt2 sigma)) + sigma sqrt(2/pi) exp(-mu^2 / 2 sigma^2) and
     Var|theta| = mu^2 + sigma^2 - (E|theta|)^2 (the code's "SNR_mean_abs", its default), or "abs_mu", |mu|;
   * addition: the top n entries outside the kept set by |dL/dW| of this step's *dense* gradient with respect to
     the mean weight W = mu * M (RigL's growth score; an entry dropped now may come straight back, as there);
   * new entries start at mu = 0 and rho = the mean rho of the layer's surviving entries (`grow_std_init`,
     "mean"); their optimiser moments are 0.

Every shape is static (`lax.top_k` over the k active entries and the max_n = floor(alpha k) candidates, the count
n a traced integer, the update under `lax.cond` on the step), so the step compiles once and the number of active
entries is exactly k_l after every update. The dense gradient comes from the same backward pass as the parameter
gradient (a zero "probe" added to W), not from a second pass.

Baselines are configurations: `density=1.0` is dense mean-field VI (all-ones masks, no updates) and
`update_every=0` a static random mask. Runs of one fit may differ through `Spec.args` (leaves [M]):
`{"update": [0, 1]}` makes member 0 a static mask and member 1 SSVI with the same shapes, initial draws and
batches (one compiled program), and `"criterion"` (an index into `CRITERIA`) picks each member's removal score.

The step is built around the fit's optimiser (`Method.make_step(tx)`: `fit` hands it `Spec.optimizer`), so
`Spec(ssvi.make(cfg), optax.adam(lr), data)` is all a fit needs. Deviations from the official code: ranks are over
the active entries only (the code ranks all entries with NaN scores of inactive ones set to 0; the same set
whenever active scores are positive);
biases are dense and deterministic; every layer is sparse (the code keeps a ResNet's first conv dense).

    >>> import jax, jax.numpy as jnp, optax
    >>> from gvlab.bayes import mlp, ssvi
    >>> cfg = ssvi.Config(model=mlp.Config(hidden=(8,), num_classes=3), density=0.25, update_every=2, t_end=10)
    >>> method = ssvi.make(cfg)
    >>> step = method.make_step(optax.adam(1e-2))  # what `fit` does with Spec.optimizer
    >>> [round(float(ssvi.drop_fraction(cfg, jnp.int32(t))), 6) for t in (0, 5, 10)]  # alpha, alpha / 2, 0
    [0.3, 0.15, 0.0]
    >>> ssvi.support_size((5, 8), 0.25)
    10
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import erf
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from gvlab.bayes import mlp
from gvlab.rng import step_key
from gvlab.types import Batch, Method

CRITERIA = ("snr", "abs_mu")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """SSVI settings (defaults: the notes' digits design; the paper's are update_every=100, t_end=0.75 T, alpha=0.3).

    Attributes:
        model: the Bayesian MLP.
        density: |S_l| / (I_l O_l) for every layer (1.0: dense VI).
        update_every: Delta T, steps between support updates (0: a static random mask).
        t_end: T_end, the last step (exclusive) with a support update.
        drop_fraction: alpha, the drop fraction at t = 0 (cosine-annealed to 0 at t_end).
        criterion: removal score, "snr" (SNR of |theta|) or "abs_mu".
    """

    model: mlp.Config = mlp.Config()
    density: float = 0.1
    update_every: int = 50
    t_end: int = 1000
    drop_fraction: float = 0.3
    criterion: str = "snr"

    def __post_init__(self):
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.update_every < 0 or not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError("update_every must be >= 0 and drop_fraction in [0, 1]")


def support_size(shape: tuple[int, ...], density: float) -> int:
    """k = round(density * size), at least 1."""
    return max(1, min(math.prod(shape), round(density * math.prod(shape))))


def drop_fraction(cfg: Config, t: Array) -> Float[Array, ""]:
    """alpha_t = alpha / 2 (1 + cos(pi t / T_end)) (`RigLScheduler.cosine_annealing`)."""
    return 0.5 * cfg.drop_fraction * (1.0 + jnp.cos(jnp.pi * t.astype(jnp.float32) / cfg.t_end))


def abs_theta_snr(mu: Array, sigma: Array) -> Array:
    """SNR(|theta|) = E|theta| / sqrt(Var|theta|) for theta ~ N(mu, sigma^2) (folded normal; the code's
    "SNR_mean_abs"); NaN (sigma = 0 in float) is mapped to 0 like the code does."""
    mean_abs = mu * erf(mu / (jnp.sqrt(2.0) * sigma)) + sigma * jnp.sqrt(2.0 / jnp.pi) * jnp.exp(
        -jnp.square(mu) / (2 * jnp.square(sigma)))
    snr = mean_abs / jnp.sqrt(jnp.square(mu) + jnp.square(sigma) - jnp.square(mean_abs))
    return jnp.nan_to_num(snr, nan=0.0, posinf=jnp.finfo(snr.dtype).max)


def removal_score(criterion: str | Array, layer: dict[str, Array]) -> Array:
    """The criterion's score of every entry; `criterion` a name, or a traced index into `CRITERIA` (a member's
    `Spec.args["criterion"]`: both scores are computed and one is selected)."""
    if isinstance(criterion, str):
        if criterion == "abs_mu":
            return jnp.abs(layer["mu"])
        return abs_theta_snr(layer["mu"], jax.nn.softplus(layer["rho"]))
    return jnp.where(criterion == CRITERIA.index("abs_mu"), removal_score("abs_mu", layer),
                     removal_score("snr", layer))


def update_support(mask: Bool[Array, "I O"], keep_score: Array, grow_score: Array, num_drop: Array, size: int,
                   max_drop: int) -> Bool[Array, "I O"]:
    """The new support: the top `size - num_drop` active entries by `keep_score`, plus the top `num_drop` others
    by `grow_score`. `size` = k (the mask has exactly k ones), `max_drop` >= num_drop static; exactly k ones out."""
    flat_mask, shape = mask.reshape(-1), mask.shape
    ranked = jnp.where(flat_mask, keep_score.reshape(-1), -jnp.inf)  # inactive entries rank last
    _, best_k = jax.lax.top_k(ranked, size)  # the k active entries, best first
    keep = jnp.zeros_like(flat_mask).at[best_k].set(jnp.arange(size) < size - num_drop)
    candidates = jnp.where(keep, -jnp.inf, jnp.nan_to_num(grow_score.reshape(-1)))
    _, best_n = jax.lax.top_k(candidates, max(max_drop, 1))  # >= n candidates are finite: n <= size - (k - n)
    grow = jnp.zeros_like(flat_mask).at[best_n].set(jnp.arange(max(max_drop, 1)) < num_drop)
    return (keep | grow).reshape(shape)


def random_masks(key: PRNGKeyArray, params: mlp.Params, density: float) -> dict[str, Array]:
    """Uniform random supports with exactly k_l ones per layer (one key per layer)."""
    masks = {}
    for i, (name, layer) in enumerate(sorted(params.items())):
        size, total = support_size(layer["mu"].shape, density), layer["mu"].size
        order = jax.random.permutation(jax.random.fold_in(key, i), total)
        masks[name] = jnp.zeros((total,), bool).at[order[:size]].set(True).reshape(layer["mu"].shape)
    return masks


def support_of(params: mlp.Params) -> dict[str, Bool[Array, "I O"]]:
    """The supports read back from SSVI's parameters: rho != 0 (the step stores inactive mu and rho as exactly 0;
    the official code's convention, `models/utils.py::StoLinear.forward`, `posterior_std != 0`). For evaluators
    that see only the parameters (`Spec.evals`); an active rho is 0 only if sigma = softplus(0) exactly."""
    return {name: p["rho"] != 0 for name, p in params.items()}


def _multipliers(params: mlp.Params, masks: dict[str, Array]) -> mlp.Params:
    """A params-shaped tree: the mask on mu and rho, ones on the biases."""
    return {name: {"mu": masks[name].astype(p["mu"].dtype), "rho": masks[name].astype(p["rho"].dtype),
                   "bias": jnp.ones_like(p["bias"])} for name, p in params.items()}


def _mask_slot(slot: Array, multiplier: Array) -> Array:
    return slot * multiplier.astype(slot.dtype) if jnp.issubdtype(slot.dtype, jnp.floating) else slot


def _apply_masks(tree: mlp.Params, masks: dict[str, Array]) -> mlp.Params:
    return jax.tree.map(jnp.multiply, tree, _multipliers(tree, masks))


def make(cfg: Config) -> Method:
    """SSVI as a `Method` with its own step around the fit's optimiser (`make_step`) and `init_extra` (see the
    module docstring). Extra metrics: `ssvi/nonzeros` (active weights, all
    layers), `ssvi/drop_fraction` (alpha_t of this step's update, 0 without one), `ssvi/regrown` (entries new to
    the support at this step)."""
    model = mlp.make(cfg.model)
    updates_support = cfg.update_every > 0 and cfg.density < 1.0

    def init_extra(key: PRNGKeyArray, batch: Batch, params: mlp.Params) -> dict[str, Any]:
        return {"masks": random_masks(key, params, cfg.density)}

    def loss(params, batch, key, step, *, extra, args=None):  # args: the per-member switches of the step
        masks = extra["masks"]
        value, terms = mlp.negative_elbo(cfg.model, mlp.effective(params, masks),
                                         mlp.kl(params, cfg.model.prior_std, masks), batch, key, step)
        return value, terms, extra

    def objective(params, probe, masks, batch, key, step):
        # The probe (zeros) is added to each mean weight W = mu * M: d loss / d probe is the dense gradient dL/dW.
        moments = {name: (m + probe[name], v, b) for name, (m, v, b) in mlp.effective(params, masks).items()}
        return mlp.negative_elbo(cfg.model, moments, mlp.kl(params, cfg.model.prior_std, masks), batch, key, step)

    grad_fn = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)

    def support_step(params, masks, dense_grads, t, criterion):
        fraction = drop_fraction(cfg, t)
        new_params, new_masks, regrown = {}, {}, jnp.zeros((), jnp.int32)
        for name, layer in params.items():
            size = support_size(layer["mu"].shape, cfg.density)
            num_drop = jnp.floor(fraction * size).astype(jnp.int32)
            mask = update_support(masks[name], removal_score(criterion, layer), jnp.abs(dense_grads[name]),
                                  num_drop, size, math.floor(cfg.drop_fraction * size))
            new = mask & ~masks[name]
            survivors = mask & masks[name]
            mean_rho = jnp.sum(jnp.where(survivors, layer["rho"], 0.0)) / jnp.maximum(jnp.sum(survivors), 1)
            new_params[name] = {**layer, "mu": jnp.where(new, 0.0, layer["mu"]),
                                "rho": jnp.where(new, mean_rho, layer["rho"])}
            new_masks[name] = mask
            regrown = regrown + jnp.sum(new.astype(jnp.int32))
        return new_params, new_masks, regrown, fraction

    def no_support_step(params, masks, dense_grads, t, criterion):
        return params, masks, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)

    def make_step(optimizer: optax.GradientTransformation):
        def step(state, batch: Batch, key: PRNGKeyArray):
            masks = state.extra["masks"]
            probe = {name: jnp.zeros_like(p["mu"]) for name, p in state.params.items()}
            (value, terms), (grads, dense_grads) = grad_fn(state.params, probe, masks, batch,
                                                           step_key(key, state.step), state.step)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            t = state.step + 1  # steps taken after this one (the scheduler's counter)
            regrown, fraction = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
            if updates_support:
                # Per-member switches (`Spec.args`): "update" 0 makes this run a static mask, "criterion" picks
                # the removal score (index into CRITERIA), so both baselines share one compiled program.
                args = state.args if isinstance(state.args, dict) else {}
                due = (t % cfg.update_every == 0) & (t < cfg.t_end) & (args.get("update", 1) != 0)
                criterion = args.get("criterion", cfg.criterion)  # a name is static, an index traced
                params, masks, regrown, fraction = jax.lax.cond(
                    due, lambda *a: support_step(*a, criterion), lambda *a: no_support_step(*a, criterion),
                    params, masks, dense_grads, t)
            params = _apply_masks(params, masks)  # inactive mu and rho stored as 0, like the official code
            # Moments of inactive entries to 0; non-float slots (a chained gradient record) are left alone.
            opt_state = optax.tree_utils.tree_map_params(optimizer, _mask_slot, opt_state, _multipliers(params, masks))
            nonzeros = sum(jnp.sum(m.astype(jnp.int32)) for m in masks.values())
            metrics = {"loss": value, **terms, "ssvi/nonzeros": nonzeros.astype(jnp.float32),
                       "ssvi/drop_fraction": fraction, "ssvi/regrown": regrown.astype(jnp.float32),
                       "norm/grads": optax.tree.norm(grads)}
            new_state = state.replace(step=t, params=params, opt_state=opt_state, extra={"masks": masks})
            return new_state, metrics

        return step

    return Method(init=model.init, loss=loss, init_extra=init_extra, make_step=make_step)
