"""Workers on real devices: the shared driver of every distributed VI method in `gvlab.optim`.

M workers hold one operator F_m each. With a mesh, the workers are split over a `("workers",)` mesh of D devices
(M divisible by D, so each device runs M/D workers, vmapped) and the per-worker code runs under `jax.shard_map`;
what the workers send reaches the server through a collective: `Collective.mean` is `lax.psum` of the (decompressed)
messages over the mesh axis, divided by M. Server-side quantities (iterate, anchor, step counters) are computed
redundantly on every device from replicated inputs, which is the usual SPMD form of a parameter server. Without a
mesh, the same method code runs on one device with all M workers vmapped (`Simulated.mean` is a sum over the
worker axis): the single-device simulation, which gives the same iterates up to float summation order.

One iteration of one run is `step_state` (and the state before the first, `init_state`): the method's step under
`shard_map` (or simulated), plus the relative error ||z^k - z*||^2 / ||z^0 - z*||^2 after it, computed on the
replicated iterate. Between iterations the state is a global array: the per-worker slots (`state.local`) leave
the mesh split over the workers and enter the next step the same way, so the state can be checkpointed (that
bookkeeping is not uplink traffic and is not counted). Two drivers use these functions: `gvlab.optim.method`
(a `gvlab.Method` for `fit`: checkpoints, metrics.jsonl, resume; what experiments use) and `run` here (vmapped
runs in one `lax.scan`, in memory: the tests' quick path).

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
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int, PRNGKeyArray

from gvlab.errors import ConfigError
from gvlab.optim.variational import AffineVI, relative_error

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


STATE_SPECS = WorkerState(z=P(), shared=P(), local=P(WORKER_AXIS), floats=P())  # how a state lies on the mesh


def on_workers(body: Callable, num_workers: int, mesh: Mesh | None, in_specs: tuple, out_specs: Any) -> Callable:
    """`body(comm, worker_ids, *args)` for all M workers: on one device (`mesh=None`) or under `shard_map`.

    `in_specs` / `out_specs` say which arguments and outputs are split over the workers (`P(WORKER_AXIS)`) and
    which are replicated (`P()`); without a mesh they are ignored.
    """
    if mesh is None:
        return functools.partial(body, Simulated(num_workers), jnp.arange(num_workers))
    num_devices = mesh.shape[WORKER_AXIS]
    if num_workers % num_devices:
        raise ConfigError(f"{num_workers} workers do not split over {num_devices} devices")
    per_device = num_workers // num_devices

    def on_device(*args):
        worker_ids = jax.lax.axis_index(WORKER_AXIS) * per_device + jnp.arange(per_device)
        return body(Collective(num_workers), worker_ids, *args)

    return jax.shard_map(on_device, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def init_state(method: Any, problem: AffineVI, start: Float[Array, " d"], *, mesh: Mesh | None = None) -> WorkerState:
    """The state of one run (no run axis) before its first step; `state.local` leaves are `[M, ...]`."""

    def body(comm, worker_ids, problem, start):
        return method.init(problem, start, comm)

    return on_workers(body, problem.matrices.shape[0], mesh, (P(WORKER_AXIS), P()), STATE_SPECS)(problem, start)


def step_state(method: Any, problem: AffineVI, state: WorkerState, key: PRNGKeyArray, step_size: Float[Array, ""],
               solution: Float[Array, " d"], start: Float[Array, " d"], *,
               mesh: Mesh | None = None) -> tuple[WorkerState, Float[Array, ""]]:
    """One iteration of one run with this iteration's `key`, and r = ||z - z*||^2 / ||z^0 - z*||^2 after it."""

    def body(comm, worker_ids, problem, state, key, step_size, solution, start):
        state = method.step(problem, worker_ids, state, key, step_size, comm)
        return state, relative_error(state.z, solution, start)

    specs = (P(WORKER_AXIS), STATE_SPECS, P(), P(), P(), P())
    return on_workers(body, problem.matrices.shape[0], mesh, specs, (STATE_SPECS, P()))(
        problem, state, key, step_size, solution, start)


@functools.partial(jax.jit, static_argnames=("method", "num_steps", "mesh"))
def run(method: Any, problem: AffineVI, solution: Float[Array, "runs d"], start: Float[Array, "runs d"],
        keys: PRNGKeyArray, step_sizes: Float[Array, " runs"], *, num_steps: int,
        mesh: Mesh | None = None) -> Trajectory:
    """Run `method` on a batch of problems in memory: vmapped runs, one `lax.scan`, one compiled program.

    The same `init_state` / `step_state` as the `fit` method of `gvlab.optim.method` (which adds checkpoints,
    metrics and resume); this driver is the tests' and notebooks' quick path.

    Args:
        method: a distributed method (e.g. `Masha1(k=5, refresh_probability=0.05)`), static.
        problem: `AffineVI` with leading run axis: matrices `[runs, M, d, d]`, offsets `[runs, M, d]`.
        solution: z* of each run (for the recorded error only; the methods never see it).
        start: z^0 of each run.
        keys: one typed key per run (the method's randomness: compression and the refresh coin); iteration k
            uses `fold_in(key, k)`, so no key lives in the state.
        step_sizes: gamma of each run (an array, so a step-size grid is one program).
        num_steps: iterations per run, static.
        mesh: a `("workers",)` mesh (`worker_mesh`) to place the workers on its devices; `None` simulates all
            workers on one device. Both give the same iterates up to float summation order.

    Returns:
        `Trajectory` with leading run axis.
    """

    def one(problem, solution, start, key, step_size):
        state = init_state(method, problem, start, mesh=mesh)

        def body(state, step):
            state, error = step_state(method, problem, state, jax.random.fold_in(key, step), step_size, solution,
                                      start, mesh=mesh)
            return state, (error, state.floats)

        final, (errors, floats) = jax.lax.scan(body, state, jnp.arange(num_steps))
        first = relative_error(start, solution, start)
        return (jnp.concatenate([first[None], errors]), jnp.concatenate([state.floats[None], floats]), final.z)

    return Trajectory(*jax.vmap(one)(problem, solution, start, keys, step_sizes))
