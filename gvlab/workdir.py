"""Workdir safety: one run at a time holds a workdir, and what a workdir holds is read before anything is written.

`lock(workdir)` takes an exclusive `fcntl` lock on `<workdir>/.lock` and writes the holder (pid, host, start time)
into it. A second run on the same workdir stops at once with a message naming the holder. The lock belongs to the
process: when a run is killed (even with SIGKILL) the operating system releases it, and the next run takes the
workdir over, saying whose stale lock it replaced. Within one process the lock is re-entrant (an experiment's
`run.fit` calls take the workdir their experiment already holds).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from gvlab import distributed
from gvlab.errors import WorkdirError

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # workdirs this process holds, with a re-entry count


class WorkdirBusyError(WorkdirError):
    """Another live process holds the workdir."""


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def check_usable(workdir: Path) -> None:
    """Refuse a workdir path that is an existing file, or a folder (or parent) that cannot be written.

    Raises:
        WorkdirError: with what to do instead.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is an existing file, not a folder; give a folder path")
    probe = workdir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise WorkdirError(f"{probe} is not writable (read-only folder or file system); give a writable --workdir "
                           "(a finished run there can still be re-reported: its report.json is printed)")


@contextlib.contextmanager
def lock(workdir: str | Path, log=None):
    """Hold `workdir` exclusively for the duration of the block (see the module docstring).

    Raises:
        WorkdirBusyError: another live process holds it (the message names it and how to proceed).
    """
    workdir = Path(workdir).absolute()
    if not distributed.is_writer():  # a multi-process run: process 0 holds the lock for all of them
        yield
        return
    if workdir in _HELD:
        _HELD[workdir] += 1
        try:
            yield
        finally:
            _HELD[workdir] -= 1
        return
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        handle.close()
        raise WorkdirBusyError(
            f"{workdir} is in use by another gvlab run ({_describe(holder)}); wait for it to finish, stop it "
            f"(kill {holder.get('pid', 'PID')}: it checkpoints first), or use another --workdir") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:  # the lock was free although a holder was recorded: that process died without cleaning up
        try:
            stale = json.loads(previous)
        except json.JSONDecodeError:
            stale = {}
        message = f"{workdir}: taking over the lock left by a run that ended without releasing it ({_describe(stale)})"
        (log or (lambda m: print(m, file=sys.stderr)))(message)
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}))
    handle.flush()
    _HELD[workdir] = 1
    try:
        yield
    finally:
        del _HELD[workdir]
        handle.seek(0)
        handle.truncate()  # an empty lock file: released cleanly
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
        if created and _holds_nothing(workdir):  # a refused command leaves no trace, not even the folder
            shutil.rmtree(workdir, ignore_errors=True)


def _holds_nothing(workdir: Path) -> bool:
    """Only the lock file and empty folders."""
    return all(p.is_dir() or p.name == LOCK_NAME for p in workdir.rglob("*"))


def has_progress(workdir: Path) -> bool:
    """Whether `workdir` holds anything a run produced that a new config would contradict: a checkpoint (of any
    fit or sweep point), a finished sweep point, or a report."""
    if (workdir / "report.json").exists():
        return True
    for pattern in ("ckpt/*", "fits/*/ckpt/*", "points/*/point.json", "points/*/ckpt/*", "points/*/fits/*/ckpt/*"):
        for found in workdir.glob(pattern):
            if found.name.isdigit() or found.name == "point.json":
                return True
    return False


def clear_failed_start(workdir: Path) -> None:
    """Remove what a run that never reached a checkpoint left (its metric rows), so a new config starts clean."""
    if not distributed.is_writer():
        return
    for path in list(workdir.glob("metrics.jsonl")) + list(workdir.glob("fits/*/metrics.jsonl")):
        path.unlink()
