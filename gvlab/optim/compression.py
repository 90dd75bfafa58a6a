"""Message compressors for distributed methods, and what their messages cost.

Two classes (the compressor assumptions of Beznosikov et al. 2022, arXiv 2110.03313):

* unbiased Q: E Q(x) = x and E||Q(x)||^2 <= q ||x||^2. RandK keeps K coordinates drawn uniformly without
  replacement and scales them by d/K, so q = d/K.
* contractive C: E||C(x) - x||^2 <= (1 - delta)||x||^2. TopK keeps the K largest |x_i|, so
  ||TopK(x) - x||^2 <= (1 - K/d)||x||^2 deterministically (delta = K/d): the discarded d - K coordinates are the
  smallest, so their share of the energy is at most (d - K)/d.

Compressors here return the *decompressed* message, a dense `[d]` vector with K non-zeros, which is what the server
adds up. What travels is K values and their K indices; `message_floats` counts it.

Cost convention (used by every method in `gvlab.optim`): the uplink cost is counted in floats per worker; a dense
vector costs d; a sparse message costs K values plus K indices, each index counted as one float-sized word (an
int32, the size of a float32). Counting the indices is conservative for RandK, whose indices a server could
regenerate from a shared seed (`count_indices=False` gives that cheaper convention).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([3.0, -4.0, 0.5, 1.0])
    >>> top_k(x, 2)
    Array([ 3., -4.,  0.,  0.], dtype=float32)
    >>> int(jnp.count_nonzero(rand_k(jax.random.key(0), x, 2)))
    2
    >>> message_floats(100, 5), message_floats(100, 5, count_indices=False), message_floats(100, None)
    (10, 5, 100)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.errors import ConfigError


def check_k(k: int, dim: int) -> None:
    """Refuse a K outside 1..d with a clear error (shapes would fail obscurely later)."""
    if not 1 <= k <= dim:
        raise ConfigError(f"compression K must be in 1..{dim} (the vector size), got {k}")


def rand_k(key: PRNGKeyArray, x: Float[Array, " d"], k: int, *, scaled: bool = True) -> Float[Array, " d"]:
    """RandK: K coordinates chosen uniformly without replacement, times d/K (unbiased; q = d/K).

    Args:
        key: randomness of this message (one key per worker and round).
        x: the vector to compress.
        k: number of coordinates kept.
        scaled: multiply by d/K (`False` gives the biased variant, E = (K/d) x; kept for negative controls).
    """
    dim = x.shape[-1]
    check_k(k, dim)
    index = jax.random.permutation(key, dim)[:k]
    scale = dim / k if scaled else 1.0
    return jnp.zeros_like(x).at[index].set(x[index] * scale)


def top_k(x: Float[Array, " d"], k: int) -> Float[Array, " d"]:
    """TopK: the K entries of largest magnitude, unscaled (contractive with delta = K/d; biased)."""
    check_k(k, x.shape[-1])
    _, index = jax.lax.top_k(jnp.abs(x), k)
    return jnp.zeros_like(x).at[index].set(x[index])


def message_floats(dim: int, k: int | None, *, count_indices: bool = True) -> int:
    """Uplink cost of one message in floats: d when dense (`k=None`), else K values (+ K indices)."""
    if k is None:
        return dim
    check_k(k, dim)
    return 2 * k if count_indices else k
