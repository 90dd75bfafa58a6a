"""Workers on real devices: the shared driver of every distributed VI method in `gvlab.optim`.

M workers hold one operator F_m each. With a mesh, the workers are split over a `("workers",)` mesh of D devices
(M divisible by D, so each device runs M/D workers, vmapped) and the per-worker code runs under `jax.shard_map`;
what the workers send reaches the server through a collective: `Collective.mean` is `lax.psum` of the (decompressed)
messages over the mesh axis, divided by M. Server-side quantities (iterate, anchor, step counters) are computed
redundantly on every device from replicated inputs, which is the usual SPMD form of a parameter server. Without a
mesh, the same method code runs on one device with all M workers vmapped (`Simulated.mean` is a sum over the
worker axis): the single-device simulation, which gives the same iterates up to float summation order.

The whole iteration loop is one `lax.scan` inside one `jit`; several runs (problem draws, compression seeds, step
sizes) are vmapped inside the same program. Per iteration the driver records the relative error
||z^k - z*||^2 / ||z^0 - z*||^2 and the uplink floats each worker has sent so far.

Method protocol (frozen dataclasses, so equal settings hit the jit cache):

* `init(problem, start, comm) -> WorkerState`: the state before the first step (may communicate).
* `step(problem, worker_ids, state, key, step_size, comm) -> WorkerState`.

`problem` holds this device's workers only; `worker_ids` are their global indices (to derive per-worker keys
that do not depend on the device count). `state.floats` is the uplink floats sent per worker so far (every worker
sends the same amount in these methods).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int, PRNGKeyArray

from gvlab.errors import ConfigError
from gvlab.optim.variational import AffineVI

WORKER_AXIS = "workers"


class WorkerState(NamedTuple):
    """State of a distributed method.

    Attributes:
        z: the current iterate z^k (server side; replicated).
        shared: other server-side arrays (anchor w^k, F(w^k), ...; replicated).
        local: per-worker arrays with a leading worker axis (F_m(w^k), error-feedback memory e_m^k, ...).
        floats: uplink floats sent per worker so far (int32).
    """

    z: Float[Array, " d"]
    shared: dict[str, Array]
    local: dict[str, Array]
    floats: Int[Array, ""]


@dataclasses.dataclass(frozen=True)
class Simulated:
    """All M workers on this device: the mean of their messages is a sum over the worker axis."""

    num_workers: int

    def mean(self, messages: Float[Array, "m d"]) -> Float[Array, " d"]:
        return jnp.sum(messages, axis=0) / self.num_workers


@dataclasses.dataclass(frozen=True)
class Collective:
    """Workers split over the devices of a mesh axis: the mean of their messages is a `psum` over that axis."""

    num_workers: int
    axis_name: str = WORKER_AXIS

    def mean(self, messages: Float[Array, "m d"]) -> Float[Array, " d"]:
        return jax.lax.psum(jnp.sum(messages, axis=0), self.axis_name) / self.num_workers


class Trajectory(NamedTuple):
    """What `run` records, with the leading run axis of its inputs.

    Attributes:
        relative_error: r_k = ||z^k - z*||^2 / ||z^0 - z*||^2 for k = 0..num_steps, `[runs, num_steps + 1]`.
        floats: uplink floats sent per worker up to iteration k (initialisation included), same shape.
        final: z^num_steps, `[runs, d]`.
    """

    relative_error: Float[Array, "runs steps"]
    floats: Int[Array, "runs steps"]
    final: Float[Array, "runs d"]


def worker_mesh(num_workers: int, num_devices: int | None = None) -> Mesh:
    """A `("workers",)` mesh for `num_workers` workers.

    Args:
        num_workers: M.
        num_devices: devices to use; by default the largest count <= the available devices that divides M
            (10 workers on 4 forced CPU devices use 2; on 10 devices, 10).

    Raises:
        ConfigError: `num_devices` does not divide M or exceeds the available devices.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = max(n for n in range(1, min(len(devices), num_workers) + 1) if num_workers % n == 0)
    if not 1 <= num_devices <= len(devices) or num_workers % num_devices:
        raise ConfigError(f"{num_workers} workers cannot be split over {num_devices} devices "
                          f"({len(devices)} available; the count must divide the number of workers)")
    return jax.make_mesh((num_devices,), (WORKER_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:num_devices])


