"""Smoke profile of the sequence, agent and clinical experiments (motion/*, robotics/*, speech/*, ehr/*): run,
report, restore (tests/smoke.py)."""

from __future__ import annotations

import pytest

from tests.smoke import check_smoke_run_and_restore, names_in


@pytest.mark.parametrize("name", names_in("sequences"))
def test_runs_in_smoke_profile_and_restores_its_checkpoint(name, tmp_path):
    check_smoke_run_and_restore(name, tmp_path)
