"""Scalar and multi-codebook vector quantisers with straight-through gradients, commitment losses and EMA codebooks.

* Scalar: Q(y) = round(y) at test; in training either additive uniform noise y + u, u ~ U(-1/2, 1/2) (Balle et al.
  2017, Sec. 2, "End-to-end optimized image compression") or the straight-through rounding sg(round(y)) + y - sg(y).
* Vector, m codebooks: y in R^D is split into m sub-vectors y_j in R^(D/m); each is replaced by its nearest codeword
  of codebook C_j in R^(K x D/m) (multi-codebook VQ, McQuic `mcquic/modules/quantizer.py::_multiCodebookQuantization`
  at commit 8927e1b uses one codebook per group). An optional rate penalty turns the nearest-neighbour rule into
  entropy-constrained VQ (Chou, Lookabaugh & Gray 1989, Eq. 9): k* = argmin_k ||y_j - c_jk||^2 + lambda (-log2 p_jk).
* Straight-through: y_hat = sg(q) + y - sg(y) forward equals the codeword, backward is the identity (van den Oord et al.
  2017, "Neural discrete representation learning", Eq. 3); commitment loss beta ||y - sg(q)||^2 (same, Eq. 3).
* EMA codebook (van den Oord et al. 2017, App. A.1): N_k <- g N_k + (1 - g) n_k, m_k <- g m_k + (1 - g) sum_{i:k} y_i,
  c_k = m_k / N~_k with Laplace-smoothed counts N~_k = (N_k + eps) / (N + K eps) N; the counts double as the
  empirical symbol frequencies of the entropy model (McQuic codes indices with frequencies tracked in training).
  The EMA state lives in `TrainState.extra` (the loss returns the new state).

All functions compose with jit/vmap/grad; shapes are `[..., m, d]` for grouped vectors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def round_straight_through(y: Float[Array, "..."]) -> Float[Array, "..."]:
    """round(y) forward, identity backward: sg(round(y)) + y - sg(y) (exactly round(y) in the forward value)."""
    return jax.lax.stop_gradient(jnp.round(y)) + (y - jax.lax.stop_gradient(y))


def add_uniform_noise(y: Float[Array, "..."], key) -> Float[Array, "..."]:
    """y + u, u ~ U(-1/2, 1/2) iid: the training proxy of rounding (Balle et al. 2017, Sec. 2)."""
    return y + jax.random.uniform(key, y.shape, y.dtype, -0.5, 0.5)


def split_groups(y: Float[Array, "... D"], groups: int) -> Float[Array, "... m d"]:
    """`[..., D] -> [..., m, D/m]` (raises ValueError unless m divides D)."""
    if y.shape[-1] % groups:
        raise ValueError(f"{groups} groups do not divide the latent size {y.shape[-1]}")
    return y.reshape(*y.shape[:-1], groups, y.shape[-1] // groups)


def squared_distances(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"]) -> Float[Array, "... m K"]:
    """||y_j - c_jk||^2 for every group j and codeword k, expanded as |y|^2 - 2 y.c + |c|^2 (one matmul)."""
    cross = jnp.einsum("...md,mkd->...mk", y, codebooks)
    norms = jnp.broadcast_to(jnp.sum(codebooks * codebooks, -1), cross.shape)
    return jnp.sum(y * y, -1)[..., None] - 2.0 * cross + norms


def nearest(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"],
            rate_bits: Float[Array, "m K"] | None = None, rate_weight: float | Array = 0.0) -> Int[Array, "... m"]:
    """k* = argmin_k ||y_j - c_jk||^2 + rate_weight * rate_bits_jk (entropy-constrained VQ when rate_weight > 0)."""
    cost = squared_distances(y, codebooks)
    if rate_bits is not None:
        cost = cost + rate_weight * jnp.broadcast_to(rate_bits, cost.shape)
    return jnp.argmin(cost, axis=-1)


def lookup(indices: Int[Array, "... m"], codebooks: Float[Array, "m K d"]) -> Float[Array, "... m d"]:
    """The codewords c_{j, k_j} of each group."""
    groups = jnp.arange(codebooks.shape[0])
    return codebooks[groups, indices]


def straight_through(y: Float[Array, "..."], q: Float[Array, "..."]) -> Float[Array, "..."]:
    """sg(q) + (y - sg(y)): exactly the value of q (y - sg(y) is 0; y + sg(q - y) is off by rounding), the
    gradient of the identity with respect to y (none reaches q)."""
    return jax.lax.stop_gradient(q) + (y - jax.lax.stop_gradient(y))


def commitment_loss(y: Float[Array, "... m d"], q: Float[Array, "... m d"]) -> Float[Array, ""]:
    """mean over vectors of ||y - sg(q)||^2 summed over the vector's coordinates (van den Oord et al. 2017, Eq. 3,
    the beta term without beta)."""
    per_vector = jnp.sum(jnp.square(y - jax.lax.stop_gradient(q)), axis=(-2, -1))
    return jnp.mean(per_vector)


def init_ema(codebooks: Float[Array, "m K d"]) -> dict[str, Array]:
    """EMA state whose codebook equals `codebooks`: counts 1 per codeword, sums = codewords."""
    return {"counts": jnp.ones(codebooks.shape[:2], codebooks.dtype), "sums": codebooks}


def ema_codebooks(state: dict[str, Array], eps: float = 1e-5) -> Float[Array, "m K d"]:
    """c_k = m_k / N~_k with Laplace-smoothed counts (van den Oord et al. 2017, App. A.1; Sonnet's VectorQuantizerEMA)."""
    counts = state["counts"]
    total = jnp.sum(counts, -1, keepdims=True)
    smoothed = (counts + eps) / (total + counts.shape[-1] * eps) * total
    return state["sums"] / smoothed[..., None]


def ema_probabilities(state: dict[str, Array], floor: float = 1e-3) -> Float[Array, "m K"]:
    """Symbol frequencies of each group from the EMA counts, mixed with `floor` x uniform so no code has p = 0."""
    p = state["counts"] / jnp.sum(state["counts"], -1, keepdims=True)
    return (1.0 - floor) * p + floor / p.shape[-1]


def ema_update(state: dict[str, Array], y: Float[Array, "... m d"], indices: Int[Array, "... m"],
               decay: float | Array) -> dict[str, Array]:
    """One EMA step of counts and sums from the assignments of a batch (no gradient flows through it)."""
    m, k = state["counts"].shape
    y = jax.lax.stop_gradient(y).reshape(-1, m, y.shape[-1])
    one_hot = jax.nn.one_hot(indices.reshape(-1, m), k, dtype=y.dtype)  # [N, m, K]
    counts = decay * state["counts"] + (1.0 - decay) * jnp.sum(one_hot, 0)
    sums = decay * state["sums"] + (1.0 - decay) * jnp.einsum("nmk,nmd->mkd", one_hot, y)
    return {"counts": counts, "sums": sums}
