"""Sample-based distances between generated and reference point clouds.

Sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015) between two empirical measures of equal size N:

    SWD_2(a, b) = ( E_theta W_2^2(theta^T a, theta^T b) )^(1/2),   W_2^2 in 1-D = (1/N) sum_i (a'_(i) - b'_(i))^2,

with theta uniform on the unit sphere (Monte Carlo over `num_projections` directions) and a'_(i) the sorted
projections, the exact 1-D optimal coupling. The 2-D diffusion checks (`diffusion/principles`) compare a sampler's SWD
with the noise floor SWD(data, fresh data).

    >>> import jax, jax.numpy as jnp
    >>> a = jax.random.normal(jax.random.key(0), (500, 2))
    >>> float(sliced_wasserstein(a, a, jax.random.key(1)))
    0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def random_directions(key: PRNGKeyArray, num: int, dim: int, dtype=jnp.float32) -> Float[Array, "P d"]:
    """`num` directions uniform on the unit sphere in `dim` dimensions (normalised Gaussians)."""
    theta = jax.random.normal(key, (num, dim), dtype)
    return theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)


def sliced_wasserstein(a: Float[Array, "N d"], b: Float[Array, "N d"], key: PRNGKeyArray,
                       num_projections: int = 128) -> Float[Array, ""]:
    """SWD_2 between the empirical measures of `a` and `b` (same N; see the module docstring). Scalar.

    Translating one set by u gives exactly (mean_theta (theta . u)^2)^(1/2), about |u| / sqrt(d) for many
    directions: sorting commutes with the shift.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two sample sets of equal shape [N, d], got {a.shape} and {b.shape}")
    theta_PxD = random_directions(key, num_projections, a.shape[1], a.dtype)
    a_sorted_NxP = jnp.sort(a @ theta_PxD.T, axis=0)
    b_sorted_NxP = jnp.sort(b @ theta_PxD.T, axis=0)
    return jnp.sqrt(jnp.mean((a_sorted_NxP - b_sorted_NxP) ** 2))
