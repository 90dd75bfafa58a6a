"""The `gvlab` command: bad input exits non-zero with a clear message and loses nothing; runs killed with SIGKILL
or stopped half-way resume to the same numbers as an uninterrupted run, across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gvlab import cli

ROOT = Path(__file__).resolve().parents[1]
# A smoke-sized run that is long enough to be killed half-way.
LONG = ["train.steps=2000", "train.ckpt_every=200", "train.log_every=100", "train.eval_every=500", "eval_samples=4"]


def _env():
    env = dict(os.environ)
    # The CLI runs on the machine's real device count, with the suite's faster-compiling XLA flags (conftest.py).
    flags = [f for f in env.pop("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device")]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _gvlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "gvlab.cli", *args]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(_gvlab(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"gvlab {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def _final_state(workdir: Path) -> tuple[dict, list[str], dict]:
    """(checkpoint meta of the last step incl. its state fingerprint, metrics lines, results)."""
    steps = sorted(int(p.name) for p in (workdir / "ckpt").iterdir() if p.name.isdigit())
    meta = json.loads((workdir / "ckpt" / str(steps[-1]) / "meta" / "metadata").read_text())
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    results = json.loads((workdir / "report.json").read_text())["results"]
    return meta, lines, results


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, list[str], dict]:
    """An uninterrupted run that the interrupted ones must reproduce bit for bit."""
    workdir = tmp_path_factory.mktemp("reference")
    _run("run", "vae/digits", "--profile", "smoke", "--workdir", str(workdir), "--quiet", "--set", *LONG)
    return _final_state(workdir)


def test_sigkill_midway_then_same_command_resumes_to_identical_numbers(reference, tmp_path):
    command = _gvlab("run", "vae/digits", "--profile", "smoke", "--workdir", str(tmp_path), "--quiet", "--set", *LONG)
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (tmp_path / "ckpt" / "600").exists():
        assert process.poll() is None, f"run ended before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "report.json").exists()
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta, lines, results = _final_state(tmp_path)
    ref_meta, ref_lines, ref_results = reference
    assert meta["fingerprint"] == ref_meta["fingerprint"], "parameters differ from the uninterrupted run"
    assert lines == ref_lines
    assert results == ref_results


def test_sigterm_checkpoints_the_current_step_and_exits_130(reference, tmp_path):
    command = _gvlab("run", "vae/digits", "--profile", "smoke", "--workdir", str(tmp_path), "--quiet", "--set", *LONG)
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 240
    while '"step": 300' not in ((tmp_path / "metrics.jsonl").read_text() if (tmp_path / "metrics.jsonl").exists()
                                else ""):
        assert process.poll() is None, f"run ended before SIGTERM: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, err[-2000:]
    assert "rerun the same command to resume" in err
    steps = sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit())
    assert steps[-1] >= 300  # the state at the signal was kept, not only the last regular checkpoint (200)
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta, lines, results = _final_state(tmp_path)
    assert meta["fingerprint"] == reference[0]["fingerprint"] and lines == reference[1] and results == reference[2]


def test_half_run_then_resume_in_a_new_process_is_bitwise_equal(reference, tmp_path):
    half = [s if not s.startswith("train.steps=") else "train.steps=1000" for s in LONG]
    _run("run", "vae/digits", "--profile", "smoke", "--workdir", str(tmp_path), "--quiet", "--set", *half)
    _run("resume", str(tmp_path), "--quiet", "--set", "train.steps=2000")
    meta, lines, results = _final_state(tmp_path)
    assert meta["fingerprint"] == reference[0]["fingerprint"]
    assert lines == reference[1]
    assert results == reference[2]
    # Negative control: the half-way state itself differs from the final one.
    half_meta = json.loads((tmp_path / "ckpt" / "1000" / "meta" / "metadata").read_text()) \
        if (tmp_path / "ckpt" / "1000").exists() else None
    if half_meta is not None:
        assert half_meta["fingerprint"] != meta["fingerprint"]


# ------------------------------------------------------------------------------------------------------------------
# Bad input, in-process (same code path as the console script, without a new interpreter per case)


@pytest.mark.parametrize("argv, message", [
    (["run", "vae/digit", "--workdir", "{tmp}"], "unknown experiment 'vae/digit'; did you mean vae/digits"),
    (["run", "vae/digits", "--workdir", "{tmp}", "--set", "train.stepz=5"],
     "unknown config key 'train.stepz' (did you mean train.steps"),
    (["run", "vae/digits", "--workdir", "{tmp}", "--set", "train.steps=five"], "train.steps: expected an int"),
    (["show", "vae/digits", "--set", "model.likelihood=poisson"], "is not one of ['bernoulli', 'gaussian']"),
    (["run", "vae/digits", "--workdir", "{tmp}", "--set", "train.steps"], "--set expects key=value"),
    (["resume", "{tmp}"], "has no config.json"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path / "w")) for a in argv]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())  # nothing was written


def test_workdir_of_another_config_is_refused_and_left_intact(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert cli.main(["run", "vae/digits", "--profile", "smoke", "--workdir", str(workdir), "--quiet"]) == 0
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    code = cli.main(["run", "vae/digits", "--profile", "smoke", "--workdir", str(workdir), "--quiet",
                     "--set", "model.latent_dim=3"])
    assert code == cli.EXIT_BAD_INPUT
    assert "another config (model.latent_dim: 4 -> 3)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_corrupted_latest_checkpoint_is_reported_and_the_run_completes(tmp_path, capsys, caplog):
    workdir = tmp_path / "w"
    args = ["run", "vae/digits", "--profile", "smoke", "--workdir", str(workdir), "--quiet"]
    assert cli.main(args) == 0
    first = json.loads((workdir / "report.json").read_text())["results"]
    for path in (workdir / "ckpt" / "20" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"\0" * 17)
    assert cli.main(args) == 0
    assert "checkpoint 20 is unreadable" in caplog.text and "resumed from step 10" in caplog.text
    assert json.loads((workdir / "report.json").read_text())["results"] == first
    assert any((workdir / "ckpt_unreadable").iterdir())


def test_strict_flag_turns_failed_claims_into_exit_1(tmp_path, capsys):
    # The smoke profile trains 20 steps: too few to beat the baseline, so that claim fails (and says so).
    args = ["reproduce", "vae/digits", "--profile", "smoke", "--workdir", str(tmp_path / "w"), "--quiet"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "FAIL" in out and "elbo_minus_baseline" in out and "report:" in out
    assert cli.main(args + ["--strict"]) == cli.EXIT_FAILED


def test_reproduce_default_workdir_is_under_runs():
    assert cli._default_workdir("vae/digits", "quick", {}) == Path("runs/vae/digits/quick")
    other = cli._default_workdir("vae/digits", "quick", {"train.steps": "5"})
    assert other.parent == Path("runs/vae/digits") and other.name.startswith("quick-")


def test_nonfinite_training_exits_1_with_the_step(tmp_path, capsys):
    args = ["run", "vae/digits", "--profile", "smoke", "--workdir", str(tmp_path / "w"), "--quiet",
            "--set", "train.lr=1e30"]
    assert cli.main(args) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "non-finite metrics at seed 0: step" in err


def test_list_and_show(capsys):
    assert cli.main(["list"]) == 0
    assert "vae/digits" in capsys.readouterr().out
    assert cli.main(["show", "vae/digits", "--profile", "smoke", "--set", "train.steps=7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["train"]["steps"] == 7 and shown["profile"] == "smoke"
