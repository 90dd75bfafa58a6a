"""Dang et al.'s linear-CVAE collapse theory (gvlab.collapse) against a numerical minimum of the objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from gvlab import collapse


def _numerical_optimum(theta, beta, eta_enc, eta_dec):
    """Minimise the one-dimensional beta-CVAE objective over (u, w, log sigma) from several starts.

    y has variance theta (what x cannot predict), q(z|y) = N(w y, sigma^2), p(y|z) = N(u z, eta_dec^2),
    p(z) = N(0, eta_enc^2): loss = [(u w - 1)^2 theta + u^2 sigma^2] / eta_dec^2
                                    + beta [(w^2 theta + sigma^2) / eta_enc^2 - log sigma^2 + log eta_enc^2 - 1].
    """
    def loss(p):
        u, w, log_sigma = p
        s2 = np.exp(2 * log_sigma)
        recon = ((u * w - 1) ** 2 * theta + u**2 * s2) / eta_dec**2
        return recon + beta * ((w**2 * theta + s2) / eta_enc**2 - 2 * log_sigma + np.log(eta_enc**2) - 1)

    starts = [(1.0, 1.0, 0.0), (0.1, 0.1, -1.0), (2.0, 0.5, -2.0), (-1.0, -1.0, 0.5)]
    best = min((minimize(loss, s, method="BFGS", options={"gtol": 1e-10}) for s in starts), key=lambda r: r.fun)
    u, _, log_sigma = best.x
    return abs(u), np.exp(log_sigma)


@pytest.mark.parametrize("theta,beta,eta_enc,eta_dec", [(0.1, 1.0, 1.0, 0.5), (0.4, 1.0, 1.0, 0.5),
                                                        (2.0, 1.0, 1.0, 0.5), (3.0, 2.0, 2.0, 0.7)])
def test_closed_form_is_the_numerical_optimum(theta, beta, eta_enc, eta_dec):
    optimum = collapse.cvae_optimum(jnp.array([[theta]]), 1, beta, eta_enc, eta_dec)
    u, sigma = _numerical_optimum(theta, beta, eta_enc, eta_dec)
    np.testing.assert_allclose(float(optimum.singular_values[0]), u, atol=2e-3)
    np.testing.assert_allclose(float(optimum.encoder_std[0]), sigma, atol=2e-3)
    assert bool(optimum.collapsed[0]) == (u < 1e-3)


def test_the_official_sigma_threshold_would_misclassify():
    # Negative control: theta = 0.4 lies between beta eta_dec^2 = 0.25 and sqrt(beta) eta_dec = 0.5. The optimum is
    # active (lambda = sqrt(0.15)), which the lambda threshold says and the official code's sigma test would not.
    theta, beta, eta_dec = 0.4, 1.0, 0.5
    u, _ = _numerical_optimum(theta, beta, 1.0, eta_dec)
    numerically_collapsed = u < 1e-3
    official_rule = theta <= np.sqrt(beta) * eta_dec
    assert official_rule != numerically_collapsed
    assert bool(collapse.cvae_optimum(jnp.array([[theta]]), 1, beta, 1.0, eta_dec).collapsed[0]) == numerically_collapsed


def test_conditional_covariance_of_the_correlated_construction(key):
    # y ~ N(0, diag s^2), x_i = rho y_i / s_i + sqrt(1 - rho^2) n_i: E = diag(s^2 (1 - rho^2)) exactly.
    s2 = jnp.geomspace(0.05, 2.0, 8)
    actives = []
    for rho in (0.0, 0.5, 0.8, 0.95):
        cov_yx = jnp.diag(rho * jnp.sqrt(s2))
        e = collapse.conditional_covariance_from_moments(jnp.diag(s2), cov_yx, jnp.eye(8))
        np.testing.assert_allclose(e, jnp.diag(s2 * (1 - rho**2)), atol=1e-6)
        optimum = collapse.cvae_optimum(e, 8, beta=1.0, eta_enc=1.0, eta_dec=0.5)
        assert int(optimum.num_active) == int(np.sum(np.asarray(s2) * (1 - rho**2) > 0.25))
        actives.append(int(optimum.num_active))
    assert actives == sorted(actives, reverse=True) and actives[0] > actives[-1]  # more correlation, more collapse
    # From samples (1/N normalisation): close to the population value.
    ky, kn = jax.random.split(key)
    y = jax.random.normal(ky, (20000, 8)) * jnp.sqrt(s2)[None]
    x = 0.8 * y / jnp.sqrt(s2)[None] + 0.6 * jax.random.normal(kn, (20000, 8))
    np.testing.assert_allclose(collapse.conditional_covariance(x, y), jnp.diag(s2 * 0.36), atol=0.03)


def test_more_latents_than_outputs_collapse():
    optimum = collapse.cvae_optimum(jnp.diag(jnp.array([2.0, 1.0])), 4, eta_dec=0.5)
    np.testing.assert_array_equal(optimum.collapsed, [False, False, True, True])
    np.testing.assert_allclose(optimum.encoder_std[2:], 1.0)


def test_decoder_singular_values_evaluator():
    # U1 = A diag(s) B^T with orthogonal A, B: the evaluator returns s in decreasing order.
    rng = np.random.default_rng(0)
    a, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    b, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    s = np.array([0.2, 1.5, 0.0])
    u1 = a[:, :3] @ np.diag(s) @ b.T
    out = collapse.decoder_singular_values({"u1": jnp.asarray(u1, jnp.float32)})
    np.testing.assert_allclose(out["singular_values"], np.sort(s)[::-1], atol=1e-6)
