"""minADE_K / minFDE_K (`gvlab.motion.metrics`) on constructed cases with hand-computed answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.errors import ConfigError
from gvlab.motion import metrics


def _straight(speed, steps=12, angle=0.0):
    """A straight walk from the origin: position t * speed in direction `angle`, t = 1..steps."""
    t = np.arange(1, steps + 1, dtype=np.float32)[:, None]
    return t * speed * np.array([np.cos(angle), np.sin(angle)], np.float32)


def test_constructed_cases_match_hand_computed_values():
    truth = np.stack([_straight(1.0), _straight(0.5, angle=np.pi / 2)])  # [B=2, T=12, 2]
    # sample 0: offset by a constant (3, 4) -> every step 5 m off; sample 1: exact for example 0, and for example 1 a
    # walk at speed 1.0 instead of 0.5 (error 0.5 t at step t: ADE = 0.5 * 6.5 = 3.25, FDE = 6)
    samples = np.stack([truth + np.array([3.0, 4.0], np.float32),
                        np.stack([truth[0], _straight(1.0, angle=np.pi / 2)])])  # [K=2, B, T, 2]
    ade, fde = metrics.min_over_samples(jnp.asarray(samples), jnp.asarray(truth))
    np.testing.assert_allclose(ade, [0.0, 3.25], atol=1e-5)
    np.testing.assert_allclose(fde, [0.0, 5.0], atol=1e-5)  # example 1: FDE min is the offset sample (5 < 6)
    out = metrics.min_ade_fde(jnp.asarray(samples), jnp.asarray(truth))
    np.testing.assert_allclose([out["min_ade"], out["min_fde"]], [1.625, 2.5], atol=1e-5)
    # negative control: one sample only (no minimum) gives the offset sample's 5 m everywhere
    single = metrics.min_ade_fde(jnp.asarray(samples[:1]), jnp.asarray(truth))
    np.testing.assert_allclose([single["min_ade"], single["min_fde"]], [5.0, 5.0], atol=1e-5)


def test_minimum_is_over_samples_and_invariant_to_their_order(key):
    truth = jax.random.normal(key, (5, 12, 2))
    samples = truth[None] + jax.random.normal(jax.random.fold_in(key, 1), (20, 5, 12, 2))
    out = metrics.min_ade_fde(samples, truth)
    shuffled = metrics.min_ade_fde(samples[::-1], truth)
    np.testing.assert_allclose([out["min_ade"], out["min_fde"]], [shuffled["min_ade"], shuffled["min_fde"]])
    # more samples never hurt; adding the truth itself as a sample gives exactly zero
    with_truth = metrics.min_ade_fde(jnp.concatenate([samples, truth[None]]), truth)
    assert float(with_truth["min_ade"]) == 0.0 and float(with_truth["min_fde"]) == 0.0
    first = metrics.min_ade_fde(samples[:1], truth)
    assert out["min_ade"] < first["min_ade"] and out["min_fde"] < first["min_fde"]
    # jit and vmap over runs compose
    runs = jax.jit(jax.vmap(metrics.min_ade_fde, in_axes=(0, None)))(jnp.stack([samples, samples[::-1]]), truth)
    np.testing.assert_allclose(runs["min_ade"], [out["min_ade"]] * 2, rtol=1e-6)


def test_masks_exclude_padded_examples_and_steps():
    truth = np.stack([_straight(1.0), _straight(1.0)])
    samples = np.stack([truth + np.array([0.0, 1.0], np.float32)])  # 1 m off everywhere
    samples[0, 1] += 1e3  # example 1 is padding: a huge error that must not leak
    out = metrics.min_ade_fde(jnp.asarray(samples), jnp.asarray(truth), example_mask=jnp.array([True, False]))
    np.testing.assert_allclose([out["min_ade"], out["min_fde"]], [1.0, 1.0], atol=1e-5)
    # negative control: without the example mask the padding dominates
    assert metrics.min_ade_fde(jnp.asarray(samples), jnp.asarray(truth))["min_ade"] > 100
    # step mask: only the first 4 steps are real; the rest of the sample is garbage
    steps = np.arange(12) < 4
    garbage = np.array(samples[:, :1])
    garbage[0, 0, 4:] = 1e3
    ade, fde = metrics.min_over_samples(jnp.asarray(garbage), jnp.asarray(truth[:1]), jnp.asarray(steps[None]))
    np.testing.assert_allclose([ade[0], fde[0]], [1.0, 1.0], atol=1e-5)


def test_joint_minimum_picks_one_sample_per_scene():
    # a scene of 2 agents; sample 0 is exact for agent 0 and 2 m off for agent 1, sample 1 the reverse
    truth = np.zeros((1, 3, 12, 2), np.float32)  # 3 agent slots, the third padded
    samples = np.zeros((2, 1, 3, 12, 2), np.float32)
    samples[0, 0, 1, :, 0] = 2.0
    samples[1, 0, 0, :, 0] = 2.0
    samples[:, 0, 2] = 1e3
    mask = jnp.array([[True, True, False]])
    joint = metrics.joint_min_ade_fde(jnp.asarray(samples), jnp.asarray(truth), mask)
    np.testing.assert_allclose([joint["min_ade"], joint["min_fde"]], [1.0, 1.0], atol=1e-5)  # (0 + 2) / 2 agents
    # the per-agent minimum over the same samples is 0: the joint one is never smaller
    per_agent = metrics.min_ade_fde(jnp.asarray(samples[:, 0, :2]), jnp.asarray(truth[0, :2]))
    assert float(per_agent["min_ade"]) == 0.0


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match=r"\[K, \*batch, T, 2\]"):
        metrics.min_ade_fde(jnp.zeros((5, 12, 2)), jnp.zeros((5, 12, 2)))
