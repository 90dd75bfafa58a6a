"""Warm starts (`fit(init=...)`): big_vision's order, every source gives the same run, run axes are kept."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gvlab import TrainConfig, fit
from gvlab.errors import ConfigError
from tests.toys import regression_spec

FIRST = TrainConfig(steps=10, batch_size=16, lr=0.05, log_every=5, ckpt_every=5, num_seeds=2)
SECOND = TrainConfig(steps=6, batch_size=16, lr=0.05, log_every=3, ckpt_every=3, num_seeds=2, seed=7)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_bitwise(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("source")
    return fit(regression_spec(), FIRST, workdir, progress=False)


def test_fit_result_params_and_workdir_give_bitwise_the_same_run(source, tmp_path):
    spec = regression_spec()
    from_result = fit(spec, SECOND, tmp_path / "a", init=source, progress=False)
    by_hand = fit(spec, SECOND, tmp_path / "b", init=jax.device_get(source.params), progress=False)
    from_workdir = fit(spec, SECOND, tmp_path / "c", init=source.workdir, progress=False)
    assert from_result.origin == by_hand.origin == from_workdir.origin == "warm start"
    _assert_bitwise(from_result.params, by_hand.params)
    _assert_bitwise(from_result.params, from_workdir.params)
    assert from_result.history.rows == from_workdir.history.rows
    # The warm start changed the run: scratch with the same seeds ends elsewhere (negative control).
    scratch = fit(spec, SECOND, progress=False)
    assert scratch.origin == "scratch"
    assert not np.array_equal(_leaves(scratch.params)[0], _leaves(from_result.params)[0])


def test_warm_start_step_zero_holds_the_source_parameters(source):
    zero = fit(regression_spec(), TrainConfig(**{**SECOND.__dict__, "steps": 1}), init=source, progress=False)
    # One SGD-like step away from the source: closer to it than to a fresh init.
    gap = np.abs(_leaves(zero.params)[1] - _leaves(source.params)[1]).max()
    assert gap < 0.1, gap


def test_a_checkpoint_in_the_workdir_wins_over_init(source, tmp_path):
    spec = regression_spec()
    first = fit(spec, SECOND, tmp_path, progress=False)  # scratch, checkpointed at step 6
    resumed = fit(spec, SECOND, tmp_path, init=source, progress=False)
    assert resumed.origin == "checkpoint" and resumed.timing["start_step"] == SECOND.steps
    _assert_bitwise(first.params, resumed.params)


def test_one_source_run_broadcasts_and_run_counts_must_fit(source):
    spec = regression_spec()
    single = jax.tree.map(lambda x: x[1], jax.device_get(source.params))  # no run axis: one run for all
    result = fit(spec, TrainConfig(**{**SECOND.__dict__, "steps": 1, "num_seeds": 3}), init=single, progress=False)
    assert result.num_runs == 3
    with pytest.raises(ConfigError, match="source has 2 runs and this fit has 3"):
        fit(spec, TrainConfig(**{**SECOND.__dict__, "num_seeds": 3}), init=source, progress=False)
    with pytest.raises(ConfigError, match="structure"):
        fit(spec, SECOND, init={"w": single["w"]}, progress=False)
