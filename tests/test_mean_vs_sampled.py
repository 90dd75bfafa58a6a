"""`representations/mean_vs_sampled`: the claims can never pass on an empty set of qualifying models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gvlab_experiments.representations.mean_vs_sampled as mean_vs_sampled
from gvlab import registry


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
