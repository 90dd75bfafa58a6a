"""The latent diffusion model on D2C-VAE latents (built on `gvlab.diffusion`) and the Frechet distance of samples.

DDMI's LDM (Park et al. 2024, Sec. 3.4; official code `diffusion/ddpm.py`) is an eps-prediction DDPM on the VAE's
latents with LSGM's *mixed prediction* (Vahdat et al. 2021, Eq. 5; `get_mixed_prediction`, `get_mixing_component`):

    eps_hat(x_t, t) = (1 - sigmoid(m)) sigma_t x_t + sigmoid(m) eps_theta(x_t, t),     m init -6 (`mixed_init`),

a learnable per-channel logit m: the first term is the exact eps of a standard-normal latent, so the network only
learns the correction. `MixedPrediction` (`gvlab.nn.inr`, re-exported here) wraps any `(x, t) -> eps` network;
`make_latent_diffusion` trains it with `gvlab.diffusion.make_method` (the unit-weighted eps loss) and
`sample_latents` draws with `gvlab.diffusion.sample` (DDIM, eta = 0, as DDMI's `sampling_timesteps: 50`).

The Frechet distance of two sample sets in a fixed feature space (FID's formula, Heusel et al. 2017):

    FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}),

with the matrix square roots from `eigh` (pure jnp). `pca_features` fits the fixed projection (top-k principal
axes of reference data) once, so every model's samples are measured in the same space.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.diffusion import losses, samplers
from gvlab.diffusion.schedules import Schedule
from gvlab.nn.inr import MixedPrediction as MixedPrediction
from gvlab.types import Method, Params

if TYPE_CHECKING:  # annotations only: flax.linen is imported by gvlab.nn
    import flax.linen as nn


def make_latent_diffusion(network: nn.Module, schedule: Schedule, mixed_init: float | None = -6.0
                          ) -> tuple[Method, nn.Module]:
    """The LDM as a `Method` on batches `{"x": latents [B, d]}` (eps loss, `gvlab.diffusion.make_method`), and the
    module whose `apply(params, x, t)` is its eps prediction (mixed unless `mixed_init` is None)."""
    module = network if mixed_init is None else MixedPrediction(network, schedule, mixed_init)
    return losses.make_method(module, "eps", schedule), module


def sample_latents(module: nn.Module, params: Params, schedule: Schedule, key: PRNGKeyArray, num: int, dim: int,
                   num_steps: int = 50, sampler: str = "ddim") -> Float[Array, "N d"]:
    """`num` latents from the LDM with a fixed-step sampler of `gvlab.diffusion.samplers` (default DDIM, eta 0)."""
    model = samplers.Model(lambda x, t: module.apply(params, x, t), "eps")
    return samplers.sample(sampler, model, schedule, key, (num, dim), num_steps).x


@functools.partial(jax.jit, static_argnames="num_components")
def pca_features(reference: Float[Array, "N D"], num_components: int) -> dict[str, Array]:
    """The fixed feature map: mean and top principal axes `[D, k]` of the reference rows."""
    if not 1 <= num_components <= min(reference.shape):
        raise ValueError(f"num_components must lie in [1, {min(reference.shape)}], got {num_components}")
    mean = jnp.mean(reference, axis=0)
    _, _, vt = jnp.linalg.svd(reference - mean[None], full_matrices=False)
    return {"mean": mean, "axes": vt[:num_components].T}


def project(features: dict[str, Any], x: Float[Array, "N D"]) -> Float[Array, "N k"]:
    """Rows in the `pca_features` space."""
    return (x - features["mean"][None]) @ features["axes"]


def _sqrtm_psd(matrix: Array) -> Array:
    values, vectors = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * jnp.sqrt(jnp.clip(values, 0.0))[None]) @ vectors.T


@jax.jit
def frechet_distance(a: Float[Array, "N k"], b: Float[Array, "M k"]) -> Float[Array, ""]:
    """Frechet distance between Gaussians fitted to two sample sets (module docstring)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [N, k] and [M, k] features, got {a.shape} and {b.shape}")
    mu_a, mu_b = jnp.mean(a, 0), jnp.mean(b, 0)
    cov_a, cov_b = jnp.cov(a, rowvar=False), jnp.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return jnp.sum(jnp.square(mu_a - mu_b)) + jnp.trace(cov_a) + jnp.trace(cov_b) - 2.0 * jnp.trace(cross)


@jax.jit
def pca_frechet_distance(features: dict[str, Any], a: Float[Array, "N D"], b: Float[Array, "M D"]) -> Float[Array, ""]:
    """`frechet_distance` of two sets of rows (e.g. flattened images) in the `pca_features` space."""
    return frechet_distance(project(features, a), project(features, b))
