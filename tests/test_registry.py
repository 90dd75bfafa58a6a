"""Registry and experiments: completeness, claims, workdir rules (the smoke runs: tests/test_smoke_*.py)."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest

import gvlab
from gvlab import Claim, TrainConfig, registry
from gvlab.errors import ConfigError, UnknownExperimentError, WorkdirError


def test_every_experiment_has_claims_profiles_and_a_documented_command():
    for name in gvlab.names():
        entry = registry.entry(name)
        assert entry.claims, f"{name} registers no claims"
        assert entry.profiles["smoke"], f"{name} has no smoke profile"
        doc = importlib.import_module(entry.fn.__module__).__doc__
        assert f"gvlab reproduce {name}" in doc, f"{name}: module docstring must give its command"


def test_unknown_names_and_profiles_are_clear():
    with pytest.raises(UnknownExperimentError, match="did you mean vae/digits"):
        gvlab.get("vae/digit")
    with pytest.raises(ConfigError, match="unknown profile"):
        gvlab.get("vae/digits", profile="medium")
    assert gvlab.names("vae/*") == ["vae/digits"]  # a glob
    substring = gvlab.names("vae")  # no wildcard: every name containing "vae" (collapse/linear_cvae too)
    assert "vae/digits" in substring and all("vae" in n for n in substring) and len(substring) > 1
    assert gvlab.names("no-such-thing") == []


def test_registration_is_checked_at_import():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class NoTrain:
        x: int = 1

    with pytest.raises(ValueError, match="train"):
        registry.experiment("test/no_train", config=NoTrain(), smoke={})

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WithTrain:
        train: TrainConfig = TrainConfig()

    with pytest.raises(ValueError, match="profile 'smoke'"):
        registry.experiment("test/bad_smoke", config=WithTrain(), smoke={"train.stepz": 1})
    registry.entry("vae/digits")  # imports the module that registers it
    register = registry.experiment("vae/digits", config=WithTrain(), smoke={})
    with pytest.raises(ValueError, match="already registered"):
        register(lambda cfg, run: {})


def test_claims_read_means_or_worst_seed():
    above = Claim(statement="s", metric="m", op=">", threshold=1.0)
    assert above.check({"m": [0.5, 2.0, 2.0]})["passed"]  # mean 1.5
    worst = Claim(statement="s", metric="m", op=">", threshold=1.0, reduce="all")
    record = worst.check({"m": [0.5, 2.0, 2.0]})
    assert not record["passed"] and record["measured"] == 0.5 and record["n"] == 3
    below = Claim(statement="s", metric="m", op="<=", threshold=0.0, reduce="all")
    assert below.check({"m": [-1.0, -0.5]})["measured"] == -0.5
    assert not above.check({"other": 3.0})["passed"]
    assert above.check({"other": 3.0})["note"].startswith("metric 'm'")
    assert not above.check({"m": [float("nan"), 5.0]})["passed"]
    with pytest.raises(ValueError):
        Claim(statement="s", metric="m", op="=>", threshold=0.0)
    # A retired claim is still measured, with its reason; the run's verdict ignores it (a live failure counts).
    from gvlab.run import Outcome

    retired = Claim(statement="s", metric="m", op=">", threshold=9.0, retired="unreachable: ceiling 3").check(
        {"m": [1.0]})
    assert not retired["passed"] and retired["retired"] == "unreachable: ceiling 3" and retired["measured"] == 1.0
    outcome = Outcome("x", "smoke", None, {}, [retired, above.check({"m": [2.0]})], {}, {}, None, 0.0)
    assert outcome.passed
    assert not Outcome("x", "smoke", None, {}, [retired, above.check({"m": [0.0]})], {}, {}, None, 0.0).passed


def test_workdir_belongs_to_one_experiment_and_config(tmp_path):
    from gvlab.run import prepare_workdir

    cfg = registry.entry("vae/digits").resolve("smoke")
    prepare_workdir(tmp_path, "vae/digits", "smoke", cfg)
    longer = registry.entry("vae/digits").resolve("smoke", {"train.steps": 50, "train.log_every": 5})
    prepare_workdir(tmp_path, "vae/digits", "smoke", longer)  # step counts and intervals may change
    assert json.loads((tmp_path / "config.json").read_text())["config"]["train"]["steps"] == 50
    (tmp_path / "ckpt" / "20").mkdir(parents=True)  # progress: from now on the config is binding
    with pytest.raises(WorkdirError, match="model.latent_dim: 4 -> 5"):
        prepare_workdir(tmp_path, "vae/digits", "smoke",
                        registry.entry("vae/digits").resolve("smoke", {"model.latent_dim": 5}))
    with pytest.raises(WorkdirError, match="holds a run of experiment 'vae/digits', not 'other/exp'"):
        prepare_workdir(tmp_path, "other/exp", "smoke", cfg)
