"""`representations/mean_vs_sampled`: the claims can never pass on an empty set of qualifying models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gvlab_experiments.representations.mean_vs_sampled as mean_vs_sampled
from gvlab import diagnostics, registry


def test_claims_fail_visibly_when_no_model_has_enough_passive_variables():
    # Every beta contributed nothing (no model with >= min_passive passive variables), or there were no betas.
    for values in ([np.zeros((0,)), np.zeros((0,))], []):
        pooled = mean_vs_sampled._pooled(values)
        for claim in registry.entry("representations/mean_vs_sampled").claims:
            record = claim.check({claim.metric: pooled})
            assert not record["passed"] and record["note"] == "non-finite measurement", record
    assert mean_vs_sampled._pooled([np.array([1.0]), np.zeros((0,)), np.array([2.0, 3.0])]).tolist() == [1, 2, 3]


def test_probe_without_features_predicts_the_most_frequent_training_class():
    # Every feature masked: the probe can only learn the class frequencies. Negative control: with the one
    # informative feature kept it is perfect.
    cfg = mean_vs_sampled.Config()
    train_y, test_y = jnp.array([0, 2, 2, 1]), jnp.array([2, 2, 0, 1, 2])
    train_x, test_x = jax.nn.one_hot(train_y, 3), jax.nn.one_hot(test_y, 3)
    none = mean_vs_sampled.probe_accuracy(cfg, train_x, train_y, test_x, test_y, jnp.zeros((3,), bool))
    assert float(none) == pytest.approx(0.6)
    every = mean_vs_sampled.probe_accuracy(cfg, train_x, train_y, test_x, test_y, jnp.ones((3,), bool))
    assert float(every) == 1.0


def _equicorrelated(k: int, r: float, n: int = 4000) -> np.ndarray:
    """n points whose sample correlation is exactly 1 on the diagonal and r off it (whitened, then coloured)."""
    x = np.random.default_rng(0).normal(size=(n, k))
    x = (x - x.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(np.full((k, k), r) + (1 - r) * np.eye(k)).T


def test_retired_threshold_asks_two_passive_means_to_correlate_above_0795():
    # The derivation behind the retired 0.5-nat claim: the Gaussian TC of k equicorrelated variables is
    # -1/2 [(k - 1) log(1 - r) + log(1 + (k - 1) r)]; for k = 2, -1/2 log(1 - r^2) = 0.5 at r = sqrt(1 - 1/e).
    r = float(np.sqrt(1 - np.exp(-1.0)))
    assert r == pytest.approx(0.795, abs=5e-4)
    assert float(diagnostics.total_correlation(jnp.asarray(_equicorrelated(2, r)))) == pytest.approx(0.5, abs=1e-3)
    for k, needed in ((3, 0.589), (4, 0.464), (6, 0.325), (7, 0.282)):  # the values in the retired claim's reason
        tc = float(diagnostics.total_correlation(jnp.asarray(_equicorrelated(k, needed))))
        assert tc == pytest.approx(0.5, abs=2e-3), (k, tc)
    # Negative control: two passive means at claim 3's own bar (|corr| 0.3) give a tenth of the 0.5 nats.
    assert float(diagnostics.total_correlation(jnp.asarray(_equicorrelated(2, 0.3)))) == pytest.approx(0.047, abs=1e-3)
    claims = {c.statement: c for c in registry.entry("representations/mean_vs_sampled").claims}
    assert sum(bool(c.retired) for c in claims.values()) == 1