def _one_run(method: Any, comm: Any, num_steps: int, problem: AffineVI, worker_ids: Int[Array, " m"],
             solution: Float[Array, " d"], start: Float[Array, " d"], key: PRNGKeyArray,
             step_size: Float[Array, ""]) -> tuple[Array, Array, Array]:
    """One run: `num_steps` iterations by `lax.scan`, recording r_k and the floats sent."""
    initial_distance = jnp.sum((start - solution) ** 2)

    def record(state: WorkerState) -> tuple[Array, Array]:
        return jnp.sum((state.z - solution) ** 2) / initial_distance, state.floats

    def body(state, step):
        # Per-iteration key by fold_in: no key lives in the state, and step k's randomness does not depend on
        # how many steps were taken before (anchors.md RNG rule).
        state = method.step(problem, worker_ids, state, jax.random.fold_in(key, step), step_size, comm)
        return state, record(state)

    state = method.init(problem, start, comm)
    first = record(state)
    state, (errors, floats) = jax.lax.scan(body, state, jnp.arange(num_steps))
    return (jnp.concatenate([first[0][None], errors]), jnp.concatenate([first[1][None], floats]), state.z)


@functools.partial(jax.jit, static_argnames=("method", "num_steps", "mesh"))
def run(method: Any, problem: AffineVI, solution: Float[Array, "runs d"], start: Float[Array, "runs d"],
        keys: PRNGKeyArray, step_sizes: Float[Array, " runs"], *, num_steps: int,
        mesh: Mesh | None = None) -> Trajectory:
    """Run `method` on a batch of problems, vmapped over the leading run axis, in one compiled program.

    Args:
        method: a distributed method (e.g. `Masha1(k=5, refresh_probability=0.05)`), static.
        problem: `AffineVI` with leading run axis: matrices `[runs, M, d, d]`, offsets `[runs, M, d]`.
        solution: z* of each run (for the recorded error only; the methods never see it).
        start: z^0 of each run.
        keys: one typed key per run (the method's randomness: compression and the refresh coin).
        step_sizes: gamma of each run (an array, so a step-size grid is one program).
        num_steps: iterations per run, static.
        mesh: a `("workers",)` mesh (`worker_mesh`) to place the workers on its devices; `None` simulates all
            workers on one device. Both give the same iterates up to float summation order.

    Returns:
        `Trajectory` with leading run axis.
    """
    num_workers = problem.matrices.shape[1]
    if mesh is None:
        comm = Simulated(num_workers)
        one = functools.partial(_one_run, method, comm, num_steps)
        errors, floats, final = jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))(
            problem, jnp.arange(num_workers), solution, start, keys, step_sizes)
        return Trajectory(errors, floats, final)
    num_devices = mesh.shape[WORKER_AXIS]
    if num_workers % num_devices:
        raise ConfigError(f"{num_workers} workers do not split over {num_devices} devices")
    per_device = num_workers // num_devices
    comm = Collective(num_workers)

    def on_device(local_problem, solution, start, keys, step_sizes):
        worker_ids = jax.lax.axis_index(WORKER_AXIS) * per_device + jnp.arange(per_device)
        one = functools.partial(_one_run, method, comm, num_steps)
        return jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))(local_problem, worker_ids, solution, start, keys,
                                                              step_sizes)

    sharded = jax.shard_map(on_device, mesh=mesh, in_specs=(P(None, WORKER_AXIS), P(), P(), P(), P()),
                            out_specs=(P(), P(), P()))
    return Trajectory(*sharded(problem, solution, start, keys, step_sizes))
