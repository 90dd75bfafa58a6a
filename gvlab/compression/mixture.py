"""The unified multivariate Gaussian mixture (UMG) prior and probabilistic multi-codebook vector quantisation.

McQuic (Zhu, Yang & Cohen, CVPR 2022, Sec. 3.2, Eq. 4-6; official code `mcquic/modules/quantizer.py` at commit
8927e1b, `_multiCodebookQuantization.encode/_sampleAndDequantize`): a latent y in R^D is split into m sub-vectors
y_j in R^(D/m), each with the prior

    p(y_j) = sum_k pi_jk N(y_j; c_jk, sigma_j^2 I),       sigma_j^2 = 1 / (2 kappa_j)                    (UMG)

whose means are the codewords of codebook C_j and whose isotropic covariance is shared ("unified") by the K
components. The posterior over components is a softmax of the logits

    l_jk = log pi_jk - kappa_j ||y_j - c_jk||^2                                                           (logits)

(McQuic's logits are -||y_j - c_jk||^2 / sqrt(K) * LB(tau_j): the same with uniform pi and kappa = LB(tau)/sqrt(K);
the lower bound LB keeps kappa >= `MIN_PRECISION`). Training draws s_j = GumbelSoftmax(l_j, t=1, hard) with the
straight-through gradient (`Gumbel-Softmax`, Jang et al. 2017, Eq. 1-2) and y_hat_j = sum_k s_jk c_jk; inference
takes the MAP component argmax_k l_jk (McQuic's argmin distance when pi is uniform). The code index k is entropy
coded with the categorical pi_j, so its rate is -log2 pi_jk bits. The prior can also be fitted by hard EM on the
latents (`em_update`: codewords = means of their sub-vectors, pi = frequencies, kappa = `ml_precision`, the
closed-form maximum-likelihood precision of the shared isotropic covariance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gvlab.compression import quantisers as vq
from gvlab.compression.quantisers import squared_distances

MIN_PRECISION = 1e-4  # LB(.) of McQuic's temperature


def precision(log_precision: Float[Array, " m"]) -> Float[Array, " m"]:
    """kappa_j = max(exp(log kappa_j), MIN_PRECISION) (McQuic's lower-bounded temperature)."""
    return jnp.maximum(jnp.exp(log_precision), MIN_PRECISION)


def component_logits(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"], log_weights: Float[Array, "m K"],
                     log_precision: Float[Array, " m"]) -> Float[Array, "... m K"]:
    """l_jk = log pi_jk - kappa_j ||y_j - c_jk||^2 (module docstring), with pi = softmax(log_weights)."""
    distances = squared_distances(y, codebooks)
    log_pi = jnp.broadcast_to(jax.nn.log_softmax(log_weights, axis=-1), distances.shape)
    return log_pi - jnp.broadcast_to(precision(log_precision)[:, None], distances.shape) * distances


def log_prob(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"], log_weights: Float[Array, "m K"],
             log_precision: Float[Array, " m"]) -> Float[Array, "... m"]:
    """log p(y_j) of the UMG prior in nats: logsumexp_k(l_jk) - (d/2) log(2 pi sigma_j^2), sigma_j^2 = 1/(2 kappa_j)."""
    d = codebooks.shape[-1]
    variance = 0.5 / precision(log_precision)
    normaliser = 0.5 * d * jnp.log(2.0 * jnp.pi * variance)
    log_marginal = jax.nn.logsumexp(component_logits(y, codebooks, log_weights, log_precision), axis=-1)
    return log_marginal - jnp.broadcast_to(normaliser, log_marginal.shape)


def gumbel_hard(logits: Float[Array, "... K"], key, temperature: float = 1.0) -> Float[Array, "... K"]:
    """One-hot of argmax(l + g) forward, the softmax((l + g) / t) gradient backward (straight-through Gumbel)."""
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + g) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(logits + g, axis=-1), logits.shape[-1], dtype=logits.dtype)
    return jax.lax.stop_gradient(hard) + (soft - jax.lax.stop_gradient(soft))  # exactly one-hot in value


def quantise(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"], log_weights: Float[Array, "m K"],
             log_precision: Float[Array, " m"], key=None) -> tuple[Float[Array, "... m d"], Float[Array, "... m K"]]:
    """Probabilistic VQ: (y_hat, one-hot s). With a key: Gumbel straight-through sample (McQuic's training); without:
    the MAP component (inference), both with the softmax gradient (straight-through)."""
    logits = component_logits(y, codebooks, log_weights, log_precision)
    if key is None:  # MAP one-hot forward, the softmax gradient backward
        soft = jax.nn.softmax(logits, -1)
        hard = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=y.dtype)
        s = jax.lax.stop_gradient(hard) + (soft - jax.lax.stop_gradient(soft))
    else:
        s = gumbel_hard(logits, key)
    return jnp.einsum("...mk,mkd->...md", s, codebooks), s


def map_indices(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"], log_weights: Float[Array, "m K"],
                log_precision: Float[Array, " m"]) -> Int[Array, "... m"]:
    """argmax_k l_jk: the symbols that are entropy coded."""
    return jnp.argmax(component_logits(y, codebooks, log_weights, log_precision), -1)


def smallinit_codebooks(key, groups: int, size: int, dim: int) -> Float[Array, "m K d"]:
    """Codewords ~ N(0, 2 / (5 d)) (McQuic's "SmallInit", `quantizer.py` codebook initialisation)."""
    return jax.random.normal(key, (groups, size, dim)) * jnp.sqrt(2.0 / (5.0 * dim))


def ml_precision(sq_residual: Float[Array, " m"], dim: int) -> Float[Array, " m"]:
    """kappa_j = d / (2 E||y_j - c_jk*||^2): the maximum-likelihood precision of the shared isotropic covariance
    (sigma_j^2 = E||y_j - c_jk*||^2 / d, the M-step of hard EM for a Gaussian mixture with one sigma), floored at
    `MIN_PRECISION`."""
    return jnp.maximum(0.5 * dim / jnp.maximum(sq_residual, 1e-12), MIN_PRECISION)


def hard_sq_residual(y: Float[Array, "... m d"], codebooks: Float[Array, "m K d"],
                     indices: Int[Array, "... m"]) -> Float[Array, " m"]:
    """E||y_j - c_{j,k_j}||^2 over the vectors of a batch, per group (the sufficient statistic of `ml_precision`)."""
    residual = jax.lax.stop_gradient(y) - vq.lookup(indices, codebooks)
    return jnp.mean(jnp.sum(jnp.square(residual), -1).reshape(-1, codebooks.shape[0]), 0)


def em_update(state: dict[str, Array], y: Float[Array, "... m d"], indices: Int[Array, "... m"],
              decay: float | Array) -> dict[str, Array]:
    """One hard-EM step of the UMG prior as moving averages of sg(y): code counts and sums (`quantisers.ema_update`:
    pi = frequencies, codewords = means) and the mean squared residual to the chosen codeword (-> kappa)."""
    sq = hard_sq_residual(y, vq.ema_codebooks(state), indices)
    out = vq.ema_update({"counts": state["counts"], "sums": state["sums"]}, y, indices, decay)
    out["sq_residual"] = decay * state["sq_residual"] + (1.0 - decay) * sq
    return out
