"""The smoke-profile check every registered experiment passes, shared by tests/test_smoke_*.py.

The experiments are split over test files by name prefix (`fbm/`; `collapse/` and `representations/`; `inverse/`;
`instability/`, `vi/` and `continual/`; `unlearning/`, `adversarial/`, `ib/` and `bnn/`; `discrete/`, `inr/`, `mi/` and `compression/`;
`motion/`, `robotics/`, `speech/` and `ehr/`; the rest), each a few minutes of one worker, so that `pytest -n 2 --dist loadfile` spreads them over both workers;
together the files cover every registered name (checked).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import gvlab
from gvlab.data.external import DataError


GROUPS = {"fbm": ("fbm/",), "collapse": ("collapse/", "representations/"), "inverse": ("inverse/",),
          "edges": ("instability/", "vi/", "continual/"), "robust": ("unlearning/", "adversarial/", "ib/", "bnn/"),
          "structured": ("discrete/", "inr/", "mi/", "compression/"),
          "sequences": ("motion/", "robotics/", "speech/", "ehr/")}


def names_in(group: str) -> list[str]:
    """Registered names of one group; `"other"` is every name no group claims."""
    if group == "other":
        claimed = tuple(p for prefixes in GROUPS.values() for p in prefixes)
        return [n for n in gvlab.names() if not n.startswith(claimed)]
    return [n for n in gvlab.names() if n.startswith(GROUPS[group])]


def check_smoke_run_and_restore(name: str, tmp_path) -> None:
    """Run `name` in smoke profile: finite claim values, report and figures, checkpoints; a second run restores
    every fit's final checkpoint, takes no step and gives identical results."""
    try:
        first = gvlab.get(name, profile="smoke").run(workdir=tmp_path, progress=False)
    except DataError as missing:  # external data or a system tool (espeak-ng) this machine lacks: say so, skip
        pytest.skip(f"{name}: {missing}")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["experiment"] == name and len(report["claims"]) == len(first.claims)
    for claim in report["claims"]:  # finite, unless the experiment records why it is undefined (e.g. BD-rate)
        if claim["measured"] is None or not math.isfinite(claim["measured"]):
            reasons = report["results"].get(f"{claim['metric']}_undefined")
            assert reasons and all(reasons), claim
    assert (tmp_path / "report.md").exists() and report["figures"]
    for figure in report["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000
    assert all((fit.workdir / "ckpt").exists() for fit in first.fits.values())
    second = gvlab.get(name, profile="smoke").run(workdir=tmp_path, progress=False)
    assert all(f.timing["start_step"] == f.history.rows[-1]["step"] for f in second.fits.values())
    np.testing.assert_equal(second.results, first.results)  # exact, with NaN equal to NaN (undefined values)
