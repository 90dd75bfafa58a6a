"""Frozen, typed configs with dotted overrides and a JSON round trip.

Every experiment config is a frozen keyword-only dataclass that nests a `train: TrainConfig`, so
`--set train.steps=600` works everywhere. Overrides are converted to the declared field type; unknown keys and
values that do not convert raise `ConfigError` naming the valid keys or the expected type.

Examples:
    >>> cfg = TrainConfig()
    >>> override(cfg, {"steps": "600", "lr": "3e-4"}).steps
    600
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from typing import Any, Literal, Mapping

from gvlab.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of one `fit`, shared by every experiment.

    Attributes:
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: examples per step (over all devices; must divide evenly across them).
        lr: learning rate: `fit` trains with Adam at `lr` when `Spec.optimizer` is None; an experiment that builds
            its own optimiser reads it there (`fit` warns when an injected learning rate disagrees).
        seed: seed of the first run; `num_seeds` runs use seed, seed+1, ...
        num_seeds: independent runs vmapped in one compiled program.
        log_every: steps between rows of `metrics.jsonl` and progress updates.
        eval_every: steps between evaluations with fixed keys (0: only at the end).
        ckpt_every: steps between checkpoints (0: only at the end).
        keep: checkpoints kept on disk (older ones are removed by the checkpoint manager).
        members: how the R runs of one program execute: "vmap" (batched into one computation) or
            "sequential" (looped over inside the program, each run the exact computation of a single fit). The
            results agree up to float rounding; see `gvlab.train.members`. Measured on 2 CPU cores
            (benchmarks/bench_fit.py, bench_transformer.py): "vmap" pays for small models whose one run cannot
            fill the cores (8 digits-VAE seeds 1.1-1.4x faster than 8 fits), "sequential" for a model whose run
            already does (the Transformer's 5-LR sweep 1.5-1.7x faster than vmapped).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    num_seeds: int = 1
    log_every: int = 100
    eval_every: int = 0
    ckpt_every: int = 0
    keep: int = 2
    members: str = "vmap"

    def __post_init__(self):
        for name in ("steps", "batch_size", "num_seeds", "log_every", "keep"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0 means only at the end), got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.members not in ("vmap", "sequential"):
            raise ConfigError(f"train.members must be 'vmap' or 'sequential', got {self.members!r}")


# ----------------------------------------------------------------------------------------------------------------
# Introspection


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """All leaf fields as `{"a.b": value}`, in declaration order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def valid_keys(cfg: Any) -> list[str]:
    """The dotted keys that `override` accepts."""
    return list(flatten(cfg))


def diff(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs of the same class: `{key: (a_value, b_value)}`."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# ----------------------------------------------------------------------------------------------------------------
# Type conversion


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert `value` (a CLI string or a Python value) to the declared `annotation`, or raise `ConfigError`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot convert {value!r} to {_type_name(annotation)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin is tuple:
        items = _split_sequence(value, key)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(items)} ({value!r})")
        return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an int, got the bool {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:  # "1e3" is a common way to write 1000
                    as_float = float(value)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"{key}: expected an int, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got the bool {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a float, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return from_dict(annotation, value, prefix=f"{key}.")
        raise ConfigError(f"{key} is a section; set its fields instead ({key}.<field>=...)")
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _split_sequence(value: Any, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            text = text[1:-1]
        return [v.strip() for v in text.split(",") if v.strip()]
    raise ConfigError(f"{key}: expected a sequence, got {value!r}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


# ----------------------------------------------------------------------------------------------------------------
# Overrides and JSON


def override(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted `overrides` applied, each converted to its declared type.

    Raises:
        ConfigError: for an unknown key (the message lists the valid keys) or a value of the wrong type.
    """
    return _override(cfg, overrides, root=cfg, prefix="")


def _override(cfg: Any, overrides: Mapping[str, Any], root: Any, prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(cfg)}
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if head not in names or (rest and not dataclasses.is_dataclass(getattr(cfg, head))):
            raise ConfigError(_unknown_key_message(prefix + dotted, valid_keys(root)))
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = convert(value, _field_types(type(cfg))[head], prefix + head)
    for head, sub in nested.items():
        section = direct.get(head, getattr(cfg, head))
        direct[head] = _override(section, sub, root, prefix + head + ".")
    try:
        return dataclasses.replace(cfg, **direct)
    except (TypeError, ValueError) as e:  # a config's own __post_init__ validation, named by its section
        section = prefix.rstrip(".")
        message = str(e) if not section or str(e).startswith(section) else f"{section}: {e}"
        raise ConfigError(message) from None


def check_sizes(cfg: Any, *names: str) -> None:
    """Raise `ConfigError` unless every named field is a positive int (or a tuple of them; empty is allowed).

    Called by model configs' `__post_init__`, so that `--set model.latent_dim=0` is a config error at once rather
    than a division by zero deep inside a layer's initialiser.
    """
    for name in names:
        value = getattr(cfg, name)
        entries = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in entries):
            what = "every entry of " + name if isinstance(value, tuple) else name
            raise ConfigError(f"{what} must be a positive integer size, got {value!r}")


def _unknown_key_message(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"unknown config key {key!r}{hint}; valid keys: {', '.join(valid)}"


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists), ready for JSON."""
    return json.loads(to_json(cfg))


def to_json(cfg: Any, indent: int | None = 2) -> str:
    """JSON text of a config; `from_json(type(cfg), to_json(cfg)) == cfg`."""
    return json.dumps(dataclasses.asdict(cfg), indent=indent, sort_keys=False)


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build `cls` from a nested dict, converting and checking every value; unknown keys raise."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + u for u in unknown]}; valid: {[prefix + n for n in names]}")
    kwargs = {name: convert(data[name], hints[name], prefix + name) for name in names if name in data}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def from_json(cls: type, text: str) -> Any:
    """Inverse of `to_json`."""
    return from_dict(cls, json.loads(text))
