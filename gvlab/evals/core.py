"""The evaluation layer: one evaluator signature, vmapped over runs, jitted once, cached in the workdir.

An evaluator is a pure per-run function `fn(run_params, data, key) -> {metric: array}`. `evaluate_runs` maps it
over the leading run axis of `params` (every run sees the same `data` and `key`, so runs differ only by their
parameters) and returns `{metric: [R, ...]}` on the host. The jitted, vmapped wrapper is built once per evaluator
function and reused (JAX then compiles once per input shape).

`Cache` keeps results in `<workdir>/evals/<name>.npz`, keyed by a fingerprint of everything the numbers depend on
(the parameters' bytes, the data's bytes, the key, the evaluator's qualified name and any `extra` inputs): a rerun
of a finished experiment recomputes nothing, a resumed one recomputes only what changed or is missing.
`gvlab.run.Run.evaluate` and `Run.artifact` are the entry points experiments use.
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gvlab import distributed

Evaluator = Callable[[Any, Any, jax.Array], Mapping[str, jax.Array]]

_COMPILED: dict[Any, Callable] = {}


def _cache_key(fn: Evaluator, mode: str) -> Any:
    """A `functools.partial` is rebuilt at every call site; equal partials (same function, same bound settings)
    share one jitted wrapper, so evaluating again does not trace and compile again."""
    if isinstance(fn, functools.partial):
        key = (fn.func, fn.args, tuple(sorted(fn.keywords.items())), mode)
        try:
            hash(key)
            return key
        except TypeError:  # unhashable bound values (arrays): fall back to the partial object itself
            pass
    return (fn, mode)


def _over_runs(fn: Evaluator, mode: str) -> Callable:
    """`jit` of `fn` mapped over the run axis of its first argument (`vmap`, or `lax.map` when sequential)."""
    key = _cache_key(fn, mode)
    if key in _COMPILED:
        return _COMPILED[key]
    if mode == "vmap":
        mapped = jax.vmap(fn, in_axes=(0, None, None))
    else:
        def mapped(params, data, key):
            return jax.lax.map(lambda p: fn(p, data, key), params)
    compiled = jax.jit(mapped)
    _COMPILED[key] = compiled
    return compiled


def evaluate_runs(fn: Evaluator, params: Any, data: Any = None, key: jax.Array | None = None,
                  mode: str = "vmap") -> dict[str, np.ndarray]:
    """`{metric: [R, ...]}`: `fn(run_params, data, key)` for every run of `params` (leaves [R, ...]).

    Args:
        fn: the per-run evaluator.
        params: parameters with a leading run axis (`FitResult.params`).
        data: evaluation arrays shared by all runs (a pytree; None if the evaluator closes over nothing).
        key: the evaluation key, the same for every run (default `jax.random.key(0)`).
        mode: "vmap" or "sequential" (one run at a time inside the compiled program: less memory).
    """
    key = jax.random.key(0) if key is None else key
    out = _over_runs(fn, mode)(params, data, key)
    return {name: np.asarray(value) for name, value in jax.device_get(dict(out)).items()}


def fingerprint(*trees: Any) -> str:
    """Hex CRC32 over the bytes, shapes and dtypes of every leaf of `trees` (typed keys by their key data)."""
    crc = 0
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            if isinstance(leaf, (str, bytes, int, float, bool)) and not isinstance(leaf, np.generic):
                crc = zlib.crc32(repr(leaf).encode(), crc)
                continue
            array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
            crc = zlib.crc32(f"{array.shape}{array.dtype}".encode(), crc)
            crc = zlib.crc32(array.tobytes(), crc)
    return f"{crc:08x}"


_NEST = "::"  # joins nested result names on disk ("/" already appears inside metric names)


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for name, value in results.items():
        if _NEST in str(name):
            raise ValueError(f"result name {name!r} may not contain {_NEST!r}")
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}{_NEST}"))
        else:
            flat[f"{prefix}{name}"] = np.asarray(jax.device_get(value))
    return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(_NEST)
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


class Cache:
    """Named results on disk under `<workdir>/evals/`, each valid for one fingerprint (in memory without workdir).

    Args:
        directory: where the `.npz` files live; None keeps nothing (every call computes).
        deferred: hold new results in memory until `flush()` (a run writes nothing before its inputs are checked).
    """

    def __init__(self, directory: str | Path | None, deferred: bool = False):
        self.directory = Path(directory) if directory is not None else None
        self.computed: list[str] = []  # names computed (not loaded) in this process: what a rerun must not grow
        self.held: dict[str, tuple[str, dict[str, Any]]] | None = {} if deferred else None

    def flush(self) -> None:
        """Write the held results and store directly from now on."""
        held, self.held = self.held or {}, None
        for name, (key, results) in held.items():
            self.store(name, key, results)

    def _path(self, name: str) -> Path:
        safe = name.replace("/", "__")
        return self.directory / f"{safe}.npz"

    def load(self, name: str, key: str) -> dict[str, Any] | None:
        """The stored results of `name` if they were computed for fingerprint `key`, else None."""
        if self.held and name in self.held and self.held[name][0] == key:
            return self.held[name][1]
        if self.directory is None or not self._path(name).exists():
            return None
        try:
            with np.load(self._path(name), allow_pickle=False) as stored:
                meta = json.loads(str(stored["__meta__"]))
                if meta.get("fingerprint") != key:
                    return None
                flat = {k: stored[k] for k in stored.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # a damaged cache file is recomputed, never trusted
        return _unflatten(flat)

    def store(self, name: str, key: str, results: Mapping[str, Any]) -> None:
        if self.directory is None:
            return
        if self.held is not None:
            self.held[name] = (key, dict(results))
            return
        def write():
            self.directory.mkdir(parents=True, exist_ok=True)
            flat = _flatten(results)
            meta = json.dumps({"name": name, "fingerprint": key})
            tmp = self._path(name).with_suffix(".tmp.npz")
            np.savez(tmp, __meta__=np.asarray(meta), **flat)
            tmp.replace(self._path(name))  # atomic: a crash leaves the old file or none, never half of one

        distributed.on_writer(write, f"eval:{name}")  # process 0 of a multi-process run; the others wait

    def get_or_compute(self, name: str, key: str, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """Stored results for (`name`, `key`), or `compute()`, stored before being returned."""
        cached = self.load(name, key)
        if cached is not None:
            return cached
        results = _unflatten(_flatten(dict(compute())))  # host numpy arrays, as a later load returns them
        self.store(name, key, results)
        self.computed.append(name)
        return results
