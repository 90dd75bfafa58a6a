"""report.json and report.md for one experiment run, and the claims summary printed by the CLI."""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

from gvlab import config as config_lib
from gvlab import distributed
from gvlab.report.tables import claim_rows, held_text, markdown_table, text_table


def source_state() -> dict[str, Any]:
    """The commit of the code (`git`, short hash; "" outside a checkout) and whether tracked files differed from it
    (`git_dirty`; None when unknown). `execute` takes it when the run starts: a report written an hour later must
    name the code that ran, not the checkout's head at the end."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "--short", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git": sha or "", "git_dirty": None if changes is None else bool(changes)}


def environment(source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and hardware: a number means little without them. `source`: `source_state()` taken when the run
    started (taken now when None)."""
    import flax
    import optax

    from gvlab import __version__

    return {
        "gvlab": __version__,
        **(source if source is not None else source_state()),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
    }


def report_dict(outcome) -> dict[str, Any]:
    return {
        "experiment": outcome.name,
        "profile": outcome.profile,
        "passed": outcome.passed,
        "claims": outcome.claims,
        "results": outcome.results,
        "config": config_lib.to_dict(outcome.config),
        "figures": sorted(str(Path(p).relative_to(outcome.workdir)) for p in outcome.figures.values()
                          if isinstance(p, Path)),
        "timing": {"wall_s": outcome.wall_s,
                   **{f"fit/{k}/{t}": v for k, f in outcome.fits.items() for t, v in f.timing.items()}},
        "environment": environment(outcome.source),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_report(outcome) -> tuple[Path, Path]:
    """Write report.json and report.md into the outcome's workdir; returns their paths."""
    data = report_dict(outcome)
    json_path = outcome.workdir / "report.json"
    md_path = outcome.workdir / "report.md"
    if distributed.is_writer():  # one process of a multi-process run writes the report
        json_path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
        md_path.write_text(markdown_report(data))
    return json_path, md_path


def markdown_report(data: dict[str, Any]) -> str:
    lines = [
        f"# {data['experiment']} ({data['profile']} profile)",
        "",
        f"{held_text(data['claims'])} claims hold. Wall time {data['timing']['wall_s']:.1f} s on "
        f"{data['environment']['backend']} ({len(data['environment']['devices'])} device(s)), "
        f"jax {data['environment']['jax']}, gvlab {data['environment']['gvlab']} {data['environment']['git']}.",
        "",
        "## Claims",
        "",
        markdown_table(claim_rows(data["claims"])),
        "",
    ]
    sources = [c for c in data["claims"] if c.get("source")]
    if sources:
        lines += ["Sources: " + "; ".join(f"{c['metric']}: {c['source']}" for c in sources), ""]
    lines += ["## Results", "", "| metric | value |", "|---|---|"]
    for k, v in data["results"].items():
        lines.append(f"| {k} | {_short(v)} |")
    if data["figures"]:
        lines += ["", "## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in data["figures"]]
    lines += ["", "## Config", "", "```json", json.dumps(data["config"], indent=2), "```", ""]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, list):
        flat = value if all(not isinstance(v, list) for v in value) else None
        if flat is not None and len(flat) <= 8:
            return "[" + ", ".join(_number(v, ".4g") for v in flat) + "]"
        return f"array of {len(value)}"
    return _number(value, ".6g")


def _number(value: Any, spec: str) -> str:
    """A number in `spec` format; anything else (a string, a bool, None) as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def claims_text(outcome) -> str:
    """The claims table printed by `gvlab run` and `gvlab reproduce`."""
    head = f"{outcome.name} [{outcome.profile}]: {held_text(outcome.claims)} claims hold"
    if not outcome.claims:
        return head + " (no claims registered)"
    return head + "\n" + text_table(claim_rows(outcome.claims))
