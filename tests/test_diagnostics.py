"""Representation diagnostics (gvlab.diagnostics): closed forms, Monte Carlo oracles and negative controls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gvlab import diagnostics
from gvlab.dists import DiagNormal, kl_divergence

COV = np.array([[1.0, 0.7, 0.0], [0.7, 2.0, 0.3], [0.0, 0.3, 0.5]])


def _gaussian(key, cov, n=40000):
    return jax.random.multivariate_normal(key, jnp.zeros(cov.shape[0]), jnp.asarray(cov, jnp.float32), (n,))


def test_gaussian_tc_is_the_kl_to_the_product_of_marginals(key):
    x = np.asarray(_gaussian(key, COV), np.float64)
    inv, inv_diag = np.linalg.inv(COV), 1.0 / np.diag(COV)
    log_joint = -0.5 * np.einsum("ni,ij,nj->n", x, inv, x) - 0.5 * np.linalg.slogdet(COV)[1]
    log_product = -0.5 * np.sum(x**2 * inv_diag, axis=1) - 0.5 * np.sum(np.log(np.diag(COV)))
    monte_carlo = np.mean(log_joint - log_product)
    closed = float(diagnostics.gaussian_total_correlation(jnp.asarray(COV)))
    assert abs(closed - monte_carlo) < 5 * np.std(log_joint - log_product) / np.sqrt(len(x))
    scale = np.diag([3.0, 0.1, 7.0])
    np.testing.assert_allclose(diagnostics.gaussian_total_correlation(jnp.asarray(scale @ COV @ scale)), closed,
                               rtol=1e-5)  # per-dimension rescaling leaves TC unchanged
    assert float(diagnostics.gaussian_total_correlation(jnp.diag(jnp.array([1.0, 2.0, 0.5])))) == 0.0  # control


def test_total_correlation_of_samples_and_masks(key):
    x = _gaussian(key, COV)
    closed = float(diagnostics.gaussian_total_correlation(jnp.asarray(COV)))
    np.testing.assert_allclose(float(diagnostics.total_correlation(x)), closed, atol=0.02)
    # Dimensions 0 and 2 are independent: their TC is 0; 0 and 1 carry -1/2 log(1 - 0.7^2 / 2).
    assert abs(float(diagnostics.total_correlation(x, jnp.array([True, False, True])))) < 0.01
    np.testing.assert_allclose(float(diagnostics.total_correlation(x, jnp.array([True, True, False]))),
                               -0.5 * np.log(1 - 0.49 / 2.0), atol=0.02)
    # jit and vmap over a stack of representations (e.g. seeds) with one compiled program.
    stacked = jax.jit(jax.vmap(diagnostics.total_correlation))(jnp.stack([x, x[::-1]]))
    np.testing.assert_allclose(stacked, closed, atol=0.02)


def test_mean_abs_correlation_and_its_control(key):
    x = _gaussian(key, COV)
    pair = jnp.array([True, True, False])
    np.testing.assert_allclose(float(diagnostics.mean_abs_correlation(x, pair)), 0.7 / np.sqrt(2.0), atol=0.02)
    assert float(diagnostics.mean_abs_correlation(x, jnp.array([True, False, True]))) < 0.02  # independent pair
    assert float(diagnostics.mean_abs_correlation(x, jnp.array([True, False, False]))) == 0.0  # no pair at all


def test_per_dimension_kl_matches_the_distribution_kl(key):
    k1, k2 = jax.random.split(key)
    mean, log_std = jax.random.normal(k1, (50, 4)), 0.3 * jax.random.normal(k2, (50, 4))
    expected = jnp.mean(kl_divergence(DiagNormal(mean, jnp.exp(log_std), event_ndims=0),
                                      DiagNormal(jnp.zeros_like(mean), jnp.ones_like(mean), event_ndims=0)), axis=0)
    np.testing.assert_allclose(diagnostics.per_dimension_kl(mean, log_std), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diagnostics.per_dimension_kl(jnp.zeros((5, 2)), jnp.zeros((5, 2))), 0.0)


def test_active_passive_mixed_and_active_units(key):
    n = 1000
    active = jnp.full((n,), 0.01)                         # sigma^2 small for every x
    passive = jnp.full((n,), 0.98)                        # sigma^2 = prior for every x
    mixed = jnp.where(jnp.arange(n) % 2 == 0, 0.01, 1.0)  # small for half the inputs, prior for the rest
    codes = diagnostics.classify_variables(jnp.stack([active, passive, mixed, passive * 0.5], axis=1))
    np.testing.assert_array_equal(codes, [diagnostics.ACTIVE, diagnostics.PASSIVE, diagnostics.MIXED,
                                          diagnostics.MIXED])  # sigma^2 = 0.49 everywhere: neither
    means = jax.random.normal(key, (n, 5)) * jnp.array([[1.0, 0.5, 0.2, 0.01, 0.001]])
    assert int(diagnostics.active_units(means)) == 3  # Var = 1, 0.25, 0.04 > 0.01; 1e-4 and 1e-6 are not


def test_discrete_mutual_information(key):
    x = _gaussian(key, np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]), n=20000)
    mi = np.asarray(diagnostics.discrete_mutual_information(x, bins=20))
    exact = -0.5 * np.log(1 - 0.81)  # 0.83 nats; binning loses some of it
    assert 0.6 < mi[0, 1] < exact + 0.02, mi[0, 1]
    assert mi[0, 2] < 0.03 and mi[1, 2] < 0.03  # independent: only the plug-in bias (~0.009)
    np.testing.assert_allclose(mi, mi.T, rtol=1e-5)
    np.testing.assert_allclose(np.diag(mi), [np.asarray(diagnostics.discrete_mutual_information(
        x[:, i:i + 1], bins=20))[0, 0] for i in range(3)], rtol=1e-5)  # the diagonal is the discrete entropy
    assert np.all(np.diag(mi) > mi[0, 1])
