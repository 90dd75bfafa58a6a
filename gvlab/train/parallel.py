"""Data parallelism with `jit` and `NamedSharding` on a one-axis `("data",)` mesh (the current form of `pmap`).

The only module that builds meshes and shardings; the loop asks it for three things: the mesh, the sharding of the
state (replicated: gvlab's models are small) and the sharding of a batch (split along its example axis). XLA's
SPMD partitioner then inserts the gradient all-reduce. Multi-host runs call `jax.distributed.initialize()` before
anything else and get the same code path.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gvlab.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A `("data",)` mesh over the first `num_devices` devices (all by default).

    Axis type `Auto` so that sharding propagates through the step as in `pmap` days, without explicit
    `out_sharding` arguments on every reduction (the default of `jax.make_mesh` is `Explicit`).
    """
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise ConfigError(f"asked for {count} devices, {len(devices)} available")
    return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def use_cpu_devices(count: int) -> None:
    """Show the CPU as `count` devices, so that `fit` splits each batch over the cores (call before JAX starts).

    Up to jaxlib 0.10, XLA:CPU runs each convolution on one thread: a U-Net step keeps about one core busy whatever
    the machine has, and splitting the batch over one device per core ran it 1.8x faster on 2 cores
    (`benchmarks/bench_unet.py --cpu-devices 2`). jaxlib 0.12 threads its convolutions itself. The batch must then
    split over `count` devices, and numbers agree with one device's to float rounding, not bit for bit.
    """
    if count < 1:
        raise ConfigError(f"cpu devices must be a positive count, got {count}")
    jax.config.update("jax_num_cpu_devices", count)


def as_data_mesh(mesh: Mesh | None, data_axis: str | None = None) -> Mesh:
    """The `("data",)` mesh `fit` runs on, from any mesh a caller made the ordinary way.

    A one-axis mesh of any name and any axis type (`jax.make_mesh((n,), ("batch",))` is `Explicit` by default) is
    used over the same devices in the same order; so is a mesh whose axes other than `data_axis` have size 1.
    gvlab splits only the batch (state is replicated), so a mesh with a second non-trivial axis is refused.

    Raises:
        ConfigError: a mesh gvlab cannot use as it is, with what to pass instead.
    """
    if mesh is None:
        return data_mesh()
    names = tuple(mesh.axis_names)
    if data_axis is None:
        if len(names) != 1:
            raise ConfigError(f"fit(mesh=...) has axes {names}: name the batch axis with fit(data_axis=...), or "
                              "pass a one-axis mesh (gvlab.train.data_mesh(), jax.make_mesh((n,), ('data',)))")
        data_axis = names[0]
    if data_axis not in names:
        raise ConfigError(f"data_axis={data_axis!r} is not an axis of the mesh {names}")
    others = {n: s for n, s in mesh.shape.items() if n != data_axis and s > 1}
    if others:
        raise ConfigError(f"gvlab splits only the batch and replicates the state: the mesh's other axes {others} "
                          "must have size 1 (model parallelism is not supported); pass a one-axis mesh")
    devices = mesh.devices.reshape(-1)
    return Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (state, keys, metrics)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, seed_axis: bool = False) -> NamedSharding:
    """Examples split across devices; with `seed_axis` the leading axis is the vmapped seed, kept whole."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if seed_axis else P(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    """Refuse a batch that cannot be split evenly: a silent fallback would change the numbers per device count."""
    count = mesh.devices.size
    if batch_size % count:
        lower, upper = (batch_size // count) * count, (batch_size // count + 1) * count
        raise ConfigError(
            f"train.batch_size={batch_size} does not split over {count} devices; "
            f"use a multiple of {count} (e.g. {lower or upper} or {upper})"
        )


def put(tree: Any, sharding: NamedSharding) -> Any:
    """Place every leaf of `tree` with `sharding`.

    Over several processes (`jax.distributed`) the sharding spans devices this process cannot address, which
    `jax.device_put` refuses; every process then holds the same value (same seeds, same data), and the global array
    is assembled from each process's copy of its own shards.
    """
    if sharding.is_fully_addressable:
        return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)
    return jax.tree.map(lambda x: _put_global(x, sharding), tree)


def _put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def constrain_batch(batch: Any, mesh: Mesh) -> Any:
    """Inside `jit`: declare that a batch built on device is split along its example axis.

    Under `vmap` over seeds, JAX adds the seed axis to the spec unsharded, so one spec serves both cases.
    Scalars and leaves whose leading size does not split over the devices stay replicated.
    """
    count = mesh.devices.size

    def constrain(x):
        if x.ndim == 0 or x.shape[0] % count:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))

    return jax.tree.map(constrain, batch)


def abstract_with_sharding(tree: Any, sharding: NamedSharding) -> Any:
    """`ShapeDtypeStruct`s carrying `sharding`: the skeleton a checkpoint is restored into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
