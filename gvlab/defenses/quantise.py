"""Scalar quantisers of input-filter defences: the LSQ latent quantiser and feature squeezing's bit-depth reduction.

* Latent quantisation (Kyatham et al. 2019, arXiv 1903.09940, Sec. 3; [UNVERIFIED] reconstruction from the
  abstract, no official code is known, see the notes' section 3): each coordinate of z in [-1, 1] is snapped to
  one of L uniform levels,

      Q(z) = 2 / (L - 1) round((clip(z, -1, 1) + 1) (L - 1) / 2) - 1,     levels -1, -1 + Delta, ..., 1,

  Delta = 2 / (L - 1); in training the gradient passes straight through (Bengio et al. 2013): dQ/dz := I.
* Feature squeezing by bit-depth reduction (Xu, Evans and Qi 2018, "Feature Squeezing", Sec. 3.1 / 4.1): an input
  in [0, 1] keeps b bits, x -> round(x (2^b - 1)) / (2^b - 1) (ties to even, as `jnp.round` and `np.rint`).

`levels` and `bits` may be traced (a sweep over L as members of one fit: `Spec.args`).

    >>> import jax, jax.numpy as jnp
    >>> quantise(jnp.array([-0.9, 0.2, 0.3, 2.0]), 5)
    Array([-1. ,  0. ,  0.5,  1. ], dtype=float32)
    >>> jax.grad(lambda z: jnp.sum(quantise_straight_through(z, 5)))(jnp.array([0.2, 0.3]))
    Array([1., 1.], dtype=float32)
    >>> squeeze_bits(jnp.array([0.1, 0.6, 0.9]), 1)
    Array([0., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _check_at_least(name: str, value, low: int) -> None:
    try:
        concrete = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced (a member sweep): the caller's responsibility
    if np.any(concrete < low):
        raise ValueError(f"{name} must be >= {low}, got {concrete}")


def quantise(z: Float[Array, "..."], levels: int | Array) -> Float[Array, "..."]:
    """Q(z): clip to [-1, 1] and round to the nearest of `levels` uniform levels (module docstring).

    Args:
        z: any shape. levels: L >= 2 (may be traced; a float L is used as given).

    Returns:
        Q(z), same shape and dtype; |Q(z) - z| <= Delta / 2 for z in [-1, 1]. Its gradient is zero almost
        everywhere; use `quantise_straight_through` to train through it.
    """
    _check_at_least("levels", levels, 2)
    steps = jnp.asarray(levels, z.dtype) - 1.0
    index = jnp.round((jnp.clip(z, -1.0, 1.0) + 1.0) * steps / 2.0)
    return 2.0 * index / steps - 1.0


def quantise_straight_through(z: Float[Array, "..."], levels: int | Array) -> Float[Array, "..."]:
    """Q(z) forward, the identity backward: sg(Q(z)) + z - sg(z).

    Written so that the forward value is Q(z) exactly (z - sg(z) is 0), where z + sg(Q(z) - z) is off by rounding.
    """
    return jax.lax.stop_gradient(quantise(z, levels)) + z - jax.lax.stop_gradient(z)


def squeeze_bits(x: Float[Array, "..."], bits: int | Array) -> Float[Array, "..."]:
    """Bit-depth reduction to `bits` >= 1 bits of an input in [0, 1] (Xu et al. 2018, Sec. 4.1): 2^bits values
    {k / (2^bits - 1)}; inputs outside [0, 1] are clipped first."""
    _check_at_least("bits", bits, 1)
    top = 2.0 ** jnp.asarray(bits, x.dtype) - 1.0
    return jnp.round(jnp.clip(x, 0.0, 1.0) * top) / top
