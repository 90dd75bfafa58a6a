"""Input-output pairs with a chosen correlation: the synthetic data of Dang et al.'s collapse study (ICLR 2024).

    y ~ N(0, diag s^2),   x_i = rho y_i / s_i + sqrt(1 - rho^2) n_i,   n ~ N(0, I),

so x_i is y_i's standardised value plus independent noise and the conditional covariance of y given x is
Cov(y | x) = diag(s^2 (1 - rho^2)): rho = 0 makes x useless for predicting y, rho -> 1 makes y a function of x.

    >>> pairs = correlated_pairs(jax.random.key(0), 5, jnp.array([0.5, 2.0]), 0.8)
    >>> pairs["x"].shape, pairs["y"].shape
    ((5, 2), (5, 2))
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def correlated_pairs(key: PRNGKeyArray, num_pairs: int, variances: Float[Array, " D"], rho: float
                     ) -> dict[str, Float[Array, "N D"]]:
    """`{"x": [N, D], "y": [N, D]}` with Var(y_i) = variances_i and Corr(x_i, y_i) = rho."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho}")
    std = jnp.sqrt(variances)[None]
    y_key, n_key = jax.random.split(key)
    y = jax.random.normal(y_key, (num_pairs, variances.shape[0])) * std
    x = rho * y / std + math.sqrt(1 - rho**2) * jax.random.normal(n_key, (num_pairs, variances.shape[0]))
    return {"x": x, "y": y}
