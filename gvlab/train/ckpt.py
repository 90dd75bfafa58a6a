"""Checkpoints: the only module that imports orbax (its API moved twice in two years; anchors.md 4.9).

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

from gvlab.errors import CheckpointError

log = logging.getLogger(__name__)


def fingerprint(tree: Any) -> int:
    """CRC32 over the bytes of every leaf, in tree order: equal iff the state is bitwise equal (w.h.p.)."""
    crc = 0
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
    return crc


class Checkpointer:
    """Save and restore `(state, meta)` pairs under one directory.

    Args:
        directory: where step folders live (created on first save).
        keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, keep: int):
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
            detail = "; ".join(f"step {s}: {r}" for s, r in failures)
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} ({detail}). Nothing was deleted; "
                "move the folder away or use another workdir to start again."
            )
        return None

    def restore_latest_raw(self) -> Any | None:
        """The newest readable checkpoint's state as orbax stores it (nested dicts and lists of host arrays), for
        reading a run written by another program (a warm start); None when there is none. Nothing is moved."""
        for step in reversed(self.steps()):
            try:
                out = self._manager.restore(int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
            except Exception:  # unreadable: try the next older one
                continue
            return out.state
        return None

    def _quarantine(self, step: int) -> Path:
        self.wait()
        target = self.directory.parent / f"{self.directory.name}_unreadable" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), target)
        self._manager.reload()  # forget the moved step
        return target

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()
