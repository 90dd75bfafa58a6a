"""Extragradient: the reference VI method, on one machine and distributed; and its naive compressed variant.

Extragradient (Korpelevich 1976; the uncompressed baseline of Beznosikov et al. 2022, arXiv 2110.03313):

    z^{k+1/2} = z^k - gamma F(z^k),    z^{k+1} = z^k - gamma F(z^{k+1/2}).

For an L-Lipschitz, monotone F and gamma < 1/L it converges to a solution (linearly when F is strongly monotone),
where plain gradient descent-ascent z^{k+1} = z^k - gamma F(z^k) spirals away on a bilinear game: its iteration
matrix I - gamma A has eigenvalues 1 -/+ i gamma sigma of modulus > 1 when A is skew.

Distributed (`Extragradient`): both operator calls need F = mean_m F_m, so every worker sends two dense vectors per
iteration, 2d floats. `NaiveCompressedExtragradient` sends RandK(F_m(.)) instead at both calls (2 messages of K
values), without control variates: the compression noise of F_m(z*) != 0 never vanishes, so with a constant step
it stalls at a noise floor (the failure MASHA1's control variates remove).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from gvlab.optim import compression
from gvlab.optim.distributed import WorkerState
from gvlab.optim.variational import AffineVI, worker_operators

Operator = Callable[[Float[Array, " d"]], Float[Array, " d"]]


def extragradient(operator: Operator, start: Float[Array, " d"], step_size: float | Float[Array, ""],
                  num_steps: int) -> Float[Array, "steps d"]:
    """Iterates z^0..z^N of extragradient on one machine (Korpelevich 1976), `[num_steps + 1, d]`."""

    def body(z, _):
        z_half = z - step_size * operator(z)
        z_next = z - step_size * operator(z_half)
        return z_next, z_next

    _, path = jax.lax.scan(body, start, None, length=num_steps)
    return jnp.concatenate([start[None], path])


def gradient_descent_ascent(operator: Operator, start: Float[Array, " d"], step_size: float | Float[Array, ""],
                            num_steps: int) -> Float[Array, "steps d"]:
    """Iterates of simultaneous gradient descent-ascent z^{k+1} = z^k - gamma F(z^k), `[num_steps + 1, d]`."""

    def body(z, _):
        z_next = z - step_size * operator(z)
        return z_next, z_next

    _, path = jax.lax.scan(body, start, None, length=num_steps)
    return jnp.concatenate([start[None], path])


def _floats(cost: int) -> Int[Array, ""]:
    return jnp.asarray(cost, jnp.int32)


@dataclasses.dataclass(frozen=True)
class Extragradient:
    """Distributed uncompressed extragradient: two dense uplink messages (2d floats) per worker and iteration."""

    def init(self, problem: AffineVI, start: Float[Array, " d"], comm) -> WorkerState:
        return WorkerState(z=start, shared={}, local={}, floats=_floats(0))

    def step(self, problem: AffineVI, worker_ids: Int[Array, " m"], state: WorkerState, key: PRNGKeyArray,
             step_size: Float[Array, ""], comm) -> WorkerState:
        dim = state.z.shape[-1]
        z_half = state.z - step_size * comm.mean(worker_operators(problem, state.z))
        z_next = state.z - step_size * comm.mean(worker_operators(problem, z_half))
        cost = 2 * compression.message_floats(dim, None)
        return state._replace(z=z_next, floats=state.floats + _floats(cost))


@dataclasses.dataclass(frozen=True)
class NaiveCompressedExtragradient:
    """Extragradient whose two uplink messages are RandK(F_m(.)) (unbiased, no control variates).

    Attributes:
        k: coordinates per message.
        count_indices: count the K indices of a message as floats (see `compression`).
    """

    k: int
    count_indices: bool = True

    def init(self, problem: AffineVI, start: Float[Array, " d"], comm) -> WorkerState:
        return WorkerState(z=start, shared={}, local={}, floats=_floats(0))

    def step(self, problem: AffineVI, worker_ids: Int[Array, " m"], state: WorkerState, key: PRNGKeyArray,
             step_size: Float[Array, ""], comm) -> WorkerState:
        dim = state.z.shape[-1]
        first_key, second_key = jax.random.split(key)

        def compressed_mean(round_key, z):
            # One key per worker from its global index: the same messages whatever the number of devices.
            worker_keys = jax.vmap(jax.random.fold_in, (None, 0))(round_key, worker_ids)
            messages = jax.vmap(compression.rand_k, (0, 0, None))(worker_keys, worker_operators(problem, z), self.k)
            return comm.mean(messages)

        z_half = state.z - step_size * compressed_mean(first_key, state.z)
        z_next = state.z - step_size * compressed_mean(second_key, z_half)
        cost = 2 * compression.message_floats(dim, self.k, count_indices=self.count_indices)
        return state._replace(z=z_next, floats=state.floats + _floats(cost))
