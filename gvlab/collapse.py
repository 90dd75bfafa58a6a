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
with sqrt(beta) eta_dec, which contradicts the lambda formula; the threshold here is the lambda one (the
official one is taken as a typo, and `tests/test_collapse.py` checks the formulas against a numerical minimum).

The second half of the module is the same theory for the paper's linear two-latent hierarchical VAE:
`hvae_optimum` (Sigma2 learnable), `hvae_optimum_fixed_sigma2` (Sigma2 fixed; one threshold of the official code
corrected), `hvae_expected_loss` (the closed-form objective) and `hvae_optimal_params`; `tests/test_collapse_hvae.py`
checks them against Monte Carlo and a numerical minimum.
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



def cvae_expected_loss(params: dict[str, Array], moments: dict[str, Array], *, beta: float | Array = 1.0,
                       eta_enc: float = 1.0, eta_dec: float = 1.0) -> tuple[Array, dict[str, Array]]:
    """The beta-CVAE negative ELBO (times 2, constants dropped) with E over z in closed form, from second moments.

    z = W1 x + W2 y + sigma eps: E|U1 z + U2 x - y|^2 = E|A x + B y|^2 + tr(U1 diag(sigma^2) U1^T) with
    A = U1 W1 + U2, B = U1 W2 - I; the KL term is (E|W1 x + W2 y|^2 + tr Sigma) / eta_enc^2 - log det Sigma
    + d_z log eta_enc^2 - d_z (module docstring). The official `matrix_CVAE.py` objective.

    Args:
        params: `w1` [dz, dx], `w2` [dz, dy], `u1` [dy, dz], `u2` [dy, dx], `log_sigma` [dz].
        moments: `second_moments(x, y)` of the whole dataset (expected loss) or of a minibatch.

    Returns:
        (scalar loss, {"cvae/recon", "cvae/kl"}).
    """
    w1, w2, u1, u2, log_sigma = (params[k] for k in ("w1", "w2", "u1", "u2", "log_sigma"))
    var = jnp.exp(2 * log_sigma)
    dz = log_sigma.shape[0]

    def quadratic(a, b):  # E|a x + b y|^2
        return (jnp.trace(a @ moments["xx"] @ a.T) + 2 * jnp.trace(a @ moments["xy"] @ b.T)
                + jnp.trace(b @ moments["yy"] @ b.T))

    a, b = u1 @ w1 + u2, u1 @ w2 - jnp.eye(u1.shape[0], dtype=u1.dtype)
    recon = (quadratic(a, b) + jnp.sum(var[None] * jnp.square(u1))) / eta_dec**2
    kl = (quadratic(w1, w2) + jnp.sum(var)) / eta_enc**2 - jnp.sum(2 * log_sigma) + dz * jnp.log(eta_enc**2) - dz
    return recon + beta * kl, {"cvae/recon": recon, "cvae/kl": kl}


def decoder_singular_values(params: dict[str, Array], data=None, key=None) -> dict[str, Array]:
    """`{"singular_values": [min(dy, dz)]}`: U1's singular values, decreasing (Thm. 2's lambda_i; active: > 0).

    A per-run evaluator (`run.evaluate`) of a linear CVAE's parameters (`cvae_expected_loss`'s layout).
    """
    del data, key
    return {"singular_values": jnp.linalg.svd(params["u1"], compute_uv=False)}

