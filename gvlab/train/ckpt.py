"""Checkpoints: the only module that imports orbax (its API moved twice in two years).

Layout: `<directory>/<step>/{state,meta}`. The loop decides *when* to save; orbax decides how many to keep.
Every checkpoint's meta carries a CRC32 fingerprint of the state's bytes, so a checkpoint whose files were damaged
but still decode is caught too. A checkpoint that cannot be read is never deleted: `restore_latest` falls back to
the newest readable one and moves the unreadable, newer ones aside into `<directory>_unreadable/` (orbax would
otherwise refuse to save at their step numbers and keep the damaged one as "latest").
"""

from __future__ import annotations

import logging
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gvlab import distributed
from gvlab.errors import CheckpointError

log = logging.getLogger(__name__)


def fingerprint(tree: Any) -> int:
    """CRC32 over the bytes of every leaf, in tree order: equal iff the state is bitwise equal (w.h.p.)."""
    crc = 0
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
    return crc


def _no_replica_slices_on_cpu() -> None:
    """Save each replicated array whole on CPU rather than in replica slices.

    orbax's ArrayHandler splits a replicated array across its replicas so that each writes a slice
    (`use_replica_parallel`, on by default except on GPU). On CPU the replicas share the host's memory, so the
    split gains nothing, and each slice is an eagerly compiled `slice` program per array shape: ~30 compiles,
    ~0.7 s, per small fit on a 4-device CPU mesh. Registered once, for jax.Array, only when JAX runs on CPU; the
    files written are the same.
    """
    if jax.default_backend() != "cpu":
        return
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_use_replica_parallel", False):
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False,
                                                      array_metadata_store=current._array_metadata_store),
            override=True)


class Checkpointer:
    """Save and restore `(state, meta)` pairs under one directory.

    Args:
        directory: where step folders live (created on first save).
        keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, keep: int):
        _no_replica_slices_on_cpu()
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, cleanup_tmp_directories=True  # tmp dirs are half-written saves
            ),
            item_names=("state", "meta"),
        )

    def steps(self) -> list[int]:
        """Steps with a finished checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save asynchronously; device arrays are copied to host before this returns, so donation is safe."""
        meta = {**meta, "step": int(step), "fingerprint": fingerprint(state)}
        self._manager.save(
            int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore one step into the skeleton `abstract_state` (ShapeDtypeStructs with shardings)."""
        out = self._manager.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        meta = dict(out.meta)
        if "fingerprint" in meta and fingerprint(out.state) != meta["fingerprint"]:
            raise CheckpointError(f"checkpoint {step}: state bytes do not match the fingerprint saved with them")
        return out.state, meta

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Restore the newest readable checkpoint, or return None when there is none.

        Unreadable newer checkpoints are moved to `<directory>_unreadable/<step>-<time>` with a warning.

        Raises:
            CheckpointError: checkpoints exist but none can be read (nothing is moved in that case).
        """
        steps = self.steps()
        failures: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as e:  # orbax/tensorstore raise ValueError, OSError, KeyError... all mean unreadable
                failures.append((step, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
                continue
            for bad_step, reason in failures:
                moved = self._quarantine(bad_step)
                log.warning("checkpoint %d is unreadable (%s); moved to %s and resumed from step %d",
                            bad_step, reason, moved, step)
            return state, meta
        if failures:
            mismatch = self._structure_mismatch(abstract_state)
            if mismatch:
                raise CheckpointError(
                    f"the model's parameter structure differs from the checkpoint's in {self.directory} "
                    f"({mismatch}): the config that wrote it is not the one resuming it; use another workdir, "
                    "or restore the config it was written with")
            detail = "; ".join(f"step {s}: {r}" for s, r in failures)
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} ({detail}). Nothing was deleted; "
                "move the folder away or use another workdir to start again."
            )
        return None

    def _structure_mismatch(self, abstract_state: Any) -> str:
        """A description of how the newest checkpoint's parameter tree differs from `abstract_state`'s ("" when it
        does not, or when nothing can be read at all)."""
        raw = self.restore_latest_raw()
        if raw is None or "params" not in raw:
            return ""
        def names(tree):
            flat = jax.tree_util.tree_flatten_with_path(tree)[0]
            return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path):
                    tuple(np.shape(leaf)) for path, leaf in flat}
        saved, wanted = names(raw["params"]), names(abstract_state.params)
        if saved == wanted:
            return ""
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                return f"first difference at params/{key}: checkpoint {saved.get(key)}, model {wanted.get(key)}"
        return ""

    def restore_latest_raw(self) -> Any | None:
        """The newest readable checkpoint's state as orbax stores it (nested dicts and lists of host arrays), for
        reading a run written by another program (a warm start); None when there is none. Nothing is moved."""
        for step in reversed(self.steps()):
            try:
                return self.restore_raw(step)
            except Exception:  # unreadable: try the next older one
                continue
        return None

    def restore_raw(self, step: int) -> Any:
        """The state saved at `step` as orbax stores it (arrays in nested dicts and lists).

        A checkpoint written by a run over several processes names devices this process does not have; it is
        then read onto this process's first device, from the shapes and dtypes it records.
        """
        try:
            return self._manager.restore(int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
        except ValueError:  # "Topology mismatch": saved over another set of processes or devices
            tree = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state").item_metadata
            here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), tree)
            return self._manager.restore(int(step),
                                         args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state

    def _quarantine(self, step: int) -> Path:
        self.wait()
        target = self.directory.parent / f"{self.directory.name}_unreadable" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        def move():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), target)

        distributed.on_writer(move, f"quarantine:{step}")  # one process moves it; all then forget it
        self._manager.reload()  # forget the moved step
        return target

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()
