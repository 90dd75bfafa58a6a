"""`ClipRouting2D`: a 2-D multi-clip cable-routing world (notes sec. 4(d); toy abstraction of Luo et al. 2024).

A gripper at `pos` in the plane carries the cable through `C` clips in order. Clip `i` is a narrow slot of width `w`
at `centers[i]` whose passage direction is `n_i = (cos a_i, sin a_i)` (lateral axis `t_i = (-sin a_i, cos a_i)`).
In the clip's frame the gripper sits at `u = (pos - c) . n` (along the passage) and `v = (pos - c) . t` (lateral).

Dynamics (one low-level step, action `a` in [-1, 1]^2, a velocity command):

    pos' = pos + s clip(a, -0.99, 0.99) + sigma eps,        eps ~ N(0, I)   (actuation noise, sigma = 0.01)

Routing: when a step crosses the slot line of the *target* clip (the first unrouted one) forwards (u < 0 <= u')
within the clip body (|v_x| < L at the crossing, v_x linearly interpolated), it is an insertion attempt, which
routes the clip iff `|v_x + xi| < w / 2` with `xi ~ N(0, sigma_insert^2)` (the cable sliding in the slot: what makes
a single routing attempt succeed with p < 1 even for a perfect controller). A failed attempt leaves the clip
unrouted and the gripper past it. Reward: +1 per routed clip. `done`: every clip routed or `max_steps` reached;
the state is absorbing once done (no auto-reset; evaluators scan a fixed horizon).

Conventions (gymnax): `reset(key, params) -> (obs, state)`, `step(key, state, action, params) -> (obs, state,
reward, done, info)`, pure functions of their arguments; `params` (a `Layout`, the clip placements) is a pytree, so
`vmap` runs episodes over keys and over layouts alike. Physical constants are a static `EnvConfig`.

Observation (9 floats): gripper position (2), target clip centre (2), (cos a, sin a) of the target (2), routed
flags (C = 3). In the world frame, as a camera would see it; no noise.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from gvlab.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """Static constants of the routing world (notes sec. 4(d) where given).

    Attributes:
        num_clips: C, clips to route in order.
        slot_width: w, the slot's opening (notes: 0.05).
        clip_length: the clip body's half-length L: crossings further out laterally pass beside the clip.
        max_step: s, displacement of a full-scale action.
        action_noise: sigma, actuation noise per step (notes: 0.01).
        insert_noise: sigma_insert, lateral slip of the cable at insertion.
        approach: d, distance of the pre-insertion pose before the slot line.
        spacing: x-distance between consecutive clips; x jitter U(-jitter, jitter).
        y_range, angle_range_deg: in-distribution layouts, y ~ U(-y, y), angle ~ U(-a, a) (notes: 0.3, 30).
        novel_y_range, novel_angle_range_deg: novel layouts (notes: 0.6, 50).
        max_steps: episode length limit of `step`'s `done`.
    """

    num_clips: int = 3
    slot_width: float = 0.05
    clip_length: float = 0.1
    max_step: float = 0.2
    action_noise: float = 0.01
    insert_noise: float = 0.02
    approach: float = 0.15
    spacing: float = 0.5
    jitter: float = 0.05
    y_range: float = 0.3
    angle_range_deg: float = 30.0
    novel_y_range: float = 0.6
    novel_angle_range_deg: float = 50.0
    max_steps: int = 1000

    def __post_init__(self):
        if self.num_clips < 1 or self.slot_width <= 0 or self.max_step <= 0 or self.max_steps < 1:
            raise ConfigError(f"EnvConfig needs num_clips, slot_width, max_step, max_steps > 0, got {self}")

    @property
    def obs_dim(self) -> int:
        return 6 + self.num_clips


class Layout(NamedTuple):
    """Environment parameters: clip centres `[C, 2]` and passage angles `[C]` (radians). A pytree: vmappable."""

    centers: Float[Array, "c 2"]
    angles: Float[Array, " c"]


class EnvState(NamedTuple):
    """Gripper position, routed flags, insertion attempts per clip, step count."""

    pos: Float[Array, "2"]
    routed: Bool[Array, " c"]
    attempts: Int[Array, " c"]
    t: Int[Array, ""]


def sample_layout(key: jax.Array, config: EnvConfig = EnvConfig(), novel: bool | Array = False) -> Layout:
    """Clips at x = (i - (C-1)/2) spacing + U(-jitter, jitter), y ~ U(-Y, Y), angle ~ U(-A, A).

    `novel` selects the novel ranges (notes: y up to 0.6, angles up to 50 deg); it may be a traced bool.
    """
    x_key, y_key, a_key = jax.random.split(key, 3)
    c = config.num_clips
    y_max = jnp.where(novel, config.novel_y_range, config.y_range)
    a_max = jnp.deg2rad(jnp.where(novel, config.novel_angle_range_deg, config.angle_range_deg))
    x = (jnp.arange(c) - (c - 1) / 2) * config.spacing + jax.random.uniform(x_key, (c,), minval=-1.0) * config.jitter
    y = jax.random.uniform(y_key, (c,), minval=-1.0) * y_max
    angles = jax.random.uniform(a_key, (c,), minval=-1.0) * a_max
    return Layout(jnp.stack([x, y], -1), angles)


def frame(params: Layout, index: Array) -> tuple[Array, Array, Array]:
    """Centre, passage direction n and lateral direction t of clip `index`."""
    angle = params.angles[index]
    n = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    t = jnp.stack([-jnp.sin(angle), jnp.cos(angle)])
    return params.centers[index], n, t


def local_coordinates(pos: Array, params: Layout, index: Array) -> Array:
    """(u, v): the position in clip `index`'s frame (u along the passage, v lateral)."""
    c, n, t = frame(params, index)
    return jnp.stack([(pos - c) @ n, (pos - c) @ t])


