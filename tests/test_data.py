"""Data: the real digits load offline with a fixed split; batches are a pure function of (key, step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.data import digits, epoch_batches, sampled_batches
from gvlab.errors import ConfigError


def test_digits_split_is_fixed_disjoint_and_complete():
    train_counts, train_y = digits.split_counts("train")
    test_counts, test_y = digits.split_counts("test")
    all_counts, _ = digits.split_counts("all")
    assert train_counts.shape == (1497, 8, 8) and test_counts.shape == (300, 8, 8)
    assert all_counts.max() == 16 and all_counts.min() == 0
    assert set(np.unique(train_y)) == set(range(10)) == set(np.unique(test_y))
    rows = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}  # noqa: E731
    assert len(rows(train_counts) | rows(test_counts)) >= len(rows(all_counts)) - 5  # duplicates exist in the raw data
    np.testing.assert_array_equal(digits.split_counts("test")[0], test_counts)  # same split every call


def test_representations():
    binary = digits.digits("test", "binary")["x"]
    assert set(np.unique(np.asarray(binary))) == {0.0, 1.0}
    deq = np.asarray(digits.digits("test", "dequantized")["x"])
    counts = digits.split_counts("test")[0]
    assert np.all(deq >= counts / 17) and np.all(deq < (counts + 1) / 17)  # each level keeps its own bin
    np.testing.assert_array_equal(deq, np.asarray(digits.digits("test", "dequantized")["x"]))
    with pytest.raises(ValueError, match="unknown representation"):
        digits.to_representation(counts, "grey")


def test_epoch_batches_are_pure_and_cover_each_example_once_per_epoch(key):
    data = {"x": jnp.arange(20.0), "y": jnp.arange(20)}
    source = epoch_batches(data, batch_size=6)  # 3 steps per epoch, 2 examples skipped per epoch
    batch = jax.jit(source.batch)
    first_epoch = np.concatenate([np.asarray(batch(data, key, jnp.int32(t))["y"]) for t in range(3)])
    assert len(set(first_epoch)) == 18
    np.testing.assert_array_equal(batch(data, key, jnp.int32(1))["y"], batch(data, key, jnp.int32(1))["y"])
    np.testing.assert_array_equal(batch(data, key, jnp.int32(1))["x"], batch(data, key, jnp.int32(1))["y"])
    second_epoch = np.concatenate([np.asarray(batch(data, key, jnp.int32(t))["y"]) for t in range(3, 6)])
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled
    other_key = np.asarray(batch(data, jax.random.fold_in(key, 1), jnp.int32(0))["y"])
    assert not np.array_equal(other_key, first_epoch[:6])
    with pytest.raises(ConfigError, match="between 1 and the dataset size"):
        epoch_batches(data, batch_size=21)


def test_sampled_batches_depend_on_step(key):
    source = sampled_batches(lambda k: {"x": jax.random.normal(k, (3,))})
    a, b = (source.batch({}, key, jnp.int32(t))["x"] for t in (0, 1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, source.batch({}, key, jnp.int32(0))["x"])
