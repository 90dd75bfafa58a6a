"""The tanh-squashed diagonal Gaussian of behaviour-cloning primitives (official `src/model.py`: distrax
`Transformed(MultivariateNormalDiag, Block(Tanh))`; notes sec. 4(a)).

a = tanh(x), x ~ N(mu, diag sigma^2). Change of variables, per action dimension:

    log pi(a) = log N(x; mu, sigma^2) - log(1 - tanh(x)^2),   x = atanh(a),
    log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2 x))          (stable form, as distrax's Tanh bijector)

summed over the action dimensions. Demonstrated actions are clipped to +-`ACTION_CLIP` (official clip_action 0.99)
so that atanh stays finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

ACTION_CLIP = 0.99
_HALF_LOG_2PI = 0.5 * jnp.log(2.0 * jnp.pi)


def log_det_tanh(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """log |d tanh(x) / dx| = log(1 - tanh(x)^2), computed as 2 (log 2 - x - softplus(-2 x))."""
    return 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))


def log_prob(mean: Float[Array, "*b d"], log_std: Float[Array, "*b d"], action: Float[Array, "*b d"],
             clip: float = ACTION_CLIP) -> Float[Array, "*b"]:
    """log pi(a | mu, sigma) of the tanh-Gaussian, summed over the last (action) axis; `a` clipped to +-clip."""
    x = jnp.arctanh(jnp.clip(action, -clip, clip))
    z = (x - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * z ** 2 - log_std - _HALF_LOG_2PI
    return jnp.sum(gaussian - log_det_tanh(x), axis=-1)


def sample(key: jax.Array, mean: Array, log_std: Array) -> Array:
    """tanh(mu + sigma eps), eps ~ N(0, I) (reparameterised)."""
    return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, jnp.shape(mean)))


def mode(mean: Array, log_std: Array) -> Array:
    """tanh(mu): the deterministic action used in evaluation rollouts."""
    del log_std
    return jnp.tanh(mean)
