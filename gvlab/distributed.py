"""One run over several processes (hosts): `jax.distributed.initialize` and which process writes what.

JAX runs one Python process per host (multi-controller SPMD). Every process runs the same program: it builds the
same config, the same seeds and the same data, and `fit`'s one-axis data mesh then spans the devices of every
process (`jax.devices()` is global once JAX is initialised this way), so each step's batch is split over all of
them and XLA inserts the cross-host gradient all-reduce (gloo on CPU, NCCL on GPU, ICI/DCN on TPU).

Who writes: every process takes part in checkpoints (orbax's multi-host save and restore: each writes its own
shards; gvlab's state is replicated, so the primary host writes it), and only process 0 writes `metrics.jsonl`,
`config.json`, evaluation caches, figures and reports, and holds the workdir lock. All processes need the workdir
on a file system they share.

How to start (no launcher of gvlab's own; the scheduler starts one process per host):

    # explicit (any machines; here two processes on one machine)
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$K gvlab run NAME --workdir W --distributed
    # Slurm (`srun`, one task per host), TPU pod slices and Open MPI: JAX reads everything from the environment
    srun gvlab run NAME --workdir /shared/W --distributed

`GVLAB_DISTRIBUTED=1` does what `--distributed` does (for launchers that pass no arguments).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gvlab.errors import ConfigError

ENV_FLAG = "GVLAB_DISTRIBUTED"


def requested(flag: bool = False) -> bool:
    """`--distributed` on the command line, or `GVLAB_DISTRIBUTED=1` in the environment."""
    return flag or os.environ.get(ENV_FLAG, "") not in ("", "0")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be an integer") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs: Any) -> None:
    """Join the processes of one run; call before anything else touches JAX's devices.

    Arguments left as None come from `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, and
    otherwise from JAX's cluster detection (Slurm, Open MPI, TPU pod slices, Kubernetes). A second call in the same
    process does nothing. Extra keyword arguments go to `jax.distributed.initialize`.

    Raises:
        ConfigError: JAX has already started on this process's devices alone, or the environment names no
            coordinator and no cluster is detected.
    """
    import jax

    if jax.distributed.is_initialized():
        return
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"--distributed: could not join the other processes ({error}); set "
                          "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or start the processes "
                          "from a cluster JAX detects (srun, mpirun, a TPU pod slice), before anything uses JAX") \
            from error


def _joined_jax() -> Any:
    """JAX, if it is imported and this process joined a multi-process run; else None (JAX is not imported here)."""
    jax = sys.modules.get("jax")
    return jax if jax is not None and jax.distributed.is_initialized() else None


def process_index() -> int:
    """This process's rank (0 when not distributed)."""
    jax = _joined_jax()
    return jax.process_index() if jax is not None else 0


def is_writer() -> bool:
    """Whether this process writes the run's files (metrics, config, reports): process 0 only."""
    return process_index() == 0


def process_count() -> int:
    """How many processes share the run (1 when not distributed)."""
    jax = _joined_jax()
    return jax.process_count() if jax is not None else 1


def on_writer(write: Any, name: str) -> Any:
    """Call `write()` on process 0 only; with several processes the others wait until it has finished.

    For files that a process may read back later in the run (config.json, a sweep point's record, an evaluation
    cache): after this call every process sees the same folder. `name` identifies the barrier and must be the
    same on every process. Returns what `write` returned (None on the other processes).
    """
    result = write() if is_writer() else None
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"gvlab:{name}")
    return result
