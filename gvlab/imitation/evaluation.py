"""Evaluators `fn(run_params, data, key) -> {metric: array}` (gvlab.evals convention) for routing policies.

Every policy of the experiment is one *data-driven* controller, so all of them are runs of one compiled program
(members, not separate programs): `run_params = {"route": ..., "sequencer": ..., "variant": int}` with

* HIERARCHICAL: the learned sequencer and the learned routing primitive;
* OPEN_LOOP: baseline B1, the fixed sequence route-next-...-route-done with the learned routing primitive;
* FLAT: baseline B2, its network (in the "route" slot, same architecture) acting at every step;
* EXPERT: the scripted expert (the ceiling; the networks are ignored).

`data["layouts"]` is a batch of layouts (leading axis E). `success` runs E full-task episodes and, on the same
layouts with other keys, E x C single-stage episodes (`rollout.stage_start` + `rollout.route_once`: the per-stage
success p of the compounding prediction), all in one `vmap` of `rollout` (one `lax.scan` per episode).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gvlab.data.padded import Padded
from gvlab.envs import routing
from gvlab.imitation import expert, policies
from gvlab.imitation.rollout import (Controller, Horizon, Trace, open_loop_choose, rollout, route_once,
                                     stage_start)
from gvlab.nn.policy import GaussianPolicy, Sequencer

VARIANTS = ("hierarchical", "open_loop", "flat", "expert")
HIERARCHICAL, OPEN_LOOP, FLAT, EXPERT = range(4)


@dataclasses.dataclass(frozen=True)
class Models:
    """The static networks and settings an evaluator closes over (hashable: one compiled evaluator)."""

    route: GaussianPolicy
    sequencer: Sequencer
    horizon: Horizon = Horizon()
    config: routing.EnvConfig = routing.EnvConfig()


def controller(models: Models, params: dict, single_stage: jax.Array | bool = False) -> Controller:
    """The controller of `params["variant"]`; with `single_stage`, ROUTE once then DONE (same routing)."""
    variant = params["variant"]
    learned = policies.sequencer_choose(models.sequencer, params["sequencer"])
    table = open_loop_choose(models.config.num_clips)
    network = policies.route_controller(models.route, params["route"])

    def choose(state, layout, obs, history, h, key):
        options = jnp.stack([learned(state, layout, obs, history, h, key), table(state, layout, obs, history, h, key),
                             jnp.int32(expert.ROUTE), expert.expert_primitive(state, layout, models.config)])
        return jnp.where(single_stage, route_once(state, layout, obs, history, h, key), options[variant])

    def route(obs, key):
        return jnp.where(variant == EXPERT, expert.expert_route_action(obs, models.config), network(obs, key))

    return Controller(choose, route)


def _episodes(models: Models, params: dict, layouts: routing.Layout, starts: routing.EnvState, single_stage, keys):
    def one(layout, start, single, key):
        return rollout(controller(models, params, single), layout, key, models.horizon, models.config, start)
    return jax.vmap(one)(layouts, starts, single_stage, keys)


def success(params: dict, data: dict, key: jax.Array, *, models: Models) -> dict:
    """Full-task success rate, success after each decision [H], insertion attempts per episode, and the
    single-clip success per stage [C] (module docstring)."""
    layouts, c = data["layouts"], models.config.num_clips
    e = layouts.angles.shape[0]
    reset_key, stage_key, episode_key = jax.random.split(key, 3)
    resets = jax.vmap(lambda k, p: routing.reset(k, p, models.config)[1])(jax.random.split(reset_key, e), layouts)
    stage_layouts = jax.tree.map(lambda x: jnp.repeat(x, c, axis=0), layouts)
    stages = jnp.tile(jnp.arange(c), e)
    starts = jax.vmap(lambda k, p, i: stage_start(k, p, i, models.config))(
        jax.random.split(stage_key, e * c), stage_layouts, stages)
    everything = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), (layouts, resets), (stage_layouts, starts))
    single = jnp.arange(e * (c + 1)) >= e
    trace = _episodes(models, params, *everything, single, jax.random.split(episode_key, e * (c + 1)))
    full = jax.tree.map(lambda x: x[:e], trace)
    stage_routed = trace.routed[e:][jnp.arange(e * c), stages].reshape(e, c)
    return {"success": jnp.mean(full.success),
            "success_curve": jnp.mean(full.routed_count == c, axis=0),
            "attempts": jnp.mean(jnp.sum(full.attempts, -1)),
            "stage_success": jnp.mean(stage_routed, axis=0)}


def traces(params: dict, data: dict, key: jax.Array, *, models: Models) -> dict:
    """Full-task episodes themselves as a flat dict (`trace_from_dict` rebuilds them): demonstrations (EXPERT)
    and the learner's visited states for DAgger."""
    layouts = data["layouts"]
    e = layouts.angles.shape[0]
    reset_key, episode_key = jax.random.split(key)
    resets = jax.vmap(lambda k, p: routing.reset(k, p, models.config)[1])(jax.random.split(reset_key, e), layouts)
    trace = _episodes(models, params, layouts, resets, jnp.zeros((e,), bool), jax.random.split(episode_key, e))
    out = trace._asdict()
    history = out.pop("history")
    return {**out, "history_ids": history.values, "history_mask": history.mask}


def trace_from_dict(values: dict) -> Trace:
    values = dict(values)
    history = Padded(values.pop("history_ids"), values.pop("history_mask"))
    return Trace(history=history, **{k: v for k, v in values.items() if k in Trace._fields})


def layouts(key: jax.Array, num: int, novel: bool, config: routing.EnvConfig = routing.EnvConfig()) -> routing.Layout:
    """`num` layouts (leading axis), in distribution or novel."""
    return jax.vmap(lambda k: routing.sample_layout(k, config, novel))(jax.random.split(key, num))


def evaluator(fn, models: Models):
    """`fn` (`success` or `traces`) with `models` bound, named as `fn` (`run.evaluate` names by qualname)."""
    return functools.update_wrapper(functools.partial(fn, models=models), fn)
