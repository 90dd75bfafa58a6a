"""AdamW with independent weight decay and a warmup-cosine schedule, learning rate as an array hyperparameter.

Wortsman et al. 2023 (Sec. 3.3 and App. A) decay the weights independently of the learning rate:

    theta <- theta - s_t (eta Delta_t + lambda theta),   Delta_t = m_hat / (sqrt(v_hat) + eps)

instead of optax's (and PyTorch's) coupled `theta <- theta - s_t eta (Delta_t + lambda theta)`. Here eta is the
peak learning rate and s_t the schedule multiplier: linear warmup to 1, then cosine to `min_learning_rate / eta`.
Gradients are clipped to global norm `clip_norm` first.

`independent_adamw` is built from optax pieces under `optax.inject_hyperparams`, so `learning_rate` and
`weight_decay` live in the optimiser state as arrays: `fit` can give each vmapped member its own value
(`Spec.hyperparams`) and one compiled program trains a whole learning-rate sweep.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from gvlab.errors import ConfigError


def warmup_cosine_multiplier(count: jnp.ndarray, warmup_steps: int, total_steps: int,
                             final_multiplier: Float[Array, ""] | float) -> Float[Array, ""]:
    """s_t: (t + 1) / warmup during warmup (so the first step moves), then cosine from 1 to `final_multiplier`."""
    count = jnp.asarray(count, jnp.float32)
    warm = jnp.minimum((count + 1.0) / max(warmup_steps, 1), 1.0)
    progress = jnp.clip((count - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    cosine = final_multiplier + (1.0 - final_multiplier) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(count < warmup_steps, warm, cosine)


def _independent_adamw(learning_rate, weight_decay, *, warmup_steps, total_steps, min_learning_rate, b1, b2, eps,
                       clip_norm):
    final = jnp.minimum(min_learning_rate / learning_rate, 1.0)  # cosine ends at min_learning_rate in absolute terms
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale(learning_rate),  # eta Delta
        optax.add_decayed_weights(weight_decay),  # + lambda theta: not multiplied by eta
        optax.scale_by_schedule(lambda count: warmup_cosine_multiplier(count, warmup_steps, total_steps, final)),
        optax.scale(-1.0),
    )


def independent_adamw(learning_rate: float, *, total_steps: int, warmup_steps: int = 0, weight_decay: float = 1e-4,
                      min_learning_rate: float = 1e-5, b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                      clip_norm: float = 1.0) -> optax.GradientTransformation:
    """AdamW with independent weight decay (Wortsman et al. 2023, Sec. 3.3), warmup then cosine.

    Defaults are the paper's (App. A): betas (0.9, 0.95), eps 1e-8, clipping at 1, lambda 1e-4, cosine to 1e-5.
    `learning_rate` and `weight_decay` are injected hyperparameters (`opt_state.hyperparams`); set them per
    vmapped member through `Spec.hyperparams` (see `gvlab.train.loop.fit`). Weight decay applies to every
    parameter, LayerNorm gains included (the paper does not say otherwise).

    Raises:
        ConfigError: non-positive learning rate or step counts, or a warmup longer than the run.
    """
    if not learning_rate > 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ConfigError(f"need learning_rate > 0 and 0 <= warmup_steps <= total_steps >= 1, got "
                          f"{learning_rate}, {warmup_steps}, {total_steps}")
    factory = optax.inject_hyperparams(
        _independent_adamw,
        static_args=("warmup_steps", "total_steps", "min_learning_rate", "b1", "b2", "eps", "clip_norm"))
    return factory(learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps,
                   total_steps=total_steps, min_learning_rate=min_learning_rate, b1=b1, b2=b2, eps=eps,
                   clip_norm=clip_norm)


def set_hyperparams(opt_state, **values):
    """Replace injected hyperparameters (`optax.inject_hyperparams` states anywhere in `opt_state`) by `values`.

    Values are cast to the stored dtype and shape, so the state's structure (and the compiled step) is unchanged.

    Raises:
        ConfigError: a name that no injected-hyperparameter state holds (the message lists those that exist).
    """
    found: set[str] = set()

    def is_inject(node):
        return isinstance(node, optax.InjectStatefulHyperparamsState)

    def replace(node):
        if not is_inject(node):
            return node
        hyperparams = dict(node.hyperparams)
        for name, value in values.items():
            if name in hyperparams:
                old = hyperparams[name]
                hyperparams[name] = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
                found.add(name)
        return node._replace(hyperparams=hyperparams)

    new_state = jax.tree.map(replace, opt_state, is_leaf=is_inject)
    missing = set(values) - found
    if missing:
        available = sorted({k for node in jax.tree.leaves(opt_state, is_leaf=is_inject) if is_inject(node)
                            for k in node.hyperparams})
        raise ConfigError(f"the optimiser has no injected hyperparameter(s) {sorted(missing)}; it has {available} "
                          "(wrap it with optax.inject_hyperparams)")
    return new_state


class PartOptimizers(NamedTuple):
    """Several optimisers, one per top-level part of the parameters, for a custom `Method.step`.

    `init(params) -> {part: tx.init(params[part])}` is what `fit` calls (it is the `Spec.optimizer`), so every
    part's state lives in `TrainState.opt_state` and is checkpointed and resumed with it. `update(part, grads,
    opt_state, params)` applies one part's optimiser; the custom step decides when (alternating or simultaneous
    updates, ascent on one part). Unlike `optax.partition`, the parts may be updated from different losses.
    """

    parts: dict

    def init(self, params):
        missing = set(self.parts) - set(params)
        if missing:
            raise ConfigError(f"the parameters have no part(s) {sorted(missing)}; they have {sorted(params)}")
        return {name: tx.init(params[name]) for name, tx in self.parts.items()}

    def update(self, part: str, grads, opt_state: dict, params):
        """(updates of `part`, the new `opt_state` with that part's state replaced)."""
        updates, state = self.parts[part].update(grads, opt_state[part], params[part])
        return updates, {**opt_state, part: state}


def by_part(**parts: optax.GradientTransformation) -> PartOptimizers:
    """`by_part(generator=optax.adam(1e-3), critic=optax.sgd(1e-2))`: one optimiser per parameter part."""
    return PartOptimizers(parts=dict(parts))


def frozen(tx: optax.GradientTransformation,
           trainable: Callable[[tuple[str, ...]], bool]) -> optax.GradientTransformation:
    """`tx` on the parameters whose key path `trainable(path)` accepts; zero updates (and no state) for the rest.

    A warm start with part of the parameters frozen, e.g. GCRL's low-shot adaptation:
    `frozen(optax.adam(1e-3), lambda path: path[0] != "invariant")`. Paths are tuples of the dict keys (or
    attribute names, sequence indices as strings) from the root of the parameter tree. Built on
    `optax.multi_transform` with `optax.set_to_zero`, so frozen leaves stay bitwise equal under `apply_updates`.
    """
    from gvlab.train.warm import path_names  # the key-path naming warm starts use

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if trainable(path_names(path)) else "frozen", params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
