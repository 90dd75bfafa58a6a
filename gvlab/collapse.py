"""Closed-form posterior-collapse theory of the linear CVAE (Dang et al., "Beyond Vanilla Variational
Autoencoders: Detecting Posterior Collapse in Conditional and Hierarchical VAEs", ICLR 2024, Thm. 2).

Linear CVAE: q(z|x, y) = N(W1 x + W2 y, Sigma) (Sigma diagonal, learnable), p(z|x) = N(0, eta_enc^2 I),
p(y|x, z) = N(U1 z + U2 x, eta_dec^2 I), trained on the beta-weighted negative ELBO

    (1 / eta_dec^2) E|U1 z + U2 x - y|^2 + beta [(E|W1 x + W2 y|^2 + tr Sigma) / eta_enc^2 - log det Sigma
                                                 + d_z log eta_enc^2 - d_z].

With theta_1 >= theta_2 >= ... the eigenvalues of the conditional covariance E = Cov(y) - Cov(y, x) Cov(x)^-1
Cov(x, y), the global optimum has decoder singular values and encoder standard deviations

    lambda_i = sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc,
    sigma_i  = sqrt(beta) eta_enc eta_dec / sqrt(theta_i)  if theta_i >= beta eta_dec^2,  else eta_enc,

so latent dimension i collapses (lambda_i = 0, q = prior) iff theta_i <= beta eta_dec^2: the more y is predictable
from x (smaller theta), or the larger beta or eta_dec, the more collapse. The official `utils.py` compares sigma
with sqrt(beta) eta_dec, which contradicts the lambda formula; the threshold here is the lambda one (the notes
flag the official one as a typo, and `tests/test_collapse.py` checks the formulas against a numerical minimum).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class CVAEOptimum(NamedTuple):
    """Theory's global optimum, one entry per latent dimension (eigenvalues in decreasing order).

    Attributes:
        theta: conditional-covariance eigenvalues used, decreasing.
        singular_values: lambda_i of the decoder U1.
        encoder_std: sigma_i of q.
        collapsed: theta_i <= beta eta_dec^2.
        num_active: the number of non-collapsed dimensions.
    """

    theta: Float[Array, " D"]
    singular_values: Float[Array, " D"]
    encoder_std: Float[Array, " D"]
    collapsed: Bool[Array, " D"]
    num_active: Int[Array, ""]


def conditional_covariance_from_moments(cov_yy: Float[Array, "Dy Dy"], cov_yx: Float[Array, "Dy Dx"],
                                        cov_xx: Float[Array, "Dx Dx"]) -> Float[Array, "Dy Dy"]:
    """E = Cov(y) - Cov(y, x) Cov(x)^-1 Cov(x, y) (a linear solve, not an inverse), symmetrised."""
    e = cov_yy - cov_yx @ jnp.linalg.solve(cov_xx, cov_yx.T)
    return 0.5 * (e + e.T)


def second_moments(x: Float[Array, "N Dx"], y: Float[Array, "N Dy"]) -> dict[str, Array]:
    """`{"xx", "yy", "xy"}`: covariances of paired samples (population normalisation 1 / N)."""
    xc, yc = x - jnp.mean(x, axis=0, keepdims=True), y - jnp.mean(y, axis=0, keepdims=True)
    n = x.shape[0]
    return {"xx": xc.T @ xc / n, "yy": yc.T @ yc / n, "xy": xc.T @ yc / n}


def conditional_covariance(x: Float[Array, "N Dx"], y: Float[Array, "N Dy"]) -> Float[Array, "Dy Dy"]:
    """E estimated from paired samples (population normalisation 1 / N, as the expected-loss objective)."""
    m = second_moments(x, y)
    return conditional_covariance_from_moments(m["yy"], m["xy"].T, m["xx"])


def cvae_optimum(conditional_cov: Float[Array, "Dy Dy"], latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0,
                 eta_dec: float = 1.0) -> CVAEOptimum:
    """The global optimum of Dang et al.'s Thm. 2 for `latent_dim` latent dimensions (the top eigenvalues)."""
    theta = jnp.linalg.eigvalsh(conditional_cov)[::-1][:latent_dim]
    if theta.shape[0] < latent_dim:  # more latents than outputs: the extra ones see theta = 0 and collapse
        theta = jnp.concatenate([theta, jnp.zeros((latent_dim - theta.shape[0],), theta.dtype)])
    threshold = beta * eta_dec**2
    collapsed = theta <= threshold
    singular_values = jnp.sqrt(jnp.maximum(0.0, theta - threshold)) / eta_enc
    active_std = jnp.sqrt(beta) * eta_enc * eta_dec / jnp.sqrt(jnp.where(collapsed, 1.0, theta))
    encoder_std = jnp.where(collapsed, eta_enc, active_std)
    return CVAEOptimum(theta=theta, singular_values=singular_values, encoder_std=encoder_std, collapsed=collapsed,
                       num_active=jnp.sum(~collapsed))