def pre_insertion_pose(params: Layout, index: Array, config: EnvConfig = EnvConfig(), lateral: Array = 0.0) -> Array:
    """c - d n + lateral t: where a routing attempt at clip `index` starts."""
    c, n, t = frame(params, index)
    return c - config.approach * n + lateral * t


def target_clip(routed: Array) -> Array:
    """Index of the first unrouted clip (the last clip once all are routed)."""
    return jnp.minimum(jnp.argmin(routed), routed.shape[0] - 1) if routed.size else jnp.int32(0)


def observe(state: EnvState, params: Layout) -> Float[Array, " o"]:
    """[pos (2), target centre (2), cos a, sin a, routed flags (C)]."""
    index = target_clip(state.routed)
    angle = params.angles[index]
    return jnp.concatenate([state.pos, params.centers[index], jnp.stack([jnp.cos(angle), jnp.sin(angle)]),
                            state.routed.astype(jnp.float32)])


def reset(key: jax.Array, params: Layout, config: EnvConfig = EnvConfig()) -> tuple[Array, EnvState]:
    """Gripper at clip 0's pre-insertion pose plus actuation noise; nothing routed."""
    c = config.num_clips
    if params.centers.shape[-2:] != (c, 2) or params.angles.shape[-1:] != (c,):
        raise ConfigError(f"layout must hold {c} clips: centers [{c}, 2], angles [{c}]; got "
                          f"{params.centers.shape}, {params.angles.shape}")
    pos = pre_insertion_pose(params, 0, config) + config.action_noise * jax.random.normal(key, (2,))
    state = EnvState(pos, jnp.zeros((c,), bool), jnp.zeros((c,), jnp.int32), jnp.int32(0))
    return observe(state, params), state


def is_done(state: EnvState, config: EnvConfig = EnvConfig()) -> Array:
    return jnp.all(state.routed) | (state.t >= config.max_steps)


def transition(state: EnvState, action: Float[Array, "2"], noise: Float[Array, "3"], params: Layout,
               config: EnvConfig = EnvConfig()) -> tuple[EnvState, dict]:
    """The step's deterministic map given its standard normal draws `noise = (eps_x, eps_y, xi / sigma_insert)`.

    Rollouts draw every episode's noise up front and scan this (one random call instead of one per step, which
    keeps the compiled scan small); `step` is this with `noise ~ N(0, I_3)` from its key.
    Returns `(state, info)` with `info = {"attempt": bool, "routed_now": bool}`; a no-op once `done`.
    """
    index = target_clip(state.routed)
    pos = state.pos + config.max_step * jnp.clip(action, -0.99, 0.99) + config.action_noise * noise[:2]
    u0, v0 = local_coordinates(state.pos, params, index)
    u1, v1 = local_coordinates(pos, params, index)
    crossed = (u0 < 0) & (u1 >= 0)
    v_cross = v0 + (v1 - v0) * (-u0) / jnp.where(crossed, u1 - u0, 1.0)  # the lateral offset on the slot line
    attempt = crossed & (jnp.abs(v_cross) < config.clip_length)
    slip = config.insert_noise * noise[2]
    success = attempt & (jnp.abs(v_cross + slip) < config.slot_width / 2) & ~state.routed[index]
    stopped = is_done(state, config)
    new = EnvState(pos, state.routed.at[index].set(state.routed[index] | success),
                   state.attempts.at[index].add(attempt.astype(jnp.int32)), state.t + 1)
    new = jax.tree.map(lambda old, nxt: jnp.where(stopped, old, nxt), state, new)
    return new, {"attempt": attempt & ~stopped, "routed_now": success & ~stopped}


def step(key: jax.Array, state: EnvState, action: Float[Array, "2"], params: Layout,
         config: EnvConfig = EnvConfig()) -> tuple[Array, EnvState, Array, Array, dict]:
    """One low-level step (module docstring): `transition` with noise ~ N(0, I_3) drawn from `key`.

    Returns `(obs, state, reward, done, info)`; reward 1 when a clip gets routed; absorbing once done.
    """
    new, info = transition(state, action, jax.random.normal(key, (3,)), params, config)
    return observe(new, params), new, info["routed_now"].astype(jnp.float32), is_done(new, config), info
