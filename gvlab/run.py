"""Executing an experiment: the `Run` context it receives, workdir bookkeeping, and the `Outcome`.

Workdir layout (every path relative to the workdir):

    config.json        experiment name, profile and resolved config: `gvlab resume WORKDIR` needs nothing else
    metrics.jsonl      rows of the main fit (`run.fit(spec)`); other fits live in fits/<name>/
    ckpt/<step>/       checkpoints of the main fit
    evals/<name>.npz   cached evaluations and artefacts (`run.evaluate`, `run.artifact`), each with the
                       fingerprint of its inputs: a rerun recomputes only what changed
    figures/*.png      figures of the experiment
    points/<i>/        run i of a declared sweep (`gvlab sweep NAME --index i`): its fits, figures, evals, and
                       point.json (the point's values and results) once it has finished
    report.json/.md    claims with measured values, all results, timings and versions

A workdir belongs to one experiment and one config. Rerunning the same command resumes every fit from its newest
checkpoint; only the step counts and the logging/evaluation/checkpoint intervals may change between runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gvlab import config as config_lib
from gvlab import distributed
from gvlab import workdir as workdir_lib
from gvlab.errors import ConfigError, WorkdirError
from gvlab.evals.core import Cache, Evaluator, evaluate_runs, fingerprint
from gvlab.rng import root_key
from gvlab.train.loop import FitResult, fit
from gvlab.types import Spec

# Config fields that may change when a workdir is reused: they do not alter the numbers of steps already taken.
RESUMABLE_FIELDS = {"steps", "log_every", "eval_every", "ckpt_every", "keep"}


@dataclasses.dataclass
class Outcome:
    """What executing an experiment produced (also written to report.json when there is a workdir)."""

    name: str
    profile: str
    config: Any
    results: dict[str, Any]
    claims: list[dict[str, Any]]
    fits: dict[str, FitResult]
    figures: dict[str, Any]
    workdir: Path | None
    wall_s: float
    source: dict[str, Any] | None = None  # `gvlab.report.writer.source_state()` when the run started

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.claims if not c.get("retired"))


class Run:
    """The context an experiment function receives: fits, figures, keys and log lines, tied to one workdir."""

    def __init__(self, name: str, config: Any, profile: str, workdir: Path | None, progress: bool = True,
                 sweep=None, pending: PendingConfig | None = None):
        self.name, self.config, self.profile, self.workdir = name, config, profile, workdir
        self.progress = progress
        self.pending = pending  # config.json, written when the first fit has validated its inputs
        self.sweep = sweep  # the experiment's `registry.Sweep`, if it declares one
        self.fits: dict[str, FitResult] = {}
        self.figures: dict[str, Any] = {}
        # Until config.json is written (the first fit validated its inputs), cached evaluations stay in memory: a
        # command refused at that point leaves the workdir as it found it.
        deferred = pending is not None and not pending.done
        self.cache = Cache(workdir / "evals" if workdir is not None else None, deferred=deferred)
        if deferred:
            pending.on_commit.append(self.cache.flush)

    def fit(self, spec: Spec, train: config_lib.TrainConfig | None = None, *, name: str | None = None,
            **fit_kwargs) -> FitResult:
        """`gvlab.train.fit` with this run's workdir: the main fit (no name) at the top, others in fits/<name>/."""
        train = train or self.config.train
        key = name or "main"
        if key in self.fits:
            raise ValueError(f"fit {key!r} already ran in this experiment; give each fit its own name")
        fit_dir = None
        if self.workdir is not None:
            fit_dir = self.workdir if name is None else self.workdir / "fits" / name
        meta = {"experiment": self.name, "profile": self.profile, "fit": key}
        result = fit(spec, train, fit_dir, progress=self.progress, label=f"{self.name}:{key}", meta=meta,
                     on_start=self.pending.commit if self.pending is not None else None, **fit_kwargs)
        self.fits[key] = result
        return result

    def evaluate(self, name: str, fn: Evaluator, params: Any, data: Any = None, *, key: jax.Array | None = None,
                 mode: str = "vmap", extra: Any = None) -> dict[str, np.ndarray]:
        """`{metric: [R, ...]}` of the evaluator `fn(run_params, data, key)` over every run, cached in the workdir.

        Args:
            name: the cache entry (`evals/<name>.npz`); one name per evaluation in an experiment.
            fn: the per-run evaluator (`gvlab.evals`).
            params: a `FitResult` or parameters with a leading run axis.
            data: evaluation arrays shared by the runs.
            key: the evaluation key (default `run.key(name)`: fixed by the seed and the name).
            mode: "vmap" or "sequential" over the runs.
            extra: anything else the numbers depend on (settings the evaluator closes over), fingerprinted.
        """
        params = params.params if isinstance(params, FitResult) else params
        key = self.key(name) if key is None else key
        stamp = fingerprint(params, data, key, _identity(fn), extra)
        return self.cache.get_or_compute(name, stamp, lambda: evaluate_runs(fn, params, data, key, mode=mode))

    def artifact(self, name: str, fn: Callable[[], Mapping[str, Any]], *, inputs: Any = None) -> dict[str, Any]:
        """The results of `fn()` (a dict of arrays, possibly nested), computed once and cached in the workdir.

        For post-fit work that is not a per-run evaluator: baselines, classical solvers, timings, samples for a
        figure. `inputs` is fingerprinted (with `name`), so changed inputs recompute.
        """
        return self.cache.get_or_compute(name, fingerprint(name, inputs), fn)

    def points(self) -> list[dict]:
        """The declared sweep's points, in index order."""
        if self.sweep is None:
            raise ValueError(f"{self.name} declares no sweep (@experiment(..., sweep=Sweep(...)))")
        return [dict(p) for p in self.sweep.points(self.config)]

    def run_point(self, index: int) -> dict[str, Any]:
        """Run sweep point `index` in `points/<index>/` (resuming its fits), or load it if it has finished.

        Returns `{"index", "point", "results"}` (results as JSON values: lists for arrays).
        """
        points = self.points()
        if not 0 <= index < len(points):
            raise ConfigError(f"{self.name}: sweep index {index} is out of range (0..{len(points) - 1}; "
                              f"`gvlab sweep {self.name} --list`)")
        point = jsonable(points[index])
        workdir = self.workdir / "points" / str(index) if self.workdir is not None else None
        record_path = workdir / "point.json" if workdir is not None else None
        if record_path is not None and record_path.exists():
            record = json.loads(record_path.read_text())
            if record.get("point") == point:
                self.log(f"sweep point {index} {point}: finished earlier, loaded")
                return record
        sub = Run(self.name, self.config, self.profile, workdir, self.progress, pending=self.pending)
        self.log(f"sweep point {index} {point}: running")
        with workdir_lib.lock(workdir) if workdir is not None else contextlib.nullcontext():
            results = jsonable(dict(self.sweep.run(self.config, sub, points[index], index)))
        for fit_name, result in sub.fits.items():
            self.fits[f"points/{index}/{fit_name}"] = result
        self.figures.update({f"points/{index}/{k}": v for k, v in sub.figures.items()})
        record = {"index": index, "point": point, "results": results}
        if record_path is not None:
            _write_json(record_path, record)
        return record

    def gather(self) -> list[dict[str, Any]]:
        """Every sweep point's record (`run_point`), running those not finished yet, in index order."""
        return [self.run_point(i) for i in range(len(self.points()))]

    def key(self, purpose: str) -> jax.Array:
        """A key for evaluation work outside `fit`, fixed by the run's seed and the purpose's name."""
        return jax.random.fold_in(root_key(self.config.train.seed), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)

    def figure(self, name: str, fig) -> Path | None:
        """Save a matplotlib figure as figures/<name>.png (kept in memory when there is no workdir)."""
        import matplotlib.pyplot as plt

        path = None
        if self.workdir is not None:
            path = self.workdir / "figures" / f"{name}.png"
            if distributed.is_writer():  # one process of a multi-process run writes the files
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(fig)
            self.figures[name] = path
        else:
            self.figures[name] = fig
        return path

    def log(self, message: str) -> None:
        """A line on stderr, prefixed with the experiment's name."""
        if self.progress:
            print(f"[{self.name}] {message}", file=sys.stderr, flush=True)


