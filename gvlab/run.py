"""Executing an experiment: the `Run` context it receives, workdir bookkeeping, and the `Outcome`.

Workdir layout (every path relative to the workdir):

    config.json        experiment name, profile and resolved config: `gvlab resume WORKDIR` needs nothing else
    metrics.jsonl      rows of the main fit (`run.fit(spec)`); other fits live in fits/<name>/
    ckpt/<step>/       checkpoints of the main fit
    evals/<name>.npz   cached evaluations and artefacts (`run.evaluate`, `run.artifact`), each with the
                       fingerprint of its inputs: a rerun recomputes only what changed
    figures/*.png      figures of the experiment
    report.json/.md    claims with measured values, all results, timings and versions

A workdir belongs to one experiment and one config. Rerunning the same command resumes every fit from its newest
checkpoint; only the step counts and the logging/evaluation/checkpoint intervals may change between runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from gvlab import config as config_lib
from gvlab.errors import WorkdirError
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

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.claims)


class Run:
    """The context an experiment function receives: fits, figures, keys and log lines, tied to one workdir."""

    def __init__(self, name: str, config: Any, profile: str, workdir: Path | None, progress: bool = True):
        self.name, self.config, self.profile, self.workdir = name, config, profile, workdir
        self.progress = progress
        self.fits: dict[str, FitResult] = {}
        self.figures: dict[str, Any] = {}
        self.cache = Cache(workdir / "evals" if workdir is not None else None)

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
                     **fit_kwargs)
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
        stamp = fingerprint(params, data, key, f"{fn.__module__}.{fn.__qualname__}", extra)
        return self.cache.get_or_compute(name, stamp, lambda: evaluate_runs(fn, params, data, key, mode=mode))

    def artifact(self, name: str, fn: Callable[[], Mapping[str, Any]], *, inputs: Any = None) -> dict[str, Any]:
        """The results of `fn()` (a dict of arrays, possibly nested), computed once and cached in the workdir.

        For post-fit work that is not a per-run evaluator: baselines, classical solvers, timings, samples for a
        figure. `inputs` is fingerprinted (with `name`), so changed inputs recompute.
        """
        return self.cache.get_or_compute(name, fingerprint(name, inputs), fn)

    def key(self, purpose: str) -> jax.Array:
        """A key for evaluation work outside `fit`, fixed by the run's seed and the purpose's name."""
        return jax.random.fold_in(root_key(self.config.train.seed), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)

    def figure(self, name: str, fig) -> Path | None:
        """Save a matplotlib figure as figures/<name>.png (kept in memory when there is no workdir)."""
        import matplotlib.pyplot as plt

        path = None
        if self.workdir is not None:
            path = self.workdir / "figures" / f"{name}.png"
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


def prepare_workdir(workdir: Path, name: str, profile: str, cfg: Any) -> None:
    """Create the workdir or check that it belongs to this experiment and config; write config.json.

    Raises:
        WorkdirError: the workdir holds another experiment, or a config that differs in more than step counts
            and intervals (the message lists the differences).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WorkdirError(f"{path} is not valid JSON ({e}); fix it or use another workdir") from None
        if saved.get("experiment") != name:
            raise WorkdirError(
                f"{workdir} holds a run of experiment {saved.get('experiment')!r}, not {name!r}; "
                "use another --workdir"
            )
        try:
            saved_cfg = config_lib.from_dict(type(cfg), saved["config"])
        except Exception as e:  # the config class changed since that run
            raise WorkdirError(f"{path} does not match the current config of {name!r}: {e}") from None
        changes = config_lib.diff(saved_cfg, cfg)
        blocking = {k: v for k, v in changes.items() if k.rsplit(".", 1)[-1] not in RESUMABLE_FIELDS}
        if blocking:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in blocking.items())
            raise WorkdirError(
                f"{workdir} holds {name!r} with another config ({listed}); use another --workdir, "
                f"or `gvlab resume {workdir}` to continue that run"
            )
    record = {
        "experiment": name,
        "profile": profile,
        "config": config_lib.to_dict(cfg),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def read_workdir(workdir: Path) -> dict[str, Any]:
    """The record in `workdir/config.json` (raises WorkdirError if there is none)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise WorkdirError(f"{workdir} has no config.json: not a gvlab workdir (start one with `gvlab run`)")
    return json.loads(path.read_text())


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


def execute(experiment, workdir: str | Path | None = None, progress: bool = True) -> Outcome:
    """Run a resolved experiment, check its claims and (with a workdir) write report.json and report.md."""
    from gvlab.report.writer import write_report

    workdir = Path(workdir) if workdir is not None else None
    if workdir is not None:
        prepare_workdir(workdir, experiment.name, experiment.profile, experiment.config)
    run = Run(experiment.name, experiment.config, experiment.profile, workdir, progress)
    t0 = time.perf_counter()
    results = jsonable(dict(experiment.entry.fn(experiment.config, run)))
    claims = [claim.check(results) for claim in experiment.claims]
    outcome = Outcome(name=experiment.name, profile=experiment.profile, config=experiment.config,
                      results=results, claims=claims, fits=run.fits, figures=run.figures, workdir=workdir,
                      wall_s=time.perf_counter() - t0)
    if workdir is not None:
        write_report(outcome)
    return outcome
