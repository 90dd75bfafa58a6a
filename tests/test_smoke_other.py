"""Smoke profile of every other experiment: run, report, restore (tests/smoke.py)."""

from __future__ import annotations

import pytest

import gvlab
from tests.smoke import GROUPS, check_smoke_run_and_restore, names_in


@pytest.mark.parametrize("name", names_in("other"))
def test_runs_in_smoke_profile_and_restores_its_checkpoint(name, tmp_path):
    check_smoke_run_and_restore(name, tmp_path)


def test_the_smoke_files_cover_every_experiment_once():
    names = [name for group in (*GROUPS, "other") for name in names_in(group)]
    assert sorted(names) == sorted(gvlab.names())
