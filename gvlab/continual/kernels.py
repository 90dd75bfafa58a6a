"""Kernel ridge regression (KRR) classifiers on learned features, as in kernel continual learning (KCL,
Derakhshani et al., ICML 2021, Eqs. 3-5; code `mmderakhshani/KCL`).

Given a support set with features S [n, d] and one-hot labels Y [n, C], the dual weights and predictions are

    alpha = (K + lambda I)^{-1} Y,     K[i, j] = k(s_i, s_j)            (KCL Eq. 4)
    f(x)  = gamma k(x, S) alpha + beta                                   (KCL Eq. 5)

with lambda = |raw| + 0.01 (the positive parameterisation of the KCL code), and gamma, beta learnable scalars.
Everything is a pure function of arrays and composes with `jit`, `vmap` and `grad` (the solve is a Cholesky solve,
differentiable in K and lambda).

Examples:
    >>> import jax.numpy as jnp
    >>> s = jnp.eye(2)
    >>> alpha = krr_weights(linear_kernel(s, s), jnp.eye(2), jnp.asarray(1.0))
    >>> [round(float(v), 3) for v in alpha.ravel()]
    [0.5, 0.0, 0.0, 0.5]
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.errors import ConfigError

Kernel = Callable[[Array, Array], Array]
MIN_REGULARISER = 0.01  # the KCL code's floor: lambda = |raw| + 0.01 keeps K + lambda I well conditioned


def linear_kernel(a: Float[Array, "n d"], b: Float[Array, "m d"]) -> Float[Array, "n m"]:
    """k(a, b) = a . b."""
    return a @ b.T


def rbf_kernel(a: Float[Array, "n d"], b: Float[Array, "m d"]) -> Float[Array, "n m"]:
    """The KCL code's "rbf" kernel k(a, b) = exp(-0.25 ||a - b||_1) (an L1, i.e. Laplacian, form)."""
    return jnp.exp(-0.25 * jnp.sum(jnp.abs(a[:, None, :] - b[None, :, :]), axis=-1))


KERNELS: dict[str, Kernel] = {"linear": linear_kernel, "rbf": rbf_kernel}


def kernel(name: str) -> Kernel:
    """Look a kernel up by name (`"linear"` or `"rbf"`)."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigError(f"unknown kernel {name!r}; choose from {sorted(KERNELS)}") from None


def positive_regulariser(raw: Float[Array, "..."]) -> Float[Array, "..."]:
    """lambda = |raw| + 0.01: the learnable ridge of KCL, positive for any raw value."""
    return jnp.abs(raw) + MIN_REGULARISER


def krr_weights(gram: Float[Array, "n n"], targets: Float[Array, "n c"],
                regulariser: Float[Array, ""]) -> Float[Array, "n c"]:
    """alpha = (K + lambda I)^{-1} Y (KCL Eq. 4), by a Cholesky solve (K is PSD and lambda > 0)."""
    system = gram + regulariser * jnp.eye(gram.shape[0], dtype=gram.dtype)
    factor = jax.scipy.linalg.cho_factor(system, lower=True)
    return jax.scipy.linalg.cho_solve(factor, targets)


def krr_predict(query_gram: Float[Array, "m n"], alpha: Float[Array, "n c"], gamma: Float[Array, ""],
                beta: Float[Array, ""]) -> Float[Array, "m c"]:
    """f(x) = gamma k(x, S) alpha + beta (KCL Eq. 5); rows are logits of the query points."""
    return gamma * (query_gram @ alpha) + beta


def krr_logits(kernel_fn: Kernel, support: Float[Array, "n d"], support_labels: Float[Array, "n c"],
               query: Float[Array, "m d"], raw_regulariser: Float[Array, ""], gamma: Float[Array, ""],
               beta: Float[Array, ""]) -> Float[Array, "m c"]:
    """Solve KRR on the support features and return logits of the query features."""
    alpha = krr_weights(kernel_fn(support, support), support_labels, positive_regulariser(raw_regulariser))
    return krr_predict(kernel_fn(query, support), alpha, gamma, beta)