# ----------------------------------------------------------------------------------------------------------------
# Linear two-latent Markovian HVAE (Dang et al. 2024, its MHVAE theorems, and the official `utils.py`)
#
# q(z1|x) = N(W1 x, sigma1^2 I) (Sigma1 fixed), q(z2|z1) = N(W2 z1, Sigma2), p(z2) = N(0, eta_enc^2 I),
# p(z1|z2) = N(U2 z2, eta_dec^2 I), p(x|z1) = N(U1 z1, eta_dec^2 I). With A = E[x x^T] (uncentred), theta_i the
# square roots of A's eigenvalues, and the problem split into independent modes, write a = E[z1_i^2] =
# lambda^2 + sigma1^2 for the energy of z1 in mode i (lambda: singular value of V1 = W1 A^(1/2)). Minimising over
# U1 leaves theta^2 sigma1^2 / a; minimising the z2 part (a one-dimensional beta-VAE on z1 with beta' =
# beta2 / beta1) leaves beta1 eta_dec^2 G(a), with G linear (z2 mode collapsed) for a <= b and concave above it.
# The sum theta^2 sigma1^2 / a + beta1 eta_dec^2 G(a) has one minimiser a* on the active side (a >= b):
#     learnable Sigma2:          b = beta' eta_dec^2,     a* = theta^2 sigma1^2 / (beta2 eta_dec^2),
#     fixed Sigma2 = sigma2^2 I: b = beta' c^2 sigma2^2,  a* = (theta^2 sigma1^2 / (sqrt(beta1 beta2) c sigma2))^(2/3)
# (c = eta_dec / eta_enc), and theta sigma1 / sqrt(beta1) on the collapsed side (a <= b). In both cases
# a* >= b iff theta sigma1 / sqrt(beta1) >= b, so the optimum is
#     a = max(sigma1^2, a*)                          if sigma1^2 >= b or theta sigma1 / sqrt(beta1) >= b,
#     a = max(sigma1^2, theta sigma1 / sqrt(beta1))  otherwise (z2 mode collapsed, omega = 0),
# and the z2 mode is collapsed iff a <= b. With sigma2 = eta_enc the two thresholds b coincide, so a learnable
# Sigma2 collapses exactly the modes a fixed Sigma2 = eta_enc^2 I does; a fixed sigma2 < eta_enc never collapses more.


class HVAEOptimum(NamedTuple):
    """Theory's global optimum of the linear two-latent HVAE, one entry per mode (theta decreasing).

    Attributes:
        theta: square roots of the eigenvalues of A = E[x x^T], decreasing (the official `Z`'s singular values).
        encoder1_singular_values: lambda_i, of W1 A^(1/2) (the official code's `V_1 = W_1 P_A Phi^(1/2)`). They are
            not U1's (see `decoder1_singular_values`).
        decoder1_singular_values: of U1: theta_i lambda_i / (lambda_i^2 + sigma1^2).
        encoder2_singular_values: of W2: omega_i / (omega_i^2 + beta2 c^2 / beta1).
        decoder2_singular_values: omega_i, of U2.
        encoder2_std: the optimal Sigma2^(1/2) entries (sigma2 itself when Sigma2 is fixed).
        collapsed: z2 mode i collapsed (omega_i = 0 and W2 = 0 there: q(z2|z1) ignores z1 and p(z1|z2) ignores z2;
            with Sigma2 learnable, q(z2|z1) is then the prior in that mode).
        num_collapsed: the number of collapsed z2 modes.
    """

    theta: Float[Array, " D"]
    encoder1_singular_values: Float[Array, " D"]
    decoder1_singular_values: Float[Array, " D"]
    encoder2_singular_values: Float[Array, " D"]
    decoder2_singular_values: Float[Array, " D"]
    encoder2_std: Float[Array, " D"]
    collapsed: Bool[Array, " D"]
    num_collapsed: Int[Array, ""]


def uncentred_second_moment(x: Float[Array, "N D"]) -> Float[Array, "D D"]:
    """A = E[x x^T] over the rows of x (1 / N; no centring: the linear HVAE has no biases)."""
    return x.T @ x / x.shape[0]


def hvae_theta(second_moment: Float[Array, "D D"], num_modes: int | None = None) -> Float[Array, " M"]:
    """theta: square roots of the eigenvalues of A, decreasing; zeros pad beyond A's size (those modes see no data)."""
    theta = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(second_moment)[::-1], 0.0))
    num_modes = theta.shape[0] if num_modes is None else num_modes
    if theta.shape[0] < num_modes:
        theta = jnp.concatenate([theta, jnp.zeros((num_modes - theta.shape[0],), theta.dtype)])
    return theta[:num_modes]


