"""Warm starts: the parameters a fit starts from when its workdir holds no checkpoint.

`fit(init=...)` follows big_vision's order (`big_vision/train.py`: resume, else `config.model_init`, else
scratch): (1) this workdir's own checkpoint, whatever `init` says; (2) the `init` source; (3) `method.init`.
A source is a `FitResult`, a parameter pytree, or another workdir (its newest readable checkpoint). It keeps its
own run axis: one source run per run of the new fit, or one source run broadcast to all of them. Only the
parameters are taken; the optimiser state, step and non-gradient state start afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from gvlab.errors import CheckpointError, ConfigError


def path_names(path) -> tuple[str, ...]:
    """A JAX key path as a tuple of names (dict keys, attribute names, sequence indices as strings)."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def params_from_workdir(workdir: str | Path, abstract_params: Any) -> Any:
    """The parameters of the newest readable checkpoint in `workdir` (or `workdir/ckpt`), in the structure of
    `abstract_params` (matched by key path, so a checkpoint written by another optimiser still loads).

    Raises:
        CheckpointError: no checkpoint, or its parameters do not have the paths of `abstract_params`.
    """
    from gvlab.train.ckpt import Checkpointer

    workdir = Path(workdir)
    directory = workdir / "ckpt" if (workdir / "ckpt").is_dir() else workdir
    if not directory.is_dir():
        raise CheckpointError(f"warm start: {workdir} is not a folder holding checkpoints")
    checkpointer = Checkpointer(directory, keep=1 << 30)
    try:
        raw = checkpointer.restore_latest_raw()
    finally:
        checkpointer.close()
    if raw is None:
        raise CheckpointError(f"warm start: {directory} holds no checkpoint")
    flat_raw = {path_names(p): x for p, x in jax.tree_util.tree_flatten_with_path(raw["params"])[0]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    missing = [path_names(p) for p, _ in flat if path_names(p) not in flat_raw]
    if missing or len(flat) != len(flat_raw):
        raise CheckpointError(f"warm start: the parameters in {directory} do not have this method's structure "
                              f"(missing {['/'.join(m) for m in missing[:3]]}, {len(flat_raw)} leaves there, "
                              f"{len(flat)} here)")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(flat_raw[path_names(p)]) for p, _ in flat])


def run_params(init: Any, abstract_params: Any, num_runs: int) -> Any:
    """The warm-start parameters of every run, leaves [R, ...] (host arrays), from any `init` source.

    Args:
        init: a `FitResult`, a parameter pytree (leaves of the single-run shape, or with a leading run axis of
            length 1 or R), or a workdir path.
        abstract_params: the single-run parameter shapes of the fit being started.
        num_runs: R, the runs of that fit.

    Raises:
        ConfigError: the source's structure or shapes do not fit, or its run count is neither 1 nor R.
    """
    from gvlab.train.loop import FitResult  # the loop imports this module

    if isinstance(init, FitResult):
        source = init.params
    elif isinstance(init, (str, Path)):
        source = params_from_workdir(init, abstract_params)
    else:
        source = init
    source = jax.device_get(source)
    target_def = jax.tree.structure(abstract_params)
    if jax.tree.structure(source) != target_def:
        raise ConfigError(f"warm start: the given parameters' structure {jax.tree.structure(source)} differs from "
                          f"the method's {target_def}")
    counts = set()
    for have, want in zip(jax.tree.leaves(source), jax.tree.leaves(abstract_params)):
        shape = tuple(np.shape(have))
        if shape == tuple(want.shape):
            counts.add(0)  # no run axis: one run for all
        elif shape[1:] == tuple(want.shape):
            counts.add(shape[0])
        else:
            raise ConfigError(f"warm start: a parameter of shape {shape} does not fit the method's {want.shape}")
    if len(counts) != 1:
        raise ConfigError(f"warm start: the parameters disagree on their run axis (lengths {sorted(counts)})")
    count = counts.pop()
    if count not in (0, 1, num_runs):
        raise ConfigError(f"warm start: the source has {count} runs and this fit has {num_runs}; give one source "
                          "run per run, or a single run to broadcast to all")

    def lay_out(have, want):
        have = np.asarray(have, dtype=want.dtype)
        if count == 0:
            have = have[None]
        return np.broadcast_to(have, (num_runs,) + tuple(want.shape)).copy()

    return jax.tree.map(lay_out, source, abstract_params)
