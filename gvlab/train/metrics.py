"""Metrics rows, the `metrics.jsonl` file, the in-memory `History`, the progress line and the NaN guard.

A row is `{"step": s, "seed": i, "loss": ..., "elbo/kl": ..., "eval/test/elbo": ...}`: one row per logged step
and seed (long format, one line of pandas: `pd.read_json(path, lines=True)`). Rows hold only numbers that are a
pure function of the seed and the step, so a resumed run writes exactly the rows of an uninterrupted one;
timings go to the progress line and to `FitResult.timing`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gvlab import distributed


def rows_from_metrics(step: int, seeds: Sequence[int], metrics: dict[str, Any], stacked: bool,
                      members: Sequence[int] | None = None) -> list[dict]:
    """Host rows from device metrics; `stacked` metrics carry a leading run axis.

    With `members` (runs that differ in hyperparameters, `Spec.hyperparams`) each row also names its member.
    """
    host = jax.device_get(metrics)
    rows = []
    for i, seed in enumerate(seeds):
        row = {"step": int(step), "seed": int(seed)}
        if members is not None:
            row["member"] = int(members[i])
        for name in sorted(host):
            value = np.asarray(host[name])
            row[name] = float(value[i] if stacked else value)
        rows.append(row)
    return rows


class MetricsFile:
    """Append-only JSON-lines file, flushed per write so a killed run loses at most the current line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, rows: Iterable[dict]) -> None:
        if not distributed.is_writer():  # one process of a multi-process run writes the rows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row, allow_nan=True) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill; the step is recomputed after resume
                continue
        return rows

    def keep_until(self, step: int) -> list[dict]:
        """Drop rows after `step` (a resumed run recomputes them bit for bit) and return the rows kept.

        Rewritten through a temporary file and an atomic rename, so a crash here cannot lose the file.
        """
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        if not distributed.is_writer():
            return rows
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        os.replace(tmp, self.path)
        return rows


class History:
    """The rows of a fit, in memory: for notebooks and for experiments that read their own curves."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = list(rows or [])

    def __len__(self) -> int:
        return len(self.rows)

    def keys(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(k for k in row if k not in ("step", "seed", "member")))
        return list(names)

    def column(self, name: str, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(steps, values)` of one metric; with several runs, `values` is `[steps, runs]` unless `seed` is set.

        Runs are ordered by (member, seed): the fit's run order, members being hyperparameter settings.
        """
        rows = [r for r in self.rows if name in r and (seed is None or r["seed"] == seed)]
        if not rows:
            raise KeyError(f"no metric {name!r}; available: {self.keys()}")
        steps = sorted({r["step"] for r in rows})
        runs = sorted({(r.get("member", 0), r["seed"]) for r in rows})
        table = np.full((len(steps), len(runs)), np.nan)
        for r in rows:
            table[steps.index(r["step"]), runs.index((r.get("member", 0), r["seed"]))] = r[name]
        return np.asarray(steps), table[:, 0] if len(runs) == 1 else table

    def last(self, name: str) -> np.ndarray | float:
        """The final logged value of `name` (an array over seeds when there are several)."""
        _, values = self.column(name)
        return values[-1]

    def plot(self, *names: str, ax=None):
        """Plot metrics against steps (mean over seeds with a min-max band). Returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(5, 3))[1]
        for name in names or ("loss",):
            steps, values = self.column(name)
            if values.ndim == 2:
                ax.fill_between(steps, values.min(1), values.max(1), alpha=0.25)
                values = values.mean(1)
            ax.plot(steps, values, label=name)
        ax.set_xlabel("step")
        ax.legend()
        return ax


class Progress:
    """One status line: step/total, steps/s, ETA and the latest loss; plain lines when not on a terminal."""

    def __init__(self, total: int, start: int, label: str, enabled: bool = True, stream=None):
        self.total, self.start, self.label = total, start, label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()
        self.t_last_print = self.t0  # the first time-based line comes after one interval, not at step 1
        self.last_printed_step = -1
        self.loss: float | None = None

    def rate(self, step: int) -> float:
        elapsed = time.perf_counter() - self.t0
        return (step - self.start) / elapsed if elapsed > 0 and step > self.start else 0.0

    def update(self, step: int, loss: float | None = None, force: bool = False) -> None:
        if loss is not None:
            self.loss = loss
        now = time.perf_counter()
        # On a terminal redraw at most 4x per second; in logs print at most every 5 s (and on `force`).
        if not self.enabled or (not force and now - self.t_last_print < (0.25 if self.tty else 5.0)):
            return
        if step == self.last_printed_step:
            return
        self.t_last_print, self.last_printed_step = now, step
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        loss = "" if self.loss is None else f" | loss {self.loss:.4g}"
        line = f"{self.label} step {step}/{self.total} | {rate:7.1f} steps/s | ETA {_duration(eta)}{loss}"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self, step: int) -> None:
        self.update(step, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


# ----------------------------------------------------------------------------------------------------------------
# NaN guard: carried through the compiled step so the first bad step is known without a host sync per step.


def init_guard(num_metrics: int) -> dict[str, jax.Array]:
    """`first_bad_step = -1` (none yet) and which metrics were non-finite at that step."""
    return {"first_bad_step": jnp.full((), -1, jnp.int32), "bad_metrics": jnp.zeros((num_metrics,), jnp.bool_)}


def update_guard(guard: dict, metrics: dict[str, jax.Array], names: Sequence[str], step: jax.Array) -> dict:
    """Record the first step at which any of `names` is NaN or inf (later steps do not overwrite it)."""
    bad = jnp.stack([~jnp.all(jnp.isfinite(metrics[n])) for n in names])
    first = (guard["first_bad_step"] < 0) & jnp.any(bad)
    return {
        "first_bad_step": jnp.where(first, step.astype(jnp.int32), guard["first_bad_step"]),
        "bad_metrics": jnp.where(first, bad, guard["bad_metrics"]),
    }
