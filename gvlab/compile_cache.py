"""JAX's persistent compilation cache, made safe for several processes at once.

A second run of an experiment loads its compiled steps from disk instead of compiling them (on a 2-core CPU a
small train step takes ~0.7 s to compile and ~0.2 s to load). JAX writes cache entries without a lock unless a
size limit is set, so two processes sharing the folder (parallel test workers, a sweep) can read an entry that
is still being written and abort. Setting `jax_compilation_cache_max_size` turns on JAX's file lock (and LRU
eviction), which is why gvlab always sets one.

Only programs that take at least `min_compile_secs` (0.1 s) to compile are written. JAX's LRU eviction lists and
stats every entry on every write, so a cache that also collects thousands of tiny eager-op programs (~10 ms to
compile) makes each write slower than the compile it saves: measured, the test suite's cache reached 7,600 files
and tests of a few seconds took 25-40. Train steps (~0.7 s) and solvers are still cached.
"""

from __future__ import annotations

import os

import jax

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MIN_COMPILE_SECS = 0.1


def default_dir() -> str:
    """`$XDG_CACHE_HOME/gvlab/jax`, or `~/.cache/gvlab/jax`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gvlab", "jax")


def enable(path: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
           min_compile_secs: float = DEFAULT_MIN_COMPILE_SECS) -> str:
    """Cache compiled programs under `path` (default `default_dir()`), locked and bounded to `max_bytes`."""
    path = path or default_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_compilation_cache_max_size", max_bytes)  # also enables the inter-process lock
    # gvlab's steps compile in well under JAX's default 1 s threshold, but eager ops must stay out (docstring).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return path


def env_for_subprocess(path: str, max_bytes: int = DEFAULT_MAX_BYTES,
                       min_compile_secs: float = DEFAULT_MIN_COMPILE_SECS) -> dict[str, str]:
    """Environment variables that give a child Python process (a notebook kernel) the same cache."""
    return {
        "JAX_COMPILATION_CACHE_DIR": path,
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(max_bytes),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(min_compile_secs),
    }
