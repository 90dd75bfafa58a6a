"""Hierarchical rollouts as `lax.scan` evaluators: a high level picks a primitive, which acts for K low-level steps.

A `Controller` is two pure functions:

* `choose(state, params, obs, history, h, key) -> primitive id` (history: `Padded(ids [6], mask [6])`, most recent first;
  learned sequencers read `obs` and `history` only, the scripted expert the true `state` and layout `params`);
* `route(obs, key) -> action [2]`: the low-level action while ROUTE runs (a flat policy is a controller that always
  chooses ROUTE with its flat network as `route`).

PERTURB and NEXT are scripted (`expert.move_toward` to `expert.primitive_goal`); DONE freezes the episode.
`rollout` scans `decisions` high-level steps of `steps_per_primitive` env steps each and records everything the
learners and DAgger relabelling need, including the expert's labels at every visited state; `vmap` it over keys and
layouts for batches of episodes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gvlab.data.padded import Padded
from gvlab.envs import routing
from gvlab.imitation import expert


@dataclasses.dataclass(frozen=True, kw_only=True)
class Horizon:
    """decisions: high-level steps per episode (H); steps_per_primitive: K; history: ids kept (official 6);
    perturb_offset: PERTURB's lateral offset ~ U(-x, x)."""

    decisions: int = 12
    steps_per_primitive: int = 8
    history: int = 6
    perturb_offset: float = 0.05


class Controller(NamedTuple):
    choose: Callable
    route: Callable


class Trace(NamedTuple):
    """One episode. Decision fields are [H, ...], step fields [H, K, ...]."""

    obs: jax.Array  # [H, O] at each decision
    history: Padded  # ids [H, 6], mask [H, 6]
    primitive: jax.Array  # [H] chosen
    expert_primitive: jax.Array  # [H] the expert's choice at the same state (DAgger label)
    decision_valid: jax.Array  # [H] the episode had not stopped before this decision
    step_obs: jax.Array  # [H, K, O]
    action: jax.Array  # [H, K, 2] executed
    expert_action: jax.Array  # [H, K, 2] the expert route's action at the same state (DAgger label)
    step_valid: jax.Array  # [H, K] an env step was taken (not after DONE)
    routed_count: jax.Array  # [H] clips routed after each decision
    routed: jax.Array  # [C] at the end
    attempts: jax.Array  # [C] insertion attempts per clip

    @property
    def success(self) -> jax.Array:
        return jnp.all(self.routed, -1)


def push(ids: jax.Array, primitive: jax.Array) -> jax.Array:
    """The history after `primitive`: most recent first, the oldest dropped."""
    return jnp.concatenate([primitive[None].astype(ids.dtype), ids[:-1]])


def rollout(controller: Controller, params: routing.Layout, key: jax.Array, horizon: Horizon = Horizon(),
            config: routing.EnvConfig = routing.EnvConfig(), start: routing.EnvState | None = None) -> Trace:
    """One episode of `horizon.decisions` primitives on the layout `params` (see the module docstring), from
    `routing.reset` or from the state `start` (e.g. a single stage: `stage_start`).

    Every random draw of the episode (the env's noise, PERTURB's offsets, the controllers' keys) is made up front,
    and the scans run `routing.transition` on them: equal in law to `routing.step`, and a much smaller program.
    """
    h_count, k_count, n = horizon.decisions, horizon.steps_per_primitive, horizon.history
    reset_key, noise_key, offset_key, choose_key, action_key = jax.random.split(key, 5)
    state = routing.reset(reset_key, params, config)[1] if start is None else start
    noise = jax.random.normal(noise_key, (h_count, k_count, 3))
    lateral = jax.random.uniform(offset_key, (h_count,), minval=-1.0) * horizon.perturb_offset
    choose_keys = jax.random.split(choose_key, h_count)
    action_keys = jax.random.split(action_key, h_count * k_count).reshape(h_count, k_count)

    def decide(carry, xs):
        state, ids, finished = carry
        h, noise_h, lateral_h, choose_key_h, action_keys_h = xs
        obs = routing.observe(state, params)
        history = Padded(ids, jnp.arange(n) < jnp.minimum(h, n))
        primitive = jnp.where(finished, expert.DONE, controller.choose(state, params, obs, history, h, choose_key_h))
        goal = expert.primitive_goal(primitive, state, params, lateral_h, config)
        stopped = finished | (primitive == expert.DONE)

        def act(state, xs):
            noise_k, key_k = xs
            o = routing.observe(state, params)
            move = expert.move_toward(state.pos, goal, config)
            action = jnp.where(primitive == expert.ROUTE, controller.route(o, key_k), move)
            action = jnp.where(stopped, 0.0, action)
            after, _ = routing.transition(state, action, noise_k, params, config)
            after = jax.tree.map(lambda a, b: jnp.where(stopped, a, b), state, after)
            return after, (o, action, expert.expert_route_action(o, config))

        after, (step_obs, action, expert_action) = jax.lax.scan(act, state, (noise_h, action_keys_h))
        record = (obs, history, primitive, expert.expert_primitive(state, params, config), ~finished, step_obs, action,
                  expert_action, jnp.broadcast_to(~stopped, (k_count,)), jnp.sum(after.routed))
        return (after, push(ids, primitive), stopped), record

    init = (state, jnp.zeros((n,), jnp.int32), jnp.bool_(False))
    xs = (jnp.arange(h_count), noise, lateral, choose_keys, action_keys)
    (final, _, _), rec = jax.lax.scan(decide, init, xs)
    return Trace(*rec, final.routed, final.attempts)


def stage_start(key: jax.Array, params: routing.Layout, stage: jax.Array,
                config: routing.EnvConfig = routing.EnvConfig()) -> routing.EnvState:
    """Clip `stage`'s pre-insertion pose (plus actuation noise) with the clips before it routed: where a
    single-clip routing attempt of the compounding prediction starts."""
    c = config.num_clips
    pos = routing.pre_insertion_pose(params, stage, config) + config.action_noise * jax.random.normal(key, (2,))
    return routing.EnvState(pos, jnp.arange(c) < stage, jnp.zeros((c,), jnp.int32), jnp.int32(0))


def route_once(state, params, obs, history, h, key):
    """The single-stage "sequencer": ROUTE once, then DONE (with `stage_start`: the per-stage success p)."""
    return jnp.where(h == 0, expert.ROUTE, expert.DONE).astype(jnp.int32)


def open_loop_choose(num_clips: int) -> Callable:
    """Baseline B1: the fixed sequence route, next, route, ..., route, done (then done), ignoring observations."""
    sequence = []
    for i in range(num_clips):
        sequence += [expert.ROUTE] + ([expert.NEXT] if i < num_clips - 1 else [expert.DONE])
    table = jnp.asarray(sequence, jnp.int32)

    def choose(state, params, obs, history, h, key):
        return table[jnp.minimum(h, table.shape[0] - 1)]

    return choose