class PendingConfig:
    """config.json, written once the first fit has validated its inputs (or at the end of a run without fits).

    A refused command (a checkpoint past `train.steps`, a batch larger than the dataset or not divisible over the
    devices) therefore leaves the workdir as it found it: the next `gvlab resume` still sees the old config.
    """

    def __init__(self, path: Path, record: dict, clear_failed_start: bool = False):
        self.path, self.record, self.clear_failed_start = path, record, clear_failed_start
        self.done = False
        self.on_commit: list[Callable[[], None]] = []  # what was held back until the inputs were validated

    def commit(self) -> None:
        if self.done:
            return
        if self.clear_failed_start:
            workdir_lib.clear_failed_start(self.path.parent)
        _write_json(self.path, {**self.record, "written": _now()})
        self.done = True
        for flush in self.on_commit:
            flush()


def _identity(fn: Any) -> str:
    """The evaluator's name for the cache key; a `functools.partial` adds its bound arguments."""
    if isinstance(fn, functools.partial):
        return f"{_identity(fn.func)}({fn.args!r}, {sorted(fn.keywords.items())!r})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def check_workdir(workdir: Path, name: str, profile: str, cfg: Any, log=None) -> PendingConfig:
    """Check, without writing anything, that `workdir` may run `name` with `cfg`; return the config to write.

    A workdir whose earlier run never reached a checkpoint (it failed at step 1, or was refused) holds nothing that
    contradicts a new config: it is reused, and one line says so.

    Raises:
        WorkdirError: the workdir holds progress of another experiment, or of a config that differs in more than
            step counts and intervals (the message lists the differences), or an unreadable config.json.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    path = workdir / "config.json"
    record = {"experiment": name, "profile": profile, "config": config_lib.to_dict(cfg)}
    if not path.exists():
        return PendingConfig(path, record)
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkdirError(f"{path} is not valid JSON ({e}); fix it or use another workdir") from None
    reusable = not workdir_lib.has_progress(workdir)
    if saved.get("experiment") != name:
        if reusable:
            log(f"{workdir}: reusing a workdir whose run of {saved.get('experiment')!r} never reached a checkpoint")
            return PendingConfig(path, record, clear_failed_start=True)
        raise WorkdirError(f"{workdir} holds a run of experiment {saved.get('experiment')!r}, not {name!r}; "
                           "use another --workdir")
    try:
        saved_cfg = config_lib.from_dict(type(cfg), saved["config"])
    except Exception as e:  # the config class changed since that run
        if reusable:
            log(f"{workdir}: reusing a workdir whose earlier run never reached a checkpoint")
            return PendingConfig(path, record, clear_failed_start=True)
        raise WorkdirError(f"{path} does not match the current config of {name!r}: {e}") from None
    changes = config_lib.diff(saved_cfg, cfg)
    blocking = {k: v for k, v in changes.items() if k.rsplit(".", 1)[-1] not in RESUMABLE_FIELDS}
    if blocking:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in blocking.items())
        if reusable:
            log(f"{workdir}: its earlier run never reached a checkpoint; starting afresh with the new config "
                f"({listed})")
            return PendingConfig(path, record, clear_failed_start=True)
        raise WorkdirError(f"{workdir} holds {name!r} with another config ({listed}); use another --workdir, "
                           f"or `gvlab resume {workdir}` to continue that run")
    return PendingConfig(path, record)


def prepare_workdir(workdir: Path, name: str, profile: str, cfg: Any) -> None:
    """`check_workdir`, then write config.json at once (for callers that run no fit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir(workdir, name, profile, cfg).commit()


def _write_json(path: Path, record: Any) -> None:
    """Atomic write; the temporary name is per process, so sweep runs started together never share one.

    In a run over several processes only process 0 writes, and the others wait for the file (`gvlab.distributed`).
    """
    def write():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)

    distributed.on_writer(write, f"json:{path.name}")