def _hvae_modes(theta, sigma1, beta1, threshold, active_energy) -> tuple[Array, Array]:
    """(a, collapsed): the optimal z1 energy per mode and the z2-collapse flags, from the shared case analysis."""
    theta = jnp.asarray(theta)
    collapsed_energy = jnp.maximum(sigma1**2, theta * sigma1 / jnp.sqrt(beta1))
    z2_active_side = (sigma1**2 >= threshold) | (theta * sigma1 / jnp.sqrt(beta1) >= threshold)
    energy = jnp.where(z2_active_side, jnp.maximum(sigma1**2, active_energy), collapsed_energy)
    return energy, energy <= threshold


def _hvae_result(theta, energy, collapsed, omega, sigma1, beta1, beta2, c, encoder2_std) -> HVAEOptimum:
    theta = jnp.asarray(theta)
    lam = jnp.sqrt(jnp.maximum(energy - sigma1**2, 0.0))
    omega = jnp.where(collapsed, 0.0, omega)
    return HVAEOptimum(theta=theta, encoder1_singular_values=lam, decoder1_singular_values=theta * lam / energy,
                       encoder2_singular_values=omega / (omega**2 + beta2 * c**2 / beta1),
                       decoder2_singular_values=omega, encoder2_std=encoder2_std, collapsed=collapsed,
                       num_collapsed=jnp.sum(collapsed))


def hvae_optimum(theta: Float[Array, " D"], sigma1: float, beta1: float = 1.0, beta2: float = 1.0,
                 eta_enc: float = 1.0, eta_dec: float = 1.0) -> HVAEOptimum:
    """The global optimum with Sigma1 = sigma1^2 I fixed and Sigma2 diagonal and learnable.

    Equal, term by term, to the official `calculate_lambda_omega_2_linear_nonlearnable_isotropic_Sigma_1_
    learnable_Sigma_2_beta` (c = eta_dec / eta_enc): if sigma1^2 >= (beta2 / beta1) eta_dec^2,
    lambda = sigma1 / (sqrt(beta2) eta_dec) sqrt(max(0, theta^2 - beta2 eta_dec^2)) and omega = sqrt(max(
    (sigma1^2 - beta2 eta_dec^2 / beta1) / eta_enc^2, sigma1^2 theta^2 / (beta2 eta_enc^2 eta_dec^2) -
    c^2 beta2 / beta1)); elif sigma1 theta < beta2 eta_dec^2 / sqrt(beta1): lambda = sqrt(max(0, sigma1 / sqrt(beta1)
    (theta - sqrt(beta1) sigma1))), omega = 0; else the first branch without the max. Computed here through the
    z1 energy a (module comment above): omega = sqrt(a - b) / eta_enc, Sigma2 = beta' eta_dec^2 eta_enc^2 / max(a, b).
    `tests/test_collapse_hvae.py` checks it against a numerical minimum of `hvae_expected_loss`.

    Args:
        theta: [D] square roots of the eigenvalues of E[x x^T] (`hvae_theta`), one per mode, decreasing.
    """
    ratio = beta2 / beta1
    threshold = ratio * eta_dec**2
    energy, collapsed = _hvae_modes(theta, sigma1, beta1, threshold,
                                    jnp.square(theta) * sigma1**2 / (beta2 * eta_dec**2))
    omega = jnp.sqrt(jnp.maximum(energy - threshold, 0.0)) / eta_enc
    encoder2_std = jnp.sqrt(threshold * eta_enc**2 / jnp.maximum(energy, threshold))
    return _hvae_result(theta, energy, collapsed, omega, sigma1, beta1, beta2, eta_dec / eta_enc, encoder2_std)


