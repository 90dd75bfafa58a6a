"""The routing world: gymnax conventions (vmap over keys and layouts, determinism per key) and constructed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.envs import routing
from gvlab.errors import ConfigError

CONFIG = routing.EnvConfig()


def _layout():
    """Clips at x = -0.5, 0, 0.5, y = 0, straight (angle 0): passage along +x."""
    return routing.Layout(jnp.array([[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]), jnp.zeros(3))


def _state(pos, routed=(False, False, False)):
    return routing.EnvState(jnp.asarray(pos, jnp.float32), jnp.asarray(routed), jnp.zeros(3, jnp.int32), jnp.int32(0))


def test_step_vmaps_over_keys_and_layouts_and_is_deterministic_per_key(key):
    layouts = jax.vmap(lambda k: routing.sample_layout(k, CONFIG))(jax.random.split(key, 5))
    keys = jax.random.split(jax.random.fold_in(key, 1), 5)
    obs, states = jax.vmap(routing.reset)(keys, layouts)
    assert obs.shape == (5, CONFIG.obs_dim) and states.pos.shape == (5, 2)
    actions = jnp.tile(jnp.array([0.5, 0.1]), (5, 1))
    step = jax.jit(jax.vmap(routing.step))
    first = step(keys, states, actions, layouts)
    again = step(keys, states, actions, layouts)
    other = step(jax.random.split(jax.random.fold_in(key, 2), 5), states, actions, layouts)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)  # same key, same transition
    assert not np.allclose(first[1].pos, other[1].pos)  # another key, other noise
    # each vmapped episode equals the same step run alone
    single = jax.jit(routing.step)(keys[3], jax.tree.map(lambda x: x[3], states), actions[3], jax.tree.map(lambda x: x[3],
                                                                                                     layouts))
    np.testing.assert_allclose(single[1].pos, first[1].pos[3], rtol=1e-6)


def test_routing_a_clip_needs_a_centred_crossing():
    layout = _layout()
    quiet = routing.EnvConfig(action_noise=0.0, insert_noise=0.0)
    noise = jnp.zeros(3)
    transition = jax.jit(routing.transition, static_argnums=4)
    # centred crossing of clip 0 (u: -0.02 -> +0.02): routed, one attempt, reward through `step`'s info
    state, info = transition(_state([-0.52, 0.0]), jnp.array([0.2, 0.0]), noise, layout, quiet)
    assert bool(state.routed[0]) and int(state.attempts[0]) == 1 and bool(info["routed_now"])
    # negative control: the same crossing 0.03 off-centre (> w/2 = 0.025) is an attempt that fails
    state, info = transition(_state([-0.52, 0.03]), jnp.array([0.2, 0.0]), noise, layout, quiet)
    assert not bool(state.routed[0]) and int(state.attempts[0]) == 1 and not bool(info["routed_now"])
    # backwards crossings and crossings beside the clip body are not attempts
    state, _ = transition(_state([-0.48, 0.0]), jnp.array([-0.2, 0.0]), noise, layout, quiet)
    assert int(state.attempts[0]) == 0
    state, _ = transition(_state([-0.52, 0.3]), jnp.array([0.2, 0.0]), noise, layout, quiet)
    assert int(state.attempts[0]) == 0
    # only the target (first unrouted) clip can be routed: crossing clip 1 first does nothing
    state, _ = transition(_state([-0.02, 0.0]), jnp.array([0.2, 0.0]), noise, layout, quiet)
    assert not bool(state.routed.any())


def test_insertion_slip_gives_the_gaussian_success_rate(key):
    """A perfectly centred crossing succeeds with P(|xi| < w/2) = erf(w / (2 sqrt(2) sigma)): 0.789 at the defaults."""
    layout = _layout()
    keys = jax.random.split(key, 4000)
    step = jax.jit(jax.vmap(lambda k: routing.step(k, _state([-0.52, 0.0]), jnp.array([0.2, 0.0]), layout,
                                           routing.EnvConfig(action_noise=0.0))[1].routed[0]))
    rate = float(jnp.mean(step(keys)))
    from math import erf, sqrt
    expected = erf(CONFIG.slot_width / 2 / (sqrt(2) * CONFIG.insert_noise))
    assert abs(rate - expected) < 0.03, (rate, expected)


def test_done_is_absorbing_and_observation_tracks_the_target():
    layout = _layout()
    done = _state([0.6, 0.0], (True, True, True))
    obs, after, reward, is_done, _ = jax.jit(routing.step)(jax.random.key(0), done, jnp.array([0.9, 0.9]), layout)
    assert bool(is_done) and float(reward) == 0.0
    np.testing.assert_array_equal(after.pos, done.pos)
    obs = jax.jit(routing.observe)(_state([0.0, 0.0], (True, False, False)), layout)
    np.testing.assert_allclose(obs[2:6], [0.0, 0.0, 1.0, 0.0])  # clip 1 is the target


def test_layouts_follow_the_ranges_and_bad_layouts_are_refused(key):
    sample = jax.jit(jax.vmap(routing.sample_layout, in_axes=(0, None, None)), static_argnums=1)
    lay, novel = (sample(jax.random.split(key, 200), CONFIG, flag) for flag in (False, True))
    assert np.abs(lay.centers[..., 1]).max() <= 0.3 and np.rad2deg(np.abs(lay.angles)).max() <= 30
    assert np.abs(novel.centers[..., 1]).max() > 0.3 and np.rad2deg(np.abs(novel.angles)).max() > 30
    assert np.all(np.diff(lay.centers[..., 0], axis=-1) > 0)  # clips ordered left to right
    with pytest.raises(ConfigError):
        routing.reset(key, routing.Layout(jnp.zeros((2, 2)), jnp.zeros(2)))