def read_workdir(workdir: Path) -> dict[str, Any]:
    """The record in `workdir/config.json` (raises WorkdirError if there is none)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise WorkdirError(f"{workdir} has no config.json: not a gvlab workdir (start one with `gvlab run`)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkdirError(f"{path} is not valid JSON ({e}); restore it, or start again in another workdir with "
                           "`gvlab run`") from None
    if not isinstance(record, dict) or "experiment" not in record or "config" not in record:
        raise WorkdirError(f"{path} is not a gvlab config record (no 'experiment' and 'config' entries)")
    return record


def jsonable(value: Any) -> Any:
    """Results as JSON: arrays become (nested) lists of floats, scalars floats."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        return array.astype(float).tolist() if array.ndim else float(array)
    return str(value)


def _finished_report(workdir: Path, name: str, cfg: Any) -> dict | None:
    """The report of a finished run of exactly this experiment and config in `workdir`, if there is one."""
    try:
        report = json.loads((workdir / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = report.get("experiment") == name and report.get("config") == config_lib.to_dict(cfg)
    return report if same else None


def _outcome_from_report(experiment, workdir: Path, report: dict) -> Outcome:
    return Outcome(name=experiment.name, profile=experiment.profile, config=experiment.config,
                   results=report["results"], claims=report["claims"], fits={}, figures={}, workdir=workdir,
                   wall_s=0.0)


def _open(experiment, workdir: Path | None, progress: bool):
    """Checks before anything is written: the workdir's path, whether it can be written, what it holds."""
    if workdir is None:
        return None, None
    if workdir.exists() and not workdir.is_dir():
        workdir_lib.check_usable(workdir)
    if workdir.is_dir() and not os.access(workdir, os.W_OK):
        report = _finished_report(workdir, experiment.name, experiment.config)
        if report is not None:  # a finished, read-only run: re-report it without writing
            return None, _outcome_from_report(experiment, workdir, report)
    workdir_lib.check_usable(workdir)
    def log(message):  # a notice, not a progress line: printed under --quiet too
        print(f"[{experiment.name}] {message}", file=sys.stderr, flush=True)

    return check_workdir(workdir, experiment.name, experiment.profile, experiment.config, log), None


def execute(experiment, workdir: str | Path | None = None, progress: bool = True) -> Outcome:
    """Run a resolved experiment, check its claims and (with a workdir) write report.json and report.md.

    With a workdir: nothing is written until the checks pass (path, permissions, what the workdir holds), the
    workdir is locked for the run (`gvlab.workdir.lock`), and config.json is written once the first fit has
    validated its inputs. A finished run in a read-only workdir is re-reported from its report.json.
    """
    from gvlab.report.writer import source_state, write_report

    workdir = Path(workdir) if workdir is not None else None
    pending, finished = _open(experiment, workdir, progress)
    if finished is not None:
        return finished
    with workdir_lib.lock(workdir) if workdir is not None else contextlib.nullcontext():
        run = Run(experiment.name, experiment.config, experiment.profile, workdir, progress, experiment.entry.sweep,
                  pending=pending)
        t0, source = time.perf_counter(), source_state()
        results = jsonable(dict(experiment.entry.fn(experiment.config, run)))
        claims = [claim.check(results) for claim in experiment.claims]
        outcome = Outcome(name=experiment.name, profile=experiment.profile, config=experiment.config,
                          results=results, claims=claims, fits=run.fits, figures=run.figures, workdir=workdir,
                          wall_s=time.perf_counter() - t0, source=source)
        if workdir is not None:
            pending.commit()  # an experiment without fits
            write_report(outcome)
    return outcome


def execute_point(experiment, index: int, workdir: str | Path | None = None, progress: bool = True) -> dict:
    """Run one point of an experiment's declared sweep in `<workdir>/points/<index>/` (`gvlab sweep --index`).

    Only the point's folder is locked, so the tasks of a job array run side by side on one workdir.
    """
    workdir = Path(workdir) if workdir is not None else None
    pending, _ = _open(experiment, workdir, progress)
    run = Run(experiment.name, experiment.config, experiment.profile, workdir, progress, experiment.entry.sweep,
              pending=pending)
    record = run.run_point(index)
    if pending is not None:
        pending.commit()
    return record