def hvae_optimum_fixed_sigma2(theta: Float[Array, " D"], sigma1: float, sigma2: float, beta1: float = 1.0,
                              beta2: float = 1.0, c: float = 1.0) -> HVAEOptimum:
    """The global optimum with Sigma1 = sigma1^2 I and Sigma2 = sigma2^2 I both fixed (c = eta_dec / eta_enc).

    Active z2 mode (theta^2 >= sqrt(beta1 beta2) c sigma1 sigma2 and theta >= beta2 c^2 sigma2^2 / (sqrt(beta1)
    sigma1)): lambda = (sigma1^2 / (sqrt(beta1 beta2) c sigma2))^(1/3) sqrt(theta^(4/3) - (sqrt(beta1 beta2) c
    sigma1 sigma2)^(2/3)), omega = (sqrt(beta2) c sigma1 / (beta1 sigma2^2))^(1/3) sqrt(theta^(2/3) - (beta2^2 c^4
    sigma2^4 / (beta1 sigma1^2))^(1/3)); elif sqrt(beta1) sigma1 >= sqrt(beta2) c sigma2: lambda = 0, omega =
    sqrt(sqrt(beta2) c sigma1 / (sqrt(beta1) sigma2) - beta2 c^2 / beta1); elif theta < sqrt(beta1) sigma1: both 0;
    else lambda = sqrt(sigma1 (theta / sqrt(beta1) - sigma1)), omega = 0.

    This is the official `calculate_lambda_omega_2_linear_nonleanable_isotropic_Sigma_beta` with ONE threshold
    corrected: the official code's second condition reads theta >= sqrt(beta2^2 beta1) c^2 sigma2^2 / sigma1, i.e.
    beta1^(+1/2) where the derivation (and the official omega formula's own zero) gives beta1^(-1/2). The two agree
    for beta1 = 1; for beta1 > 1 the official rule declares active z2 modes collapsed, for beta1 < 1 it returns
    NaN (`tests/test_collapse_hvae.py` checks both against a numerical minimum).

    Args:
        theta: [D] square roots of the eigenvalues of E[x x^T] (`hvae_theta`), one per mode, decreasing.
    """
    k = beta2 * c**2 / beta1  # the z2 sub-problem's prior-to-likelihood ratio
    threshold = k * sigma2**2
    active_energy = (jnp.square(theta) * sigma1**2 / (jnp.sqrt(beta1 * beta2) * c * sigma2)) ** (2.0 / 3.0)
    energy, collapsed = _hvae_modes(theta, sigma1, beta1, threshold, active_energy)
    omega = jnp.sqrt(jnp.maximum(jnp.sqrt(energy * k) / sigma2 - k, 0.0))
    encoder2_std = jnp.full(jnp.shape(theta), sigma2, dtype=jnp.result_type(float))
    return _hvae_result(theta, energy, collapsed, omega, sigma1, beta1, beta2, c, encoder2_std)


