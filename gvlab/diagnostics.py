"""Diagnostics of a Gaussian encoder's representations (Bonheme & Grzes, "Be More Active!", JMLR 2023; Burda et al.
2016 for active units), usable on any encoder's outputs.

For q(z|x) = N(mu(x), diag sigma^2(x)) evaluated on N inputs, the *mean* representation is mu(x), the *sampled*
one z = mu + sigma eps. All functions take arrays `[N, D]` (one row per input) and are pure jnp, so they jit and
vmap (over seeds, say); the classification returns integer codes rather than Python lists for the same reason.

    >>> import jax.numpy as jnp
    >>> cov = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    >>> round(float(gaussian_total_correlation(cov)), 4)   # -1/2 log(1 - 0.8^2)
    0.5108
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gvlab.dists import DiagNormal, kl_divergence
from gvlab.losses.elbo import iwae_bound, log_importance_weights

ACTIVE, MIXED, PASSIVE = 0, 1, 2


def per_dimension_kl(mean: Float[Array, "N D"], log_std: Float[Array, "N D"]) -> Float[Array, " D"]:
    """E_x KL(q(z_i|x) || N(0, 1)) per dimension: mean over inputs of (sigma^2 + mu^2 - 1 - 2 log sigma) / 2."""
    return jnp.mean(0.5 * (jnp.exp(2 * log_std) + jnp.square(mean) - 1.0 - 2 * log_std), axis=0)


def gaussian_kl_per_dimension(posterior: DiagNormal, prior: DiagNormal) -> Float[Array, " D"]:
    """E_x KL(q(z_i|x) || p(z_i)) per dimension for any diagonal Gaussian prior (broadcast to the posterior's
    `[N, D]`: N(0, eta^2 I), or a conditional p(z|c) with one row per input). A dimension whose mean KL is
    ~0 is collapsed; Dang et al. (2024) count as active those above 0.01 nats."""
    shape = jnp.broadcast_shapes(posterior.loc.shape, posterior.scale.shape)
    per_dim = kl_divergence(DiagNormal(jnp.broadcast_to(posterior.loc, shape), posterior.scale, event_ndims=0),
                            DiagNormal(jnp.broadcast_to(prior.loc, shape), jnp.broadcast_to(prior.scale, shape),
                                       event_ndims=0))
    return jnp.mean(per_dim, axis=0)


def active_units(mean: Float[Array, "N D"], threshold: float = 0.01) -> Int[Array, ""]:
    """Burda et al. (2016): the number of dimensions with Cov_x(E_q[z_i|x]) = Var_x(mu_i(x)) > threshold."""
    return jnp.sum(jnp.var(mean, axis=0) > threshold)


def classify_variables(variance: Float[Array, "N D"], spread: float = 0.1, tolerance: float = 0.1
                       ) -> Int[Array, " D"]:
    """Active / mixed / passive codes per dimension from the encoder variances sigma_i^2(x) (Bonheme & Grzes).

    With m_i and v_i the mean and variance over inputs of sigma_i^2(x): passive if v_i < spread and
    |m_i - 1| <= tolerance (the posterior is the prior for every x), active if v_i < spread and m_i <= tolerance,
    mixed otherwise. Codes: `ACTIVE` = 0, `MIXED` = 1, `PASSIVE` = 2 (defaults: the official 0.1 / 0.1).
    """
    m, v = jnp.mean(variance, axis=0), jnp.var(variance, axis=0)
    steady = v < spread
    passive = steady & (jnp.abs(m - 1.0) <= tolerance)
    active = steady & (m <= tolerance)
    return jnp.where(passive, PASSIVE, jnp.where(active, ACTIVE, MIXED))


def gaussian_total_correlation(cov: Float[Array, "D D"]) -> Float[Array, ""]:
    """TC of N(0, cov) = KL(N(0, cov) || N(0, diag cov)) = (sum_i log cov_ii - log det cov) / 2, in nats.

    Invariant to rescaling each dimension, so the covariance and the correlation matrix give the same value.
    """
    _, log_det = jnp.linalg.slogdet(cov)
    return 0.5 * (jnp.sum(jnp.log(jnp.diagonal(cov))) - log_det)


def _masked_covariance(x: Float[Array, "N D"], mask: Array | None) -> Float[Array, "D D"]:
    """Sample covariance; dimensions outside `mask` become independent unit-variance ones (they add 0 to TC)."""
    cov = jnp.cov(x, rowvar=False)
    if mask is None:
        return cov
    keep = mask[:, None] & mask[None, :]
    return jnp.where(keep, cov, jnp.eye(cov.shape[0], dtype=cov.dtype))


def total_correlation(x: Float[Array, "N D"], mask: Array | None = None) -> Float[Array, ""]:
    """Gaussian TC of a representation's sample covariance, over the dimensions where `mask` is True (all if None).

    The mask is an argument rather than an index list so that subsets (active, active + mixed, ...) of a vmapped
    batch of models share one compiled program.
    """
    return gaussian_total_correlation(_masked_covariance(x, mask))


def mean_abs_correlation(x: Float[Array, "N D"], mask: Array | None = None) -> Float[Array, ""]:
    """Mean |corr(x_i, x_j)| over pairs i != j inside `mask` (all dimensions if None); 0 when fewer than two."""
    d = x.shape[1]
    mask = jnp.ones((d,), bool) if mask is None else mask
    corr = jnp.corrcoef(x, rowvar=False)
    pairs = mask[:, None] & mask[None, :] & ~jnp.eye(d, dtype=bool)
    count = jnp.sum(pairs)
    return jnp.where(count > 0, jnp.sum(jnp.where(pairs, jnp.abs(corr), 0.0)) / jnp.maximum(count, 1), 0.0)


def discrete_mutual_information(x: Float[Array, "N D"], bins: int = 20) -> Float[Array, "D D"]:
    """Pairwise mutual information (nats) after discretising each dimension into `bins` equal-width bins.

    The plug-in estimate sum p(a, b) log p(a, b) / (p(a) p(b)) from 2-D histograms (the official code's
    "discrete MI" with 20 bins); the diagonal is each dimension's discrete entropy. Biased upwards by about
    (bins - 1)^2 / (2 N) for independent dimensions.
    """
    lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
    width = jnp.where(hi > lo, (hi - lo) / bins, 1.0)
    codes = jnp.clip(jnp.floor((x - lo[None]) / width[None]).astype(jnp.int32), 0, bins - 1)
    onehot = jax.nn.one_hot(codes, bins, dtype=x.dtype)  # [N, D, B]
    joint = jnp.einsum("nia,njb->ijab", onehot, onehot) / x.shape[0]  # [D, D, B, B]
    marginal = jnp.mean(onehot, axis=0)  # [D, B]
    outer = marginal[:, None, :, None] * marginal[None, :, None, :]
    terms = jnp.where(joint > 0, joint * (jnp.log(jnp.where(joint > 0, joint, 1.0)) - jnp.log(
        jnp.where(joint > 0, outer, 1.0))), 0.0)
    return jnp.sum(terms, axis=(2, 3))


def importance_sampled_log_likelihood(key: jax.Array, x: jax.Array, proposal, prior, decode,
                                      num_samples: int) -> Float[Array, " N"]:
    """log p(x) ~= log (1/S) sum_s p(x|z_s) p(z_s) / r(z_s), z_s ~ r, for any proposal r (Burda et al. 2016).

    With r = q(z|x, c) and a conditional prior/decoder (close over c) this is the conditional log-likelihood
    log p(x|c) of a CVAE as Sohn et al. (2015) evaluate it; with r = p(z|c) the weights reduce to p(x|c, z_s)
    (their estimate "from prior samples", which does not use the recognition network). Both are consistent as
    S grows and, for finite S, lower bounds in expectation. `proposal` and `prior` are `DiagNormal`s over `[N, D]`,
    `decode(z) -> p(x|z)` with `log_prob(x) -> [N]`.
    """
    return iwae_bound(log_importance_weights(key, x, proposal, prior, decode, num_samples))


def spearman_correlation(a: Float[Array, " N"], b: Float[Array, " N"]) -> Float[Array, ""]:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties get their average rank), in [-1, 1].

    0 when either input is constant (no ordering to correlate), rather than NaN, so a collapsed sweep reads as
    "no trend" in a claim. E.g. active units over an increasing sweep of rho: -1 when they strictly fall.

        >>> float(spearman_correlation(jnp.array([0.0, 0.5, 0.8]), jnp.array([9.0, 8.0, 5.0])))
        -1.0
    """
    ra = jax.scipy.stats.rankdata(a)
    rb = jax.scipy.stats.rankdata(b)
    ra, rb = ra - jnp.mean(ra), rb - jnp.mean(rb)
    norm = jnp.sqrt(jnp.sum(ra**2) * jnp.sum(rb**2))
    return jnp.where(norm > 0, jnp.sum(ra * rb) / jnp.where(norm > 0, norm, 1.0), 0.0)
