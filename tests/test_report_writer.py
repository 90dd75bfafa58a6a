"""report.json names the code that ran: the commit taken when the run started, and whether the checkout differed."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from gvlab.report import writer
from gvlab.run import Outcome

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class _Config:
    x: int = 1


def _outcome(source):
    return Outcome(name="toy/x", profile="smoke", config=_Config(), results={}, claims=[], fits={}, figures={},
                   workdir=None, wall_s=0.0, source=source)


def test_source_state_is_the_checkout_head():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    state = writer.source_state()
    assert state["git"] == head.stdout.strip() and isinstance(state["git_dirty"], bool)


def test_report_keeps_the_commit_taken_at_the_start():
    started = {"git": "0000000", "git_dirty": False}  # a commit that is not the head now
    assert writer.report_dict(_outcome(started))["environment"]["git"] == "0000000"
    # negative control: without a recorded start the report reads the checkout as it is when written
    assert writer.report_dict(_outcome(None))["environment"]["git"] == writer.source_state()["git"]
