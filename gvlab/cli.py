"""The `gvlab` command: list, show, run, resume and reproduce registered experiments.

    gvlab list [PATTERN]
    gvlab show NAME [--profile P] [--set k=v ...]
    gvlab run NAME --workdir DIR [--profile P] [--set k=v ...] [--strict]
    gvlab resume WORKDIR [--set k=v ...] [--strict]
    gvlab reproduce NAME|--all [--profile P] [--workdir DIR] [--set k=v ...] [--strict]
    gvlab sweep NAME --list | --index I [--profile P] [--workdir DIR] [--set k=v ...]
    gvlab report [RUNS_DIR] [--format md|html] [--output FILE]

run, resume, reproduce and sweep take `--distributed`: one run over several processes (hosts) that a scheduler
started, joined through `jax.distributed.initialize()` (`gvlab.distributed`).

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


def _cpu_devices(args) -> None:
    """`--cpu-devices N` (or GVLAB_CPU_DEVICES): the CPU shown as N devices, before JAX starts."""
    count = getattr(args, "cpu_devices", None) or os.environ.get("GVLAB_CPU_DEVICES")
    if count:
        from gvlab.errors import ConfigError
        from gvlab.train import parallel

        try:
            parallel.use_cpu_devices(int(count))
        except ValueError:
            raise ConfigError(f"--cpu-devices / GVLAB_CPU_DEVICES must be an integer, got {count!r}") from None


def _join_processes(args) -> None:
    """`--distributed`: join the run's other processes before JAX starts; only process 0 prints and writes."""
    from gvlab import distributed

    if not distributed.requested(getattr(args, "distributed", False)):
        return
    distributed.initialize()
    if not distributed.is_writer():
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # the outcome and tables once, from process 0  # noqa: SIM115


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
    from gvlab import manifest, registry

    found = registry.names(args.pattern or "*")
    records, broken = manifest.scan()
    errors = {b.module: b.error for b in broken}
    if args.check:  # import every module on its own: one that raises is listed with its error
        errors.update(manifest.check_imports())
    if not found and not errors:
        print(f"no experiment matches {args.pattern!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    by_name = {r.name: r for r in records}
    width = max([len(n) for n in found] + [10])
    for name in found:
        record = by_name[name]
        claims = f"{record.claims} claims" if record.claims >= 0 else "claims"
        sweep = ", sweep" if record.sweep else ""
        status = f"  BROKEN: {errors[record.module]}" if record.module in errors else ""
        print(f"{name.ljust(width)}  {record.summary}  [{claims}{sweep}]{status}")
    registered = {r.module for r in records}
    for module, error in sorted(errors.items()):
        if module not in registered:
            print(f"{module.ljust(width)}  BROKEN: {error}")
    return EXIT_FAILED if args.check and errors else EXIT_OK


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


def cmd_sweep(args) -> int:
    from gvlab import registry
    from gvlab.run import execute_point

    overrides = _parse_sets(args.set)
    experiment = registry.get(args.name, profile=args.profile, overrides=overrides)
    if experiment.entry.sweep is None:
        print(f"error: {args.name} declares no sweep; run it with `gvlab reproduce {args.name}`", file=sys.stderr)
        return EXIT_BAD_INPUT
    workdir = Path(args.workdir) if args.workdir else _default_workdir(experiment.name, args.profile, overrides)
    points = experiment.entry.sweep.points(experiment.config)
    if args.index is None:  # --list
        for index, point in enumerate(points):
            done = (workdir / "points" / str(index) / "point.json").exists()
            values = " ".join(f"{k}={v}" for k, v in point.items())
            print(f"{index:4d}  {values}  [{'finished' if done else 'to run'}]")
        print(f"{len(points)} runs; workdir {workdir}; run one with `gvlab sweep {args.name} --index I"
              f"{' --profile ' + args.profile if args.profile != 'full' else ''}`, gather with `gvlab reproduce "
              f"{args.name}`", file=sys.stderr)
        return EXIT_OK
    record = execute_point(experiment, args.index, workdir=workdir, progress=not args.quiet)
    print(json.dumps({"index": record["index"], "point": record["point"],
                      "workdir": str(workdir / "points" / str(args.index))}))
    return EXIT_OK


def cmd_report(args) -> int:
    from gvlab.report import index

    reports = index.collect(Path(args.runs))
    if not reports:
        print(f"error: no report.json under {args.runs}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format == "html":
        output = Path(args.output) if args.output else Path(args.runs) / "index.html"
        index.write_html(reports, output)
        print(f"wrote {output}")
    else:
        text = index.markdown(reports)
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------------


def _quiet_closed_event_loops() -> None:
    """Orbax's background threads report "Event loop is closed" through `sys.unraisablehook` when a run stops on an
    unreadable checkpoint; that noise would print before gvlab's own one-line error. Everything else still shows."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _interrupt_message(error: KeyboardInterrupt) -> str:
    """What an interruption left on disk, truthfully."""
    from gvlab.errors import Interrupted

    if isinstance(error, Interrupted):
        if error.workdir is None:
            return "interrupted; this fit keeps no checkpoints (no workdir), nothing was saved"
        if error.checkpoint_step is None:
            return f"interrupted before the first step finished: nothing was checkpointed in {error.workdir}"
        return (f"interrupted; the state at step {error.checkpoint_step} is checkpointed in {error.workdir}; "
                "rerun the same command to resume")
    return ("interrupted before training started: nothing new was checkpointed (earlier checkpoints, if any, are "
            "untouched); rerun the same command to start or resume")


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
        distributed_flag(p)

    def distributed_flag(p):
        p.add_argument("--cpu-devices", type=int, metavar="N",
                       help="on a CPU, split each batch over N CPU devices (one per core: XLA:CPU before jaxlib 0.11 "
                            "runs a convolution on one thread); also GVLAB_CPU_DEVICES=N")
        p.add_argument("--distributed", action="store_true",
                       help="one run over several processes/hosts: call jax.distributed.initialize() first "
                            "(coordinator from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID or the "
                            "cluster: srun, mpirun, TPU pod); process 0 writes the files; also GVLAB_DISTRIBUTED=1")

    p = sub.add_parser("list", help="list experiments (from the sources: nothing is imported)")
    p.add_argument("pattern", nargs="?", help="glob, or a substring (e.g. vae)")
    p.add_argument("--check", action="store_true",
                   help="also import every experiment module on its own and name those that fail (exit 1 if any)")
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
    distributed_flag(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("reproduce", help="run, check claims, write report.md/report.json and figures")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every registered experiment")
    p.add_argument("--workdir", help="default: runs/<name>/<profile>")
    common(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sweep", help="list the runs of an experiment's declared sweep, or run one of them")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="print every run with its index and values")
    which.add_argument("--index", type=int, help="run this one (e.g. $SLURM_ARRAY_TASK_ID) in its own folder")
    p.add_argument("--workdir", help="the experiment's workdir (default: runs/<name>/<profile>); run i lives in "
                                     "<workdir>/points/i, and `gvlab reproduce` with the same workdir gathers them")
    common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="the results table of every report.json under a folder (md or html)")
    p.add_argument("runs", nargs="?", default="results", help="folder searched for report.json (default results)")
    p.add_argument("--format", choices=["md", "html"], default="md")
    p.add_argument("--output", help="write here (html default: RUNS/index.html; md default: stdout)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; never try to open a window
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from gvlab import signals as received

    def on_sigterm(signum, frame):  # schedulers pre-empt with SIGTERM: checkpoint and stop like Ctrl-C
        received.note(signum)
        raise KeyboardInterrupt

    signals: list[int] = []

    def on_sigint(signum, frame):  # remembered: a C extension interrupted while loading raises ImportError instead
        signals.append(signum)
        received.note(signum)  # and again before training, should a library swallow the KeyboardInterrupt
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    _quiet_closed_event_loops()
    from gvlab.errors import GvlabError, NonFiniteError

    try:
        if args.command not in ("list", "show", "report"):  # those compile nothing: keep them free of JAX
            _cpu_devices(args)
            _join_processes(args)
            _compile_cache(args)
        return args.func(args)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except GvlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        received.clear()
        print(f"\n{_interrupt_message(e)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        if signals:  # the interruption surfaced as another error (an import cut short)
            print(f"\n{_interrupt_message(KeyboardInterrupt())}", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise


if __name__ == "__main__":
    sys.exit(main())
