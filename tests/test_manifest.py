"""The lazy manifest, broken modules, sweeps addressed by index, profiles as functions (a throwaway package)."""

from __future__ import annotations

import json
import textwrap

import pytest

from gvlab import cli, manifest, registry

GOOD = '''
"""Toy experiments for the manifest tests. Command: gvlab reproduce toy/sum --profile smoke"""
import dataclasses

from gvlab import Claim, TrainConfig, experiment
from gvlab.registry import Sweep


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    values: tuple[float, ...] = (1.0, 2.0, 3.0)
    scale: float = 2.0
    offset: float = 0.0
    train: TrainConfig = TrainConfig(steps=1)


CALLS = []


def one_point(cfg, run, point, index):
    CALLS.append(index)
    return {"value": point["value"] * cfg.scale + index}


def points(cfg):
    return [{"value": v} for v in cfg.values]


@experiment("toy/sum", config=Config(), smoke={"scale": 3.0},
            quick=lambda base: {"offset": base.scale * 10},  # a profile computed from the base config
            claims=[Claim(statement="the gathered sum is positive", metric="total", op=">", threshold=0.0)],
            sweep=Sweep(points=points, run=one_point))
def toy_sum(cfg, run):
    """Sum a toy sweep's point values."""
    records = run.gather()
    return {"total": sum(r["results"]["value"] for r in records) + cfg.offset}
'''

BROKEN = '''
"""A module that raises on import."""
from gvlab import Claim, TrainConfig, experiment

raise RuntimeError("this module is broken on purpose")


@experiment("toy/broken", config=None, smoke={}, claims=[])
def broken(cfg, run):
    """Never registered."""
'''


@pytest.fixture()
def toy_package(tmp_path, monkeypatch):
    name = f"toy_experiments_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / name
    (root / "toy").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "toy" / "__init__.py").write_text("")
    (root / "toy" / "good.py").write_text(textwrap.dedent(GOOD))
    (root / "toy" / "broken.py").write_text(textwrap.dedent(BROKEN))
    (root / "toy" / "syntax.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(manifest, "PACKAGE", name)
    yield name
    for key in ("toy/sum", "toy/broken"):
        registry._REGISTRY.pop(key, None)


def test_manifest_reads_registrations_without_importing(toy_package):
    import sys

    records, broken = manifest.scan()
    assert [r.name for r in records] == ["toy/broken", "toy/sum"]
    toy = manifest.records()["toy/sum"]
    assert toy.claims == 1 and toy.sweep and toy.summary == "Sum a toy sweep's point values."
    assert [b.module for b in broken] == [f"{toy_package}.toy.syntax"]
    assert f"{toy_package}.toy.good" not in sys.modules  # nothing was imported


def test_a_broken_module_does_not_take_the_others_down(toy_package, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy/sum" in out and "SyntaxError" in out
    assert cli.main(["list", "--check"]) == 1  # --check imports each module on its own
    out = capsys.readouterr().out
    assert "toy/sum" in out and "BROKEN: RuntimeError: this module is broken on purpose" in out
    with pytest.raises(registry.ImportFailedError, match="importing .*broken failed: RuntimeError"):
        registry.entry("toy/broken")
    assert registry.entry("toy/sum").name == "toy/sum"  # still importable after the broken one


def test_sweep_by_index_then_gather_equals_a_straight_reproduce(toy_package, tmp_path, capsys):
    import importlib

    good = importlib.import_module(f"{toy_package}.toy.good")
    swept, straight = tmp_path / "swept", tmp_path / "straight"
    assert cli.main(["sweep", "toy/sum", "--list", "--workdir", str(swept), "--profile", "smoke"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split() == ["1", "value=2.0", "[to", "run]"]
    good.CALLS.clear()
    assert cli.main(["sweep", "toy/sum", "--index", "1", "--workdir", str(swept), "--profile", "smoke",
                     "--quiet"]) == 0
    assert good.CALLS == [1]
    capsys.readouterr()
    assert cli.main(["reproduce", "toy/sum", "--workdir", str(swept), "--profile", "smoke", "--quiet"]) == 0
    assert good.CALLS == [1, 0, 2]  # point 1 was gathered, not rerun
    assert cli.main(["reproduce", "toy/sum", "--workdir", str(straight), "--profile", "smoke", "--quiet"]) == 0
    a = json.loads((swept / "report.json").read_text())["results"]
    b = json.loads((straight / "report.json").read_text())["results"]
    assert a == b == {"total": 3.0 * (1 + 2 + 3) + (0 + 1 + 2)}
    assert cli.main(["sweep", "toy/sum", "--index", "7", "--workdir", str(swept), "--profile", "smoke"]) == 2


def test_profiles_may_be_functions_of_the_base_config(toy_package):
    assert registry.get("toy/sum", profile="quick").config.offset == 20.0
    assert registry.get("toy/sum", profile="quick", overrides={"scale": 5.0}).config.offset == 20.0  # base's
    assert registry.get("toy/sum", profile="smoke").config.scale == 3.0


def test_every_module_of_the_real_package_registers_what_the_manifest_says():
    records, broken = manifest.scan()
    assert not broken, broken
    files = manifest.module_files()
    assert {r.module for r in records} == set(files), "every experiment module registers at least one experiment"
    assert manifest.check_imports() == {}
    assert set(registry._REGISTRY) >= {r.name for r in records}
    for record in records:
        entry = registry.entry(record.name)
        assert entry.fn.__module__ == record.module
        assert record.claims in (len(entry.claims), -1), f"{record.name}: manifest counts {record.claims} claims"
