"""The fit loop: compiles once, learns, is deterministic, resumes bitwise, vmaps seeds, shards, guards NaNs."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from gvlab import TrainConfig, fit
from gvlab.errors import CheckpointError, NonFiniteError
from gvlab.train import parallel
from gvlab.train.ckpt import Checkpointer
from tests.toys import regression_spec

TRAIN = TrainConfig(steps=40, batch_size=16, lr=0.05, log_every=10, eval_every=20, ckpt_every=20)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_bitwise(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _rows_without_time(history):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in history.rows]


def test_compiles_once_and_learns():
    traces = []
    result = fit(regression_spec(trace_counter=traces), TrainConfig(steps=150, batch_size=16, lr=0.05, log_every=50),
                 progress=False)
    # One trace, shared by the shape pass (eval_shape of the step) and the compiled step: never one per call.
    assert len(traces) == 1, f"loss traced {len(traces)} times over 150 steps"
    steps, mse = result.history.column("toy/mse")
    assert list(steps) == [50, 100, 150]
    assert mse[-1] < 0.05 * mse[0], f"loss did not decrease enough: {mse}"
    # Negative control on the counter: a second fit builds a new step function and traces again.
    fit(regression_spec(trace_counter=traces), TrainConfig(steps=3, batch_size=16, log_every=1), progress=False)
    assert len(traces) == 2


def test_same_seed_same_numbers_other_seed_differs():
    spec = regression_spec()
    a = fit(spec, TRAIN, progress=False)
    b = fit(spec, TRAIN, progress=False)
    c = fit(spec, TrainConfig(**{**TRAIN.__dict__, "seed": 1}), progress=False)
    _assert_bitwise(a.state.params, b.state.params)
    assert a.history.rows == b.history.rows
    assert not np.array_equal(_leaves(a.state.params)[0], _leaves(c.state.params)[0])
    assert a.history.rows[0]["loss"] != c.history.rows[0]["loss"]


def test_vmapped_seeds_equal_python_loop():
    spec = regression_spec(finite_data=True)
    train = TrainConfig(steps=30, batch_size=16, lr=0.05, log_every=10, seed=3, num_seeds=3)
    stacked = fit(spec, train, progress=False)
    assert stacked.seeds == (3, 4, 5)
    for i, seed in enumerate(stacked.seeds):
        single = fit(spec, TrainConfig(**{**train.__dict__, "seed": seed, "num_seeds": 1}), progress=False)
        for x, y in zip(_leaves(stacked.params_of(i)), _leaves(single.params_of(0)), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        rows = [r for r in stacked.history.rows if r["seed"] == seed]
        for r_stacked, r_single in zip(rows, single.history.rows, strict=True):
            np.testing.assert_allclose(r_stacked["loss"], r_single["loss"], rtol=1e-5)
    # Negative control: the runs are not copies of each other.
    assert not np.allclose(_leaves(stacked.params_of(0))[0], _leaves(stacked.params_of(1))[0])


@pytest.mark.skipif(jax.default_backend() != "cpu" and jax.device_count() < 4,
                    reason="needs 4 devices: conftest forces 4 on the CPU; a one-GPU machine has 1")
def test_four_devices_match_one_device():
    assert jax.device_count() == 4, "conftest forces 4 CPU devices"
    spec = regression_spec(batch_size=16)
    train = TrainConfig(steps=30, batch_size=16, lr=0.05, log_every=10, num_seeds=2)
    one = fit(spec, train, mesh=parallel.data_mesh(1), progress=False)
    four = fit(spec, train, mesh=parallel.data_mesh(4), progress=False)
    assert four.state.params["w"].sharding.mesh.devices.size == 4
    for x, y in zip(_leaves(one.params), _leaves(four.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_batch_must_split_over_devices():
    from gvlab.errors import ConfigError

    with pytest.raises(ConfigError, match="does not split over 4 devices"):
        fit(regression_spec(batch_size=10), TrainConfig(steps=2, batch_size=10), progress=False)


def test_resume_is_bitwise_equal(tmp_path):
    spec = regression_spec()
    straight = fit(spec, TRAIN, tmp_path / "straight", progress=False)
    half = TrainConfig(**{**TRAIN.__dict__, "steps": 20})
    fit(spec, half, tmp_path / "resumed", progress=False)
    resumed = fit(spec, TRAIN, tmp_path / "resumed", progress=False)
    assert resumed.timing["start_step"] == 20
    _assert_bitwise(straight.state, resumed.state)
    assert _rows_without_time(straight.history) == _rows_without_time(resumed.history)
    straight_file = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed_file = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert straight_file == resumed_file
    assert [json.loads(line)["step"] for line in straight_file] == [10, 20, 30, 40]


def test_nan_guard_names_step_and_metric_and_keeps_last_good_checkpoint(tmp_path):
    spec = regression_spec(nan_from_step=25)  # the loss of the step taken from state.step = 25 is NaN
    # Named as progress and metrics.jsonl count steps: that step's row would be step 26.
    with pytest.raises(NonFiniteError, match=r"step 26 \(.*loss.*toy/mse") as info:
        fit(spec, TRAIN, tmp_path, progress=False)
    assert "last good checkpoint is step 20" in str(info.value)
    assert Checkpointer(tmp_path / "ckpt", keep=2).steps() == [20]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 20 and all(np.isfinite(r["loss"]) for r in rows)
    # Negative control: the same spec without the NaN switch trains through.
    fit(regression_spec(), TRAIN, tmp_path / "clean", progress=False)


def test_corrupted_latest_checkpoint_falls_back_and_is_kept(tmp_path, caplog):
    spec = regression_spec()
    fit(spec, TRAIN, tmp_path, progress=False)  # checkpoints at 20 and 40
    for path in (tmp_path / "ckpt" / "40" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"not a checkpoint")
    resumed = fit(spec, TRAIN, tmp_path, progress=False)
    assert resumed.timing["start_step"] == 20
    moved = list((tmp_path / "ckpt_unreadable").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("40-")  # kept, not deleted
    assert "checkpoint 40 is unreadable" in caplog.text
    straight = fit(spec, TRAIN, progress=False)
    _assert_bitwise(straight.state, resumed.state)


def test_all_checkpoints_unreadable_refuses_without_deleting(tmp_path):
    spec = regression_spec()
    fit(spec, TrainConfig(**{**TRAIN.__dict__, "steps": 20}), tmp_path, progress=False)
    for manifest in (tmp_path / "ckpt").rglob("manifest.ocdbt"):
        manifest.unlink()
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        fit(spec, TRAIN, tmp_path, progress=False)
    assert (tmp_path / "ckpt" / "20").exists()


def test_checkpoint_of_other_seeds_is_refused(tmp_path):
    fit(regression_spec(), TrainConfig(**{**TRAIN.__dict__, "steps": 20}), tmp_path, progress=False)
    shutil.copytree(tmp_path, tmp_path.parent / "copy")
    with pytest.raises(CheckpointError, match="seeds"):
        fit(regression_spec(), TrainConfig(**{**TRAIN.__dict__, "seed": 7}), tmp_path.parent / "copy",
            progress=False)


def test_steps_in_flight_are_bounded(monkeypatch):
    """XLA:CPU deadlocks (and aborts after 40 s) when a multi-device step with an all-reduce is queued ~32 deep;
    the loop must wait for step t - MAX_STEPS_IN_FLIGHT before dispatching more (see loop.MAX_STEPS_IN_FLIGHT)."""
    from gvlab.train import loop

    waited = []
    real = jax.block_until_ready
    monkeypatch.setattr(loop.jax, "block_until_ready", lambda x: waited.append(1) or real(x))
    fit(regression_spec(), TrainConfig(steps=100, batch_size=16, log_every=100), progress=False)
    assert loop.MAX_STEPS_IN_FLIGHT <= 16
    assert len(waited) >= 100 - loop.MAX_STEPS_IN_FLIGHT
