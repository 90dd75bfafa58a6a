"""Configs: typed dotted overrides, clear errors, JSON round trip."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from gvlab import config as config_lib
from gvlab.config import TrainConfig
from gvlab.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    width: int = 8
    rate: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = "a"
    hidden: tuple[int, ...] = (32, 32)
    pair: tuple[int, float] = (1, 2.0)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    flag: bool = False
    optional: int | None = None
    inner: Inner = Inner()
    train: TrainConfig = TrainConfig()


def test_cli_strings_convert_to_declared_types():
    cfg = config_lib.override(Outer(), {
        "train.steps": "600", "train.lr": "3e-4", "hidden": "64,16", "pair": "[3, 0.25]", "likelihood": "gaussian",
        "flag": "true", "optional": "4", "inner.width": "1e2", "name": "b",
    })
    assert cfg.train.steps == 600 and cfg.train.lr == 3e-4 and cfg.hidden == (64, 16) and cfg.pair == (3, 0.25)
    assert cfg.likelihood == "gaussian" and cfg.flag is True and cfg.optional == 4 and cfg.inner.width == 100
    assert config_lib.override(cfg, {"optional": "none"}).optional is None
    assert Outer().train.steps == 1000  # the original is untouched (frozen)


def test_python_values_are_checked_too():
    assert config_lib.override(Outer(), {"train.lr": 1}).train.lr == 1.0  # int -> float is safe
    with pytest.raises(ConfigError, match="expected an int"):
        config_lib.override(Outer(), {"train.steps": 1.5})
    with pytest.raises(ConfigError, match="bool"):
        config_lib.override(Outer(), {"train.steps": True})


@pytest.mark.parametrize("overrides, message", [
    ({"train.stepz": "3"}, r"unknown config key 'train.stepz' \(did you mean train.steps"),
    ({"nope": "3"}, "valid keys: name, hidden, pair"),
    ({"inner.width.x": "3"}, "unknown config key 'inner.width.x'"),
    ({"train.steps": "abc"}, "train.steps: expected an int, got 'abc'"),
    ({"likelihood": "poisson"}, r"is not one of \['bernoulli', 'gaussian'\]"),
    ({"flag": "maybe"}, "expected a bool"),
    ({"pair": "1,2,3"}, "expected 2 items"),
    ({"train": "3"}, "train is a section"),
    ({"train.steps": "0"}, "train.steps must be >= 1"),
])
def test_bad_overrides_raise_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.override(Outer(), overrides)


def test_json_round_trip_and_diff():
    cfg = config_lib.override(Outer(), {"hidden": "5", "inner.rate": "0.1", "optional": "2"})
    back = config_lib.from_json(Outer, config_lib.to_json(cfg))
    assert back == cfg and isinstance(back.hidden, tuple)
    assert config_lib.diff(Outer(), cfg) == {"hidden": ((32, 32), (5,)), "inner.rate": (0.5, 0.1),
                                             "optional": (None, 2)}
    assert config_lib.diff(cfg, back) == {}
    with pytest.raises(ConfigError, match="unknown config key"):
        config_lib.from_dict(Outer, {**config_lib.to_dict(cfg), "extra": 1})


def test_valid_keys_are_dotted_leaves():
    keys = config_lib.valid_keys(Outer())
    assert "inner.width" in keys and "train.keep" in keys and "inner" not in keys
