"""A learned factorised density for scalar-quantised latents: one logistic per channel, integrated over each bin.

The baseline of Balle et al. (2017, Sec. 2-3; ICLR 2018 App. 6.1 "factorized prior"): every latent channel c has a
density p_c and a quantised value q is coded with the probability of its bin,

    P_c(q) = F_c(q + 1/2) - F_c(q - 1/2),        F_c(t) = sigmoid((t - mu_c) / s_c)                      (bins)

(Balle's non-parametric cumulative is replaced by a logistic, a simpler learned factorised density; the rate
in training is -log2 P_c(y + u) with uniform noise u, at test -log2 P_c(round(y))). For coding the alphabet is
the integers -R..R (latents are clipped to it): the two end bins take the tails, so the table sums to 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def bin_probability(q: Float[Array, "... C"], loc: Float[Array, " C"], log_scale: Float[Array, " C"]
                    ) -> Float[Array, "... C"]:
    """P_c(q) = F(q + 1/2) - F(q - 1/2) per channel (last axis), computed stably as
    sigmoid(-a) - sigmoid(-b) on the side of the median where both CDF values are small."""
    scale = jnp.broadcast_to(jnp.exp(log_scale), q.shape)
    loc = jnp.broadcast_to(loc, q.shape)
    upper = (q + 0.5 - loc) / scale
    lower = (q - 0.5 - loc) / scale
    # Above the median use 1 - F (the survival function) so the difference does not cancel catastrophically.
    sign = jnp.where(lower + upper > 0, -1.0, 1.0)
    return jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))


def rate_bits(q: Float[Array, "... C"], loc: Float[Array, " C"], log_scale: Float[Array, " C"],
              floor: float = 1e-9) -> Float[Array, "... C"]:
    """-log2 max(P_c(q), floor) per element (the floor keeps the rate finite far in the tails)."""
    return -jnp.log2(jnp.maximum(bin_probability(q, loc, log_scale), floor))


def symbol_table(loc: Float[Array, " C"], log_scale: Float[Array, " C"], radius: int) -> Float[Array, "C A"]:
    """`[C, 2R + 1]` probabilities of the symbols -R..R; the end bins absorb the tails (rows sum to 1)."""
    edges = jnp.arange(-radius, radius + 2, dtype=loc.dtype) - 0.5  # [A + 1]
    cdf = jax.nn.sigmoid((edges[None, :] - loc[:, None]) / jnp.exp(log_scale)[:, None])
    cdf = cdf.at[:, 0].set(0.0).at[:, -1].set(1.0)
    return jnp.diff(cdf, axis=-1)


def to_symbols(y: Float[Array, "... C"], radius: int):
    """round(clip(y, -R, R)) + R: integer symbols 0..2R (int32)."""
    return (jnp.round(jnp.clip(y, -radius, radius)) + radius).astype(jnp.int32)


def from_symbols(symbols, radius: int, dtype=jnp.float32):
    """The quantised values symbol - R."""
    return symbols.astype(dtype) - radius
