"""A synthetic two-agent crossing simulator whose environment parameter (the agents' radius) controls a style shift.

The stand-in for the ORCA circle-crossing data of GCRL's synthetic experiments (Bahari/Liu et al.'s `causalmotion`
"v4" set, where the environment is the agents' radius), as specified in the notes (notes_dynamics_sde_continual.md,
sec. 1(d)); ORCA itself is not reimplemented. Per scene:

* agent 1 starts on the circle of radius 4 at angle theta ~ U(0, 2 pi), agent 2 at theta + pi + U(-0.3, 0.3); each
  walks to the antipode of its start at a preferred speed v ~ U(0.9, 1.1) m/s;
* velocity of agent i (other agent j, distance d, unit vector u = (p_i - p_j) / d):

      v_i = v hat(g_i - p_i) + k max(0, 2 rho + 0.3 - d) u + zeta c max(0, 2 rho + 0.6 - d) perp(u),

  with zeta = +-1 drawn per scene (which side both pass on: the multimodality) and the speed clipped at 1.5 v;
  positions are integrated by explicit Euler with dt = 0.4 s over 20 frames (8 observed + 12 predicted), the
  velocity at frame t moving the agents to frame t + 1;
* rho is the environment: a larger radius makes the agents swerve earlier and wider.

The gains k and c are not given in the notes; k = c = 1 is this module's choice.

`crossing(key, num_scenes, radius)` is a pure JAX function of the key and the environment (jit- and vmap-able,
`radius` may be traced). Each scene gives two examples (each agent is once the focal agent) in the trajectory batch
format of `gvlab.motion` (focal agent's past [B, 8, 2] and future [B, 12, 2] translated so its last observed
position is the origin, the other agent as the one neighbour, `env` [B]), with B = 2 * num_scenes: scene n's
examples are rows n (agent 1 focal) and num_scenes + n (agent 2 focal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.data.padded import Padded
from gvlab.errors import ConfigError

OBSERVED, PREDICTED, DT = 8, 12, 0.4
START_RADIUS = 4.0


def _unit(v: Array) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)


def simulate(key: jax.Array, num_scenes: int, radius: Float[Array, ""] | float, *, repulsion: float = 1.0,
             side: float = 1.0) -> Float[Array, "s 2 20 2"]:
    """Absolute positions `[num_scenes, 2 agents, 20 frames, 2]` of `num_scenes` crossings at agent radius `radius`."""
    if num_scenes < 1:
        raise ConfigError(f"num_scenes must be >= 1, got {num_scenes}")
    angle_key, offset_key, speed_key, side_key = jax.random.split(key, 4)
    theta = jax.random.uniform(angle_key, (num_scenes,), maxval=2 * jnp.pi)
    theta2 = theta + jnp.pi + jax.random.uniform(offset_key, (num_scenes,), minval=-0.3, maxval=0.3)
    angles = jnp.stack([theta, theta2], axis=1)  # [S, 2]
    start = START_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # [S, 2, 2]
    goal = -start
    speed = jax.random.uniform(speed_key, (num_scenes, 2, 1), minval=0.9, maxval=1.1)
    zeta = jnp.where(jax.random.bernoulli(side_key, 0.5, (num_scenes, 1, 1)), 1.0, -1.0)
    radius = jnp.asarray(radius, jnp.float32)

    def step(p, _):
        away = p - p[:, ::-1]  # p_i - p_j for both agents
        d = jnp.linalg.norm(away, axis=-1, keepdims=True)
        u = _unit(away)
        perp = jnp.stack([-u[..., 1], u[..., 0]], axis=-1)
        v = (speed * _unit(goal - p) + repulsion * jnp.maximum(0.0, 2 * radius + 0.3 - d) * u
             + zeta * side * jnp.maximum(0.0, 2 * radius + 0.6 - d) * perp)
        norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
        v = v * jnp.minimum(1.0, 1.5 * speed / jnp.maximum(norm, 1e-6))
        p_next = p + DT * v
        return p_next, p_next

    _, later = jax.lax.scan(step, start, None, length=OBSERVED + PREDICTED - 1)
    return jnp.concatenate([start[None], later], axis=0).transpose(1, 2, 0, 3)  # [S, 2, T, 2]


def crossing(key: jax.Array, num_scenes: int, radius: Float[Array, ""] | float, env: int | Array = 0,
             **gains: float) -> dict:
    """A trajectory batch of `2 * num_scenes` examples from `simulate` (module docstring), labelled `env`.

    Returns:
        `{"past": [B, 8, 2], "future": [B, 12, 2], "neighbours": Padded([B, 1, 8, 2], [B, 1]), "env": [B] int32}`.
    """
    positions = simulate(key, num_scenes, radius, **gains)
    focal = jnp.concatenate([positions[:, 0], positions[:, 1]], axis=0)  # [B, T, 2]
    other = jnp.concatenate([positions[:, 1], positions[:, 0]], axis=0)
    origin = focal[:, OBSERVED - 1: OBSERVED]  # [B, 1, 2]
    past, future = focal[:, :OBSERVED] - origin, focal[:, OBSERVED:] - origin
    neighbours = (other[:, :OBSERVED] - origin)[:, None]  # [B, 1, 8, 2]
    batch_size = 2 * num_scenes
    return {"past": past, "future": future,
            "neighbours": Padded(neighbours, jnp.ones((batch_size, 1), bool)),
            "env": jnp.broadcast_to(jnp.asarray(env, jnp.int32), (batch_size,))}
