"""Smoke profile of every experiment outside fbm/*: run, report, restore (tests/smoke.py)."""

from __future__ import annotations

import pytest

import gvlab
from tests.smoke import check_smoke_run_and_restore, fbm_names, other_names


@pytest.mark.parametrize("name", other_names())
def test_runs_in_smoke_profile_and_restores_its_checkpoint(name, tmp_path):
    check_smoke_run_and_restore(name, tmp_path)


def test_the_two_smoke_files_cover_every_experiment():
    assert sorted(fbm_names() + other_names()) == sorted(gvlab.names())