def hvae_expected_loss(params: dict[str, Array], second_moment: Float[Array, "D0 D0"], *, sigma1: float,
                       beta1: float | Array, beta2: float | Array, eta_enc: float, eta_dec: float,
                       sigma2: float | None = None) -> tuple[Array, dict[str, Array]]:
    """The beta-weighted negative ELBO of the linear HVAE (times 2), expectations in closed form from A = E[x x^T].

    loss = recon / eta_dec^2 + beta1 kl1 + beta2 kl2, with z1 = W1 x + sigma1 e1, z2 = W2 z1 + Sigma2^(1/2) e2:
        recon = E|U1 z1 - x|^2 = tr((U1 W1 - I) A (U1 W1 - I)^T) + sigma1^2 |U1|^2,
        kl1 = 2 E[log q(z1|x) - log p(z1|z2)] = [tr(M W1 A W1^T M^T) + sigma1^2 |M|^2 + tr(U2 Sigma2 U2^T)] / eta_dec^2
              + d1 log(eta_dec^2 / sigma1^2) - d1,   M = I - U2 W2,
        kl2 = 2 E KL(q(z2|z1) | p(z2)) = [tr(W2 W1 A W1^T W2^T) + sigma1^2 |W2|^2 + tr Sigma2] / eta_enc^2
              - log det Sigma2 + d2 log eta_enc^2 - d2.
    recon omits its constant d0 log(2 pi eta_dec^2). This is the official `matrix_HVAE_*.py` objective divided by
    eta_dec^2 (plus constants), and `tests/test_collapse_hvae.py` checks it against Monte Carlo.

    Args:
        params: `w1` [d1, d0], `u1` [d0, d1], `w2` [d2, d1], `u2` [d1, d2], and `log_sigma2` [d2] (Sigma2 =
            diag(exp(2 log_sigma2))), read only when `sigma2` is None.
        second_moment: A = E[x x^T] (uncentred), of the whole dataset or of a minibatch.
        sigma2: None for a learnable diagonal Sigma2; a number for Sigma2 = sigma2^2 I fixed.

    Returns:
        (scalar loss, {"hvae/recon", "hvae/kl1", "hvae/kl2"}).
    """
    w1, u1, w2, u2 = params["w1"], params["u1"], params["w2"], params["u2"]
    d1, d2 = w1.shape[0], w2.shape[0]
    if sigma2 is None:
        var2 = jnp.exp(2 * params["log_sigma2"])
        log_det2 = jnp.sum(2 * params["log_sigma2"])
    else:
        var2 = jnp.full((d2,), sigma2**2, dtype=w2.dtype)
        log_det2 = d2 * jnp.log(sigma2**2)
    residual = u1 @ w1 - jnp.eye(w1.shape[1], dtype=w1.dtype)
    recon = jnp.trace(residual @ second_moment @ residual.T) + sigma1**2 * jnp.sum(jnp.square(u1))
    m = jnp.eye(d1, dtype=w1.dtype) - u2 @ w2
    z1_moment = w1 @ second_moment @ w1.T  # E[W1 x (W1 x)^T]
    z2_noise = jnp.sum(var2[None, :] * jnp.square(u2))  # tr(U2 Sigma2 U2^T)
    kl1 = ((jnp.trace(m @ z1_moment @ m.T) + sigma1**2 * jnp.sum(jnp.square(m)) + z2_noise) / eta_dec**2
           + d1 * jnp.log(eta_dec**2 / sigma1**2) - d1)
    kl2 = ((jnp.trace(w2 @ z1_moment @ w2.T) + sigma1**2 * jnp.sum(jnp.square(w2)) + jnp.sum(var2)) / eta_enc**2
           - log_det2 + d2 * jnp.log(eta_enc**2) - d2)
    return recon / eta_dec**2 + beta1 * kl1 + beta2 * kl2, {"hvae/recon": recon, "hvae/kl1": kl1, "hvae/kl2": kl2}


def hvae_optimal_params(second_moment: Float[Array, "D D"], optimum: HVAEOptimum,
                        learnable_sigma2: bool = True) -> dict[str, Array]:
    """Parameters attaining `optimum` for d0 = d1 = d2 = D: aligned with A's eigenvectors, diagonal in z1 and z2.

    W1 = diag(lambda / theta) P^T (so W1 A^(1/2) = diag(lambda) P^T), U1 = P diag(decoder1), W2 = diag(encoder2),
    U2 = diag(omega), log_sigma2 = log(encoder2_std) (only when `learnable_sigma2`). Evaluating
    `hvae_expected_loss` here gives the theory's minimum value, against which a trained loss is compared.
    """
    _, eigvecs = jnp.linalg.eigh(second_moment)
    p = eigvecs[:, ::-1]  # columns in the order of theta (decreasing)
    safe_theta = jnp.where(optimum.theta > 0, optimum.theta, 1.0)
    params = {"w1": (optimum.encoder1_singular_values / safe_theta)[:, None] * p.T,
              "u1": p * optimum.decoder1_singular_values[None, :],
              "w2": jnp.diag(optimum.encoder2_singular_values), "u2": jnp.diag(optimum.decoder2_singular_values)}
    if learnable_sigma2:
        params["log_sigma2"] = jnp.log(optimum.encoder2_std)
    return params
