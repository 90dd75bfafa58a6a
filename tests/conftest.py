"""Test settings shared by every test.

* 4 forced CPU devices, set before the backend starts, so sharding code runs here as on a pod.
* Rank promotion raises everywhere: implicit broadcasting bugs fail loudly. Strict dtype promotion is a fixture
  (`strict_dtypes`) for gvlab's own numerics, because optax 0.2.8 itself is not strict-clean (`adam`'s bias
  correction computes `float ** int32`).
* A persistent compilation cache shared by the test processes: identical programs compile once.
* A `key` fixture seeded from the test's node id (printed in the failure report).
"""

from __future__ import annotations

import importlib.metadata
import os
import zlib

# XLA's LLVM backend at -O0: most test time is compilation of small programs, and -O0 compiles them ~30% faster
# (measured on 2 CPU cores: lensnet + gkcl smoke runs 143 -> 99 s of CPU). The HLO-level passes still run, so the
# programs compute the same functions; only the machine code is less optimised. GVLAB_TEST_XLA_OPT=3 restores it.
_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f]
if not any(f.startswith("--xla_force_host_platform_device_count") for f in _flags):
    _flags.append("--xla_force_host_platform_device_count=4")
if not any(f.startswith("--xla_backend_optimization_level") for f in _flags):
    _flags.append(f"--xla_backend_optimization_level={os.environ.get('GVLAB_TEST_XLA_OPT', '0')}")
# XLA:CPU's older (non-MLIR) fusion emitters compile faster, and two codegen splits suit 2 workers on 2 cores:
# measured on the lensnet smoke run with a cold cache, compilation 50 -> 28 s of its 72 -> 50 s. jaxlib 0.12
# removed the older emitters (an unknown flag in XLA_FLAGS aborts the process), so the switch is asked for only
# before 0.11.
_speed_flags = ["--xla_cpu_parallel_codegen_split_count=2"]
if tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
    _speed_flags.insert(0, "--xla_cpu_use_fusion_emitters=false")
for _flag in _speed_flags:
    if not any(f.startswith(_flag.split("=")[0]) for f in _flags):
        _flags.append(_flag)
os.environ["XLA_FLAGS"] = " ".join(_flags)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")

# One cache for this process, the CLI called in-process, and the CLI and notebooks run as subprocesses.
_CACHE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".cache", "jax-tests"))
os.environ.setdefault("GVLAB_COMPILE_CACHE", _CACHE)
if os.environ["GVLAB_COMPILE_CACHE"] != "0":
    from gvlab import compile_cache  # noqa: E402  (locked: parallel test workers share the folder)

    compile_cache.enable(os.environ["GVLAB_COMPILE_CACHE"])


@pytest.fixture
def key(request):
    """A typed PRNG key whose seed is a hash of the test's node id, so each test is reproducible alone."""
    seed = zlib.crc32(request.node.nodeid.encode()) & 0x7FFFFFFF
    request.node.user_properties.append(("seed", seed))
    return jax.random.key(seed)


@pytest.fixture
def strict_dtypes():
    """Strict dtype promotion for the test's duration: no silent int->float or float32->float64 promotion."""
    with jax.numpy_dtype_promotion("strict"):
        yield


# Files that take a minute or more on 2 cores, scheduled first: `--dist loadfile --no-loadscope-reorder` hands out
# files in collection order, so long files left to the end would keep one worker busy while the other idles
# (longest first). Without `--no-loadscope-reorder`, pytest-xdist >= 3.5 re-sorts files by their number of tests,
# which puts the smoke files (few tests, minutes each) last.
_LONG_FIRST = ("test_smoke_", "test_cli.py", "test_gkcl.py", "test_notebooks.py", "test_video_sde.py",
               "test_distributed.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return next((i for i, prefix in enumerate(_LONG_FIRST) if name.startswith(prefix)), len(_LONG_FIRST))

    items.sort(key=rank)  # stable: the order inside each file and among the rest is kept


# `GVLAB_TEST_COMPILE_REPORT=FILE make test`: one JSON line per test with the seconds it spent tracing, lowering and
# compiling (XLA backend) and its persistent-cache hits, the measure to keep `make test` inside its budget by
# (compilation, not computation, is most of the suite's time on CPU). Off by default: the listeners cost nothing
# then, and the numbers depend on the order the workers happen to fill the shared cache.
_COMPILE_REPORT = os.environ.get("GVLAB_TEST_COMPILE_REPORT")
if _COMPILE_REPORT:
    import json
    import time

    from jax import monitoring

    _events = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
               "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
               "/jax/core/compile/backend_compile_duration": "compile_s"}
    _totals: dict = {}

    def _on_duration(event, duration, **kwargs):
        if event in _events:
            _totals[_events[event]] = _totals.get(_events[event], 0.0) + duration
            if event.endswith("backend_compile_duration"):
                _totals["compiles"] = _totals.get("compiles", 0) + 1

    def _on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            _totals["cache_hits"] = _totals.get("cache_hits", 0) + 1

    monitoring.register_event_duration_secs_listener(_on_duration)
    monitoring.register_event_listener(_on_event)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        _totals.clear()
        start = time.perf_counter()
        yield
        record = {"test": item.nodeid, "wall_s": round(time.perf_counter() - start, 3),
                  **{k: round(v, 3) for k, v in _totals.items()}}
        with open(_COMPILE_REPORT, "a") as f:
            f.write(json.dumps(record) + "\n")
