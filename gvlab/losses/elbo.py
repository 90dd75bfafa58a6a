"""The evidence lower bound with a regulariser hook, and the importance-weighted bound.

For a latent-variable model p(x, z) = p(z) p(x|z) and an encoder q(z|x),

    log p(x) >= ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))            (Kingma & Welling 2014, Eq. 3)
    log p(x) >= IWAE_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)] >= ELBO(x)  (Burda et al. 2016, Eq. 8)

and IWAE_K is non-decreasing in K. The training objective replaces the KL by a regulariser of the per-dimension
KL (`beta_kl(beta)` gives the beta-VAE objective of Higgins et al. 2017, Eq. 4), following the single ELBO
skeleton of disentanglement_lib with the step passed explicitly (annealing reads it).

Conventions: functions take a batch; `recon` and `kl` are per example (`[B]`), summed over data and latent
dimensions; losses are means over the batch.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.dists import DiagNormal, kl_divergence
from gvlab.types import Metrics

Regulariser = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, Metrics]]
"""`regulariser(kl_per_dim [B, D], z [B, D], step) -> (penalty, terms)`; the penalty is added to -recon."""


def beta_kl(beta: float = 1.0) -> Regulariser:
    """`beta * KL` (beta = 1: the plain ELBO). Reports `elbo/beta_kl`."""

    def regulariser(kl_per_dim: jax.Array, z: jax.Array, step: jax.Array) -> tuple[jax.Array, Metrics]:
        del z, step
        penalty = beta * jnp.mean(jnp.sum(kl_per_dim, axis=-1))
        return penalty, {"elbo/beta_kl": penalty}

    return regulariser


def weighted_kl(weights: jax.Array) -> Regulariser:
    """`sum_i w_i KL_i` with one weight per latent dimension (e.g. beta_1 on z_1's dimensions and beta_2 on
    z_2's in a two-level hierarchical VAE). Reports `elbo/weighted_kl`."""

    def regulariser(kl_per_dim: jax.Array, z: jax.Array, step: jax.Array) -> tuple[jax.Array, Metrics]:
        del z, step
        w = jnp.broadcast_to(jnp.asarray(weights, kl_per_dim.dtype), kl_per_dim.shape)  # explicit: rank-strict
        penalty = jnp.mean(jnp.sum(w * kl_per_dim, axis=-1))
        return penalty, {"elbo/weighted_kl": penalty}

    return regulariser


def gaussian_elbo(key: PRNGKeyArray, x: Float[Array, "B *data"], posterior: DiagNormal, prior: DiagNormal,
                  decode: Callable[[jax.Array], object]
                  ) -> tuple[Float[Array, "B"], Float[Array, "B D"], Float[Array, "B D"]]:
    """One-sample reparameterised ELBO terms with the KL in closed form.

    Args:
        key: key of the reparameterisation noise.
        x: data `[B, ...]`.
        posterior: q(z|x), a `DiagNormal` with loc/scale `[B, D]`.
        prior: p(z), a `DiagNormal` broadcastable to `[B, D]`.
        decode: `z [B, D] -> p(x|z)`, any distribution with `log_prob(x) -> [B]`.

    Returns:
        `(recon [B], kl_per_dim [B, D], z [B, D])` with recon = log p(x|z) at z ~ q(z|x).
    """
    z = posterior.sample(key)
    recon = decode(z).log_prob(x)
    per_dim_q = DiagNormal(posterior.loc, posterior.scale, event_ndims=0)
    per_dim_p = DiagNormal(jnp.broadcast_to(prior.loc, z.shape), jnp.broadcast_to(prior.scale, z.shape),
                           event_ndims=0)
    return recon, kl_divergence(per_dim_q, per_dim_p), z


def elbo_loss(recon: Float[Array, "B"], kl_per_dim: Float[Array, "B D"], z: Float[Array, "B D"], step: jax.Array,
              regulariser: Regulariser | None = None) -> tuple[Float[Array, ""], Metrics]:
    """Loss `mean(-recon) + regulariser(kl)` and the terms `elbo/recon`, `elbo/kl`, `elbo/elbo` (+ the hook's).

    `elbo/elbo` is always the true ELBO (recon - KL), whatever the regulariser, so runs with different
    regularisers stay comparable.
    """
    regulariser = regulariser or beta_kl(1.0)
    penalty, terms = regulariser(kl_per_dim, z, step)
    kl = jnp.sum(kl_per_dim, axis=-1)
    metrics = {
        "elbo/recon": jnp.mean(recon),
        "elbo/kl": jnp.mean(kl),
        "elbo/elbo": jnp.mean(recon - kl),
        **terms,
    }
    return -jnp.mean(recon) + penalty, metrics


def log_importance_weights(key: PRNGKeyArray, x: Float[Array, "B *data"], posterior: DiagNormal,
                           prior: DiagNormal, decode: Callable[[jax.Array], object],
                           num_samples: int) -> Float[Array, "K B"]:
    """`log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)` for K samples z_k ~ q(z|x): shape `[K, B]`."""
    z_KxBxD = posterior.sample(key, (num_samples,))
    log_px_z = jax.vmap(lambda z: decode(z).log_prob(x))(z_KxBxD)
    return log_px_z + prior.log_prob(z_KxBxD) - posterior.log_prob(z_KxBxD)


def iwae_bound(log_weights: Float[Array, "K *batch"]) -> Float[Array, "*batch"]:
    """`log (1/K) sum_k exp(log w_k)` over the first axis: the IWAE bound per example (Burda et al., Eq. 8)."""
    return jax.scipy.special.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])
