"""The experiment registry: `@experiment`, `Claim`, `get`, `names`.

An experiment is a function `fn(cfg, run) -> dict[str, float | array]` that fits and evaluates models through
`run` (a `gvlab.run.Run`) and returns measured numbers. It is registered with its base config (the `full`
profile), overrides for the `smoke` and `quick` profiles (dicts, or functions of the base config so derived
fields stay consistent), the claims it checks, all fixed before anything runs, and optionally a `Sweep`: its runs
declared as data, each runnable on its own (`gvlab sweep NAME --index i`) and gathered by `run.gather()`.

Registration is lazy: `gvlab.manifest` finds every `@experiment` in the experiments package's sources without
importing them, and `entry(name)` imports only the module that registers `name`.

Examples:
    >>> claim = Claim(statement="IWAE is tighter than the ELBO", metric="iwae_minus_elbo", op=">=", threshold=0.0)
    >>> claim.check({"iwae_minus_elbo": [0.8, 1.1, 0.9]})["passed"]
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import math
import operator
from typing import Any, Callable, Literal, Mapping

import numpy as np

from gvlab import config as config_lib
from gvlab import manifest
from gvlab.errors import ConfigError, GvlabError, UnknownExperimentError

PROFILES = ("smoke", "quick", "full")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A paper's statement turned into a check on one measured number, fixed before the run.

    Attributes:
        statement: the claim in words, as the paper makes it.
        metric: key of the experiment's result dict that the claim reads.
        op: comparison of the measured value against `threshold`.
        threshold: the bar, derived from the paper's statement (never tuned on a run).
        reduce: how values over seeds become the measured value: `"mean"`, or `"all"` (every seed must pass:
            the worst seed is compared).
        paper: the paper's own number for this quantity, when it reports one.
        source: where in the paper the statement is (e.g. "Burda et al. 2016, Table 1").
        retired: why the claim no longer judges the run (its threshold came from our notes and a measured
            ceiling or a derivation shows it unreachable or ill-posed here). A retired claim is still measured and
            reported, with this reason, but does not count towards the run's verdict; its replacement is a new
            claim fixed before its first run.
    """

    statement: str
    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    reduce: Literal["mean", "all"] = "mean"
    paper: float | str | None = None
    source: str = ""
    retired: str = ""

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"Claim op must be one of {list(_OPS)}, got {self.op!r}")
        if self.reduce not in ("mean", "all"):
            raise ValueError(f"Claim reduce must be 'mean' or 'all', got {self.reduce!r}")

    def check(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """Compare the measured value with the threshold; returns a JSON-ready record of the check."""
        record = {k: v for k, v in dataclasses.asdict(self).items()}
        if self.metric not in results:
            return {**record, "passed": False, "measured": None, "note": f"metric {self.metric!r} was not produced"}
        values = np.asarray(results[self.metric], dtype=np.float64).reshape(-1)
        stats = {
            "n": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "values": [float(v) for v in values],
        }
        if self.reduce == "mean":
            measured = stats["mean"]
        else:  # the seed least favourable to the claim
            measured = stats["min"] if self.op in (">", ">=") else stats["max"]
        finite = all(math.isfinite(v) for v in values)
        passed = finite and _OPS[self.op](measured, self.threshold)
        return {**record, **stats, "measured": measured, "passed": bool(passed),
                "note": "" if finite else "non-finite measurement"}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The runs of an experiment declared as data (disentanglement_lib's `sweep.py`, addressed by index).

    Attributes:
        points: `points(cfg) -> [dict]`: one JSON-able dict of values per run, in a fixed order (the index).
        run: `run(cfg, run, point, index) -> results`: one run of the sweep (its fits and evaluations) in its own
            workdir; the experiment function gathers every run's results with `run.gather()`.
    """

    points: Callable[[Any], list[dict]]
    run: Callable[[Any, Any, dict, int], Mapping[str, Any]]


class ImportFailedError(GvlabError):
    """The module that registers an experiment raised on import."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered experiment: function, base config, profile overrides, claims and sweep."""

    name: str
    fn: Callable[[Any, Any], Mapping[str, Any]]
    config: Any
    profiles: Mapping[str, Any]
    claims: tuple[Claim, ...]
    sweep: Sweep | None = None

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    def resolve(self, profile: str = "full", overrides: Mapping[str, Any] | None = None) -> Any:
        """The config of `profile` with `overrides` applied on top (dotted keys, converted to field types)."""
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
        cfg = config_lib.override(self.config, profile_overrides(self.profiles.get(profile, {}), self.config))
        return config_lib.override(cfg, dict(overrides or {}))


def profile_overrides(profile: Any, base: Any) -> dict[str, Any]:
    """A profile's overrides: a dict as is, or a function of the base config returning one."""
    return dict(profile(base) if callable(profile) else profile)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An entry bound to a resolved config and profile: what `get` returns and `run` executes."""

    entry: Entry
    config: Any
    profile: str

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def claims(self) -> tuple[Claim, ...]:
        return self.entry.claims

    def run(self, workdir=None, progress: bool = True):
        """Execute in memory (`workdir=None`) or in a workdir; returns a `gvlab.run.Outcome`."""
        from gvlab.run import execute  # run imports the training stack; keep the registry light

        return execute(self, workdir=workdir, progress=progress)


_REGISTRY: dict[str, Entry] = {}


ProfileOverrides = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]]


def experiment(name: str, *, config: Any, smoke: ProfileOverrides, quick: ProfileOverrides | None = None,
               full: ProfileOverrides | None = None, claims: tuple[Claim, ...] | list[Claim] = (),
               sweep: Sweep | None = None):
    """Register `fn(cfg, run) -> results` under `name`.

    Args:
        name: `family/name`, e.g. `"vae/digits"`.
        config: the base config (a frozen dataclass with a `train: TrainConfig` section).
        smoke: overrides that make the run take seconds (used by the tests); a dict of dotted keys, or a function
            of the base config returning one (derived fields then follow the fields they derive from).
        quick: overrides for a run of minutes on a CPU that reaches the regime the claims are about.
        full: overrides for the run closest to the paper (default: the base config as is).
        claims: the claims the results are checked against.
        sweep: the experiment's runs as data (`Sweep`); `fn` then gathers them with `run.gather()`.

    Raises:
        ValueError: duplicate name, missing `train` section, or profile overrides that do not apply.
    """
    if not hasattr(config, "train"):
        raise ValueError(f"experiment {name!r}: its config must nest a `train: TrainConfig` section")
    profiles = {"smoke": smoke, "quick": quick or {}, "full": full or {}}
    for profile, overrides in profiles.items():  # fail at import, not at the first run of that profile
        try:
            config_lib.override(config, profile_overrides(overrides, config))
        except ConfigError as e:
            raise ValueError(f"experiment {name!r}, profile {profile!r}: {e}") from None

    def register(fn):
        if name in _REGISTRY and _REGISTRY[name].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"experiment {name!r} is already registered by {_REGISTRY[name].fn.__module__}")
        _REGISTRY[name] = Entry(name=name, fn=fn, config=config, profiles=profiles, claims=tuple(claims),
                                sweep=sweep)
        return fn

    return register


def names(pattern: str = "*") -> list[str]:
    """Names in the sources matching a glob (`"vae/*"`); a pattern without wildcards matches substrings.

    Nothing is imported: the names come from `gvlab.manifest`.
    """
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return sorted(n for n in manifest.records() if fnmatch.fnmatch(n, pattern))


def entry(name: str) -> Entry:
    """The registered entry (importing only its module), or `UnknownExperimentError` suggesting close names.

    Raises:
        UnknownExperimentError: no module registers `name`.
        ImportFailedError: the module that registers `name` raised on import (the message names it and the error).
    """
    if name not in _REGISTRY:
        found = manifest.records()
        if name not in found:
            close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownExperimentError(f"unknown experiment {name!r}{hint} (see `gvlab list`)")
        module = found[name].module
        try:
            manifest.import_module(module)
        except Exception as e:  # an experiment's import error must name the module, not look like gvlab's own
            raise ImportFailedError(f"experiment {name!r}: importing {module} failed: {type(e).__name__}: {e}") from e
        if name not in _REGISTRY:
            raise ImportFailedError(f"experiment {name!r}: {module} was imported but did not register it")
    return _REGISTRY[name]


def get(name: str, profile: str = "full", overrides: Mapping[str, Any] | None = None, **kw_overrides) -> Experiment:
    """The experiment `name` with its config resolved for `profile` plus overrides.

    Overrides can be given as a dict with dotted keys or as keyword arguments for top-level fields:
    `get("vae/digits", profile="smoke", overrides={"train.steps": 300})`.
    """
    chosen = entry(name)
    cfg = chosen.resolve(profile, {**dict(overrides or {}), **kw_overrides})
    return Experiment(entry=chosen, config=cfg, profile=profile)
