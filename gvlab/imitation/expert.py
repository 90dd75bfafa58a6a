"""Scripted primitives and the scripted expert of the routing world (notes sec. 4(d)).

Primitive ids (the official high level's convention, notes sec. 4(a): 0 = pad, then the primitives):
ROUTE = 1 (learned in the hierarchical policy), PERTURB = 2 (scripted: back to the pre-insertion pose plus a random
lateral offset), NEXT = 3 (scripted: to the next unrouted clip's pre-insertion pose), DONE = 4 (stop).

The expert routes with a proportional lateral correction at constant forward speed, and sequences from the true
state: everything routed -> DONE; at the target's pre-insertion pose -> ROUTE; just past the target's slot (a failed
attempt) -> PERTURB; elsewhere -> NEXT. Its full-task success is the ceiling of the learned policies.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.envs import routing

ROUTE, PERTURB, NEXT, DONE = 1, 2, 3, 4
NUM_PRIMITIVES = 4
NAMES = {ROUTE: "route", PERTURB: "perturb", NEXT: "next", DONE: "done"}
FORWARD = 0.15  # forward action of the expert's route: 0.03 per step at max_step 0.2
READY_U = (-0.25, -0.05)  # the pre-insertion region in the target's frame: u in this range, |v| < READY_V
READY_V = 0.08
PAST_U = 0.4  # "just past the slot": -0.05 <= u < PAST_U and |v| < PAST_V
PAST_V = 0.3


def _clip_frame(obs: Array) -> tuple[Array, Array, Array]:
    """(pos - centre, n, t) of the target clip from an observation."""
    pos, centre, cos_sin = obs[..., 0:2], obs[..., 2:4], obs[..., 4:6]
    n = cos_sin
    t = jnp.stack([-cos_sin[..., 1], cos_sin[..., 0]], -1)
    return pos - centre, n, t


def expert_route_action(obs: Float[Array, "*b o"], config: routing.EnvConfig = routing.EnvConfig()) -> Array:
    """a = FORWARD n - (v / s) t, clipped to +-0.99: forward through the slot, lateral error removed in one step."""
    rel, n, t = _clip_frame(obs)
    v = jnp.sum(rel * t, -1, keepdims=True)
    return jnp.clip(FORWARD * n - (v / config.max_step) * t, -0.99, 0.99)


def move_toward(pos: Array, goal: Array, config: routing.EnvConfig = routing.EnvConfig()) -> Array:
    """The scripted primitives' proportional controller: a = clip((goal - pos) / s, +-0.99)."""
    return jnp.clip((goal - pos) / config.max_step, -0.99, 0.99)


def primitive_goal(primitive: Array, state: routing.EnvState, params: routing.Layout, lateral: Array,
                   config: routing.EnvConfig = routing.EnvConfig()) -> Array:
    """Goal of PERTURB (pre-insertion pose + `lateral` t) or NEXT (pre-insertion pose) at the target clip."""
    index = routing.target_clip(state.routed)
    offset = jnp.where(primitive == PERTURB, lateral, 0.0)
    return routing.pre_insertion_pose(params, index, config, offset)


def expert_primitive(state: routing.EnvState, params: routing.Layout,
                     config: routing.EnvConfig = routing.EnvConfig()) -> Array:
    """The scripted sequencer from the true state (module docstring)."""
    index = routing.target_clip(state.routed)
    u, v = routing.local_coordinates(state.pos, params, index)
    ready = (u >= READY_U[0]) & (u < READY_U[1]) & (jnp.abs(v) < READY_V)
    past = (u >= READY_U[1]) & (u < PAST_U) & (jnp.abs(v) < PAST_V)
    choice = jnp.where(ready, ROUTE, jnp.where(past, PERTURB, NEXT))
    return jnp.where(jnp.all(state.routed), DONE, choice).astype(jnp.int32)
