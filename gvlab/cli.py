"""The `gvlab` command: list, show, run, resume and reproduce registered experiments.

    gvlab list [PATTERN]
    gvlab show NAME [--profile P] [--set k=v ...]
    gvlab run NAME --workdir DIR [--profile P] [--set k=v ...] [--strict]
    gvlab resume WORKDIR [--set k=v ...] [--strict]
    gvlab reproduce NAME|--all [--profile P] [--workdir DIR] [--set k=v ...] [--strict]

Exit codes: 0 when the experiment ran (whatever its claims say; `--strict` makes a failed claim exit 1),
1 when training failed (non-finite loss) or an experiment crashed, 2 for bad input (unknown name or key, a value
of the wrong type, a workdir of another experiment, unreadable checkpoints), 130 when interrupted (the state at
the interruption is checkpointed; rerun the same command to resume).

JAX's persistent compilation cache is on by default in `$XDG_CACHE_HOME/gvlab/jax` (`~/.cache/gvlab/jax`):
a second run of the same experiment skips most compilation. `--no-compile-cache` or `GVLAB_COMPILE_CACHE=0`
turns it off; `GVLAB_COMPILE_CACHE=/path` moves it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parse_sets(pairs: list[list[str]] | None) -> dict[str, str]:
    from gvlab.errors import ConfigError

    out: dict[str, str] = {}
    for item in [p for group in (pairs or []) for p in group]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _compile_cache(args) -> None:
    from gvlab import compile_cache

    setting = os.environ.get("GVLAB_COMPILE_CACHE", "")
    if args.no_compile_cache or setting == "0":
        return
    compile_cache.enable(setting or None)


def _default_workdir(name: str, profile: str, overrides: dict[str, str]) -> Path:
    """runs/<name>/<profile>, plus a short hash of the overrides so different settings never share a workdir."""
    suffix = ""
    if overrides:
        suffix = "-" + hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / name / f"{profile}{suffix}"


def _print_outcome(outcome) -> None:
    from gvlab.report import claims_text

    print(claims_text(outcome))
    if outcome.workdir is not None:
        print(f"report: {outcome.workdir / 'report.md'}")


def _strict_code(outcomes, strict: bool) -> int:
    return EXIT_FAILED if strict and not all(o.passed for o in outcomes) else EXIT_OK


# ------------------------------------------------------------------------------------------------------------------
# Commands


def cmd_list(args) -> int:
    from gvlab import registry

    found = registry.names(args.pattern or "*")
    if not found:
        print(f"no experiment matches {args.pattern!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    width = max(len(n) for n in found)
    for name in found:
        entry = registry.entry(name)
        print(f"{name.ljust(width)}  {entry.summary}  [{len(entry.claims)} claims]")
    return EXIT_OK


def cmd_show(args) -> int:
    from gvlab import config as config_lib
    from gvlab import registry

    experiment = registry.get(args.name, profile=args.profile, overrides=_parse_sets(args.set))
    print(json.dumps({"experiment": experiment.name, "profile": experiment.profile,
                      "config": config_lib.to_dict(experiment.config),
                      "claims": [f"{c.metric} {c.op} {c.threshold} ({c.reduce}): {c.statement}"
                                 for c in experiment.claims]}, indent=2))
    return EXIT_OK


def cmd_run(args) -> int:
    from gvlab import registry

    experiment = registry.get(args.name, profile=args.profile, overrides=_parse_sets(args.set))
    outcome = experiment.run(workdir=args.workdir, progress=not args.quiet)
    _print_outcome(outcome)
    return _strict_code([outcome], args.strict)


def cmd_resume(args) -> int:
    from gvlab import config as config_lib
    from gvlab import registry
    from gvlab.run import read_workdir

    record = read_workdir(Path(args.workdir))
    entry = registry.entry(record["experiment"])
    cfg = config_lib.from_dict(type(entry.config), record["config"])
    cfg = config_lib.override(cfg, _parse_sets(args.set))
    experiment = registry.Experiment(entry=entry, config=cfg, profile=record.get("profile", "full"))
    outcome = experiment.run(workdir=args.workdir, progress=not args.quiet)
    _print_outcome(outcome)
    return _strict_code([outcome], args.strict)


def cmd_reproduce(args) -> int:
    from gvlab import registry
    from gvlab.report.tables import text_table

    if bool(args.all) == bool(args.name):
        print("error: give one experiment NAME or --all", file=sys.stderr)
        return EXIT_BAD_INPUT
    overrides = _parse_sets(args.set)
    names = registry.names("*") if args.all else [args.name]
    experiments = [registry.get(n, profile=args.profile, overrides=overrides) for n in names]  # fail fast
    outcomes, crashed = [], []
    for experiment in experiments:
        if args.workdir:
            workdir = Path(args.workdir) / experiment.name if args.all else Path(args.workdir)
        else:
            workdir = _default_workdir(experiment.name, args.profile, overrides)
        try:
            outcome = experiment.run(workdir=workdir, progress=not args.quiet)
        except Exception as e:  # --all keeps going; the summary names what crashed
            if not args.all:
                raise
            traceback.print_exc()
            crashed.append((experiment.name, f"{type(e).__name__}: {e}"))
            continue
        outcomes.append(outcome)
        _print_outcome(outcome)
        print()
    if args.all:
        rows = [[o.name, f"{sum(c['passed'] for c in o.claims)}/{len(o.claims)}", f"{o.wall_s:.0f} s",
                 str(o.workdir / "report.md")] for o in outcomes]
        rows += [[name, "crashed", "-", reason] for name, reason in crashed]
        print(text_table(rows, header=["experiment", "claims hold", "time", "report"], max_width=100))
    if crashed:
        return EXIT_FAILED
    return _strict_code(outcomes, args.strict)


# ------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gvlab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-compile-cache", action="store_true", help="do not use JAX's persistent cache")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, workdir_required=False, profile_default="full"):
        p.add_argument("--set", action="append", nargs="+", metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.steps=600 model.latent_dim=4")
        p.add_argument("--profile", choices=["smoke", "quick", "full"], default=profile_default,
                       help=f"smoke (seconds), quick (about a minute) or full (closest to the paper); "
                            f"default {profile_default}")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
        p.add_argument("--strict", action="store_true", help="exit 1 when a claim fails")

    p = sub.add_parser("list", help="list experiments")
    p.add_argument("pattern", nargs="?", help="glob, or a substring (e.g. vae)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="print the resolved config and claims; nothing runs")
    p.add_argument("name")
    p.add_argument("--set", action="append", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--profile", choices=["smoke", "quick", "full"], default="full")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run an experiment in a workdir (resumes if it holds checkpoints)")
    p.add_argument("name")
    p.add_argument("--workdir", required=True)
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue the run in WORKDIR from its config.json and checkpoints")
    p.add_argument("workdir")
    p.add_argument("--set", action="append", nargs="+", metavar="KEY=VALUE",
                   help="only step counts and intervals may change, e.g. --set train.steps=5000")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--strict", action="store_true")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("reproduce", help="run, check claims, write report.md/report.json and figures")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every registered experiment")
    p.add_argument("--workdir", help="default: runs/<name>/<profile>")
    common(p)
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; never try to open a window
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    def on_sigterm(signum, frame):  # schedulers pre-empt with SIGTERM: checkpoint and stop like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    from gvlab.errors import GvlabError, NonFiniteError

    _compile_cache(args)
    try:
        return args.func(args)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except GvlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted; the last state was checkpointed; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
