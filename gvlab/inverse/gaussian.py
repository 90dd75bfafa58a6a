"""The exact posterior of a Gaussian prior under a linear-Gaussian measurement: the oracle for inverse solvers.

Prior x ~ N(mu, Sigma) on R^D, measurement y = A x + n with n ~ N(0, sigma_y^2 I) on R^M. Then x | y is Gaussian
(Bishop 2006, Eqs. 2.116-2.117, rewritten by the Woodbury identity in the Kalman "gain" form) with

    K = Sigma A^T (A Sigma A^T + sigma_y^2 I)^-1,      mean = mu + K (y - A mu),      cov = (I - K A) Sigma.

The mean is the MMSE estimate that RED-Diff's Part A (Mardani et al. 2024) bounds RED-Diff and DPS with, and
the Tweedie denoiser of a Gaussian prior is the special case A = alpha_t I, sigma_y = sigma_t, y = x_t:
E[x_0 | x_t] = `gaussian_posterior(mu, Sigma, alpha_t * I, x_t, sigma_t).mean`. Explicit matrices, O(D^3):
small D (8x8 digits, D = 64); build A with `gvlab.inverse.operators.dense_matrix`. Limits: sigma_y -> inf gives
the prior; A = I, sigma_y -> 0 gives mean = y (least squares), and any A with sigma_y -> 0 gives A mean = y.

    >>> post = gaussian_posterior(jnp.zeros(1), jnp.eye(1), jnp.eye(1), jnp.array([2.0]), 1.0)
    >>> round(float(post.mean[0]), 5), round(float(post.cov[0, 0]), 5)   # s^2 y / (s^2 + v), s^2 v / (s^2 + v)
    (1.0, 0.5)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class GaussianPosterior(NamedTuple):
    """p(x | y) = N(mean, cov).

    Attributes:
        mean: `[..., D]`, one row per measurement in y's leading axes.
        cov: `[D, D]`, shared: it does not depend on y.
        gain: K, `[D, M]`; mean = mu + K (y - A mu).
    """

    mean: Float[Array, "*batch D"]
    cov: Float[Array, "D D"]
    gain: Float[Array, "D M"]


def fit_gaussian(x: np.ndarray, jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian prior fitted to data: (the sample mean `x.shape[1:]`, the sample covariance + jitter I `[D, D]`) of
    examples `x` `[N, ...]`, computed in float64 numpy (`np.cov`, N - 1 normalisation) and returned as float32."""
    flat = np.asarray(x).reshape(len(x), -1).astype(np.float64)
    cov = np.cov(flat, rowvar=False) + jitter * np.eye(flat.shape[1])
    return flat.mean(0).reshape(np.shape(x)[1:]).astype(np.float32), cov.astype(np.float32)


def gaussian_posterior(prior_mean: Float[ArrayLike, " D"], prior_cov: Float[ArrayLike, "D D"],
                       a: Float[ArrayLike, "M D"], y: Float[ArrayLike, "*batch M"],
                       noise_std: float | Array) -> GaussianPosterior:
    """The exact posterior of N(prior_mean, prior_cov) given y = a x + N(0, noise_std^2 I) (module docstring).

    A Cholesky solve with S = A Sigma A^T + sigma_y^2 I (no explicit inverse), so S must be positive definite:
    sigma_y > 0, or A Sigma A^T nonsingular. The covariance uses Joseph's form
    (I - K A) Sigma (I - K A)^T + sigma_y^2 K K^T, equal to (I - K A) Sigma for the optimal K but symmetric and
    positive semi-definite in floating point, which the sampler's square root needs.
    """
    mu, sigma, a, y = (jnp.asarray(v) for v in (prior_mean, prior_cov, a, y))
    noise_var = jnp.square(jnp.asarray(noise_std, sigma.dtype))
    a_sigma = a @ sigma  # [M, D]
    s = a_sigma @ a.T + noise_var * jnp.eye(a.shape[0], dtype=sigma.dtype)
    gain = cho_solve(cho_factor(s, lower=True), a_sigma).T  # S^-1 A Sigma = K^T, as Sigma and S are symmetric
    residual = y - jnp.broadcast_to(a @ mu, y.shape)
    mean = jnp.broadcast_to(mu, residual.shape[:-1] + mu.shape) + residual @ gain.T
    reduce = jnp.eye(mu.shape[0], dtype=sigma.dtype) - gain @ a
    cov = reduce @ sigma @ reduce.T + noise_var * gain @ gain.T
    return GaussianPosterior(mean=mean, cov=0.5 * (cov + cov.T), gain=gain)


def sample_gaussian(key: PRNGKeyArray, mean: Float[ArrayLike, "*batch D"], cov: Float[ArrayLike, "D D"],
                    sample_shape: tuple[int, ...] = ()) -> Float[Array, "*sample *batch D"]:
    """x = mean + L eps with L L^T = cov, shape `sample_shape + mean.shape`.

    L = V sqrt(max(lambda, 0)) from the eigendecomposition rather than a Cholesky factor, so singular covariances
    (a posterior with sigma_y -> 0, or a digits covariance of rank < D) are sampled exactly instead of failing.
    """
    mean, cov = jnp.asarray(mean), jnp.asarray(cov)
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    root = eigenvectors * jnp.sqrt(jnp.maximum(eigenvalues, 0.0))[None, :]
    shape = tuple(sample_shape) + mean.shape
    eps = jax.random.normal(key, shape, mean.dtype)
    return jnp.broadcast_to(mean, shape) + eps @ root.T


def sample_posterior(key: PRNGKeyArray, posterior: GaussianPosterior, sample_shape: tuple[int, ...] = ()
                     ) -> Float[Array, "*sample *batch D"]:
    """Exact samples of x | y: `sample_gaussian(key, posterior.mean, posterior.cov, sample_shape)`."""
    return sample_gaussian(key, posterior.mean, posterior.cov, sample_shape)
