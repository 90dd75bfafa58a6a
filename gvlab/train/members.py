"""The run axis of a fit: members (hyperparameters, model arguments, datasets) times seeds.

A fit trains R = M x S runs in one compiled program: M members, the values shared by `Spec.hyperparams`
(optimiser hyperparameters), `Spec.args` (model hyperparameters handed to the loss) and a per-member
`Spec.data` (each member its own dataset of one shape), times S = `train.num_seeds` seeds. Runs are member-major:
run r = m S + s has member m and seed `train.seed + s`, and equals a single fit with those values.

`over_runs(fn, in_axes, mode)` maps a per-run function over the run axis: `"vmap"` batches the runs into one
computation (usually the win on accelerators), `"sequential"` loops over them inside the same compiled program
(`lax.map`: each run is then exactly the computation of a single fit, and no memory grows with R). Both give the
same results up to float rounding and share checkpoints, metrics and resume.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Sequence

import jax
import numpy as np

from gvlab.errors import ConfigError
from gvlab.types import Spec

MODES = ("vmap", "sequential")


@dataclasses.dataclass(frozen=True)
class Members:
    """How the runs of one fit are laid out (host data only).

    Attributes:
        count: M, the number of members (1 without any per-member input).
        seeds: the seed of each run, length R.
        members: the member index of each run, length R.
        hyperparams: `{name: value of each run}` (float32 [R]) from `Spec.hyperparams`.
        args: `Spec.args` with its leaves repeated to the run axis [R, ...] (None without it).
        data_per_member: whether the data source's arrays carry the member axis.
    """

    count: int
    seeds: tuple[int, ...]
    members: tuple[int, ...]
    hyperparams: dict[str, np.ndarray]
    args: Any
    data_per_member: bool

    @property
    def num_runs(self) -> int:
        return len(self.seeds)

    @property
    def varied(self) -> bool:
        """True when the members differ in something besides the seed."""
        return bool(self.hyperparams) or self.args is not None or self.data_per_member


def _leading(tree: Any) -> set[int]:
    return {np.shape(x)[0] if np.ndim(x) else -1 for x in jax.tree.leaves(tree)}


def resolve(spec: Spec, seed: int, num_seeds: int) -> Members:
    """The members of `spec` and the runs of a fit with `num_seeds` seeds from `seed`.

    Raises:
        ConfigError: the per-member inputs disagree on M, or a leaf has no member axis.
    """
    sizes: dict[str, set[int]] = {}
    hyper = {name: np.atleast_1d(np.asarray(v, np.float32)) for name, v in spec.hyperparams.items()}
    if any(v.ndim != 1 for v in hyper.values()):
        raise ConfigError(f"Spec.hyperparams must be 1-D arrays, got shapes { {k: v.shape for k, v in hyper.items()} }")
    if hyper:
        sizes["Spec.hyperparams"] = {v.shape[0] for v in hyper.values()}
    if spec.args is not None:
        sizes["Spec.args"] = _leading(spec.args)
    if spec.data.per_member:
        sizes["Spec.data.arrays (per_member)"] = _leading(spec.data.arrays)
    counts = set().union(*sizes.values()) if sizes else {1}
    if len(counts) != 1 or -1 in counts:
        listed = "; ".join(f"{k}: {sorted(v)}" for k, v in sizes.items())
        raise ConfigError("every per-member input needs one leading member axis of one common length M "
                          f"(-1 marks a scalar leaf); got {listed}")
    count = counts.pop()
    members = tuple(m for m in range(count) for _ in range(num_seeds))
    seeds = tuple(seed + s for _ in range(count) for s in range(num_seeds))
    index = np.asarray(members)
    args = None
    if spec.args is not None:
        args = jax.tree.map(lambda x: np.asarray(x)[index], spec.args)
    return Members(count=count, seeds=seeds, members=members,
                   hyperparams={name: v[index] for name, v in hyper.items()}, args=args,
                   data_per_member=spec.data.per_member)


def run_arrays(arrays: Any, members: Members) -> Any:
    """A per-member dataset laid out along the run axis (repeated over seeds only when S > 1)."""
    if members.num_runs == members.count:
        return arrays
    index = np.asarray(members.members)
    return jax.tree.map(lambda x: np.asarray(x)[index], arrays)


def over_runs(fn: Callable, in_axes: Sequence[int | None], mode: str) -> Callable:
    """`fn` mapped over the leading run axis of the arguments whose `in_axes` entry is 0.

    `mode="vmap"` is `jax.vmap(fn, in_axes)`; `mode="sequential"` runs the same per-run function once per run
    with `lax.map`, in one compiled program. Outputs carry the run axis either way.
    """
    if mode not in MODES:
        raise ConfigError(f"train.members must be one of {list(MODES)}, got {mode!r}")
    if mode == "vmap":
        return jax.vmap(fn, in_axes=tuple(in_axes))

    def mapped(*args):
        per_run = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(sliced):
            it = iter(sliced)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

        return jax.lax.map(one, per_run)

    return mapped


def fingerprint(tree: Any) -> int | None:
    """CRC32 of the bytes of a host pytree (None for None): what checkpoints record of `Spec.args`."""
    if tree is None:
        return None
    crc = 0
    for leaf in jax.tree.leaves(tree):
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
    return crc
