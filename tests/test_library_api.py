"""The library as a downstream JAX project meets it (issue 14, items 6-8): meshes made the ordinary way, settings
that `fit` does not read, and resuming a checkpoint written by another optimiser."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AxisType

from gvlab import TrainConfig, fit
from gvlab.errors import CheckpointError, ConfigError
from gvlab.train import data_mesh
from tests.toys import regression_spec

TRAIN = TrainConfig(steps=6, batch_size=16, lr=0.05, log_every=3, ckpt_every=3)


def test_fit_accepts_an_ordinary_mesh_with_any_axis_name():
    spec = regression_spec()
    ours = fit(spec, TRAIN, mesh=data_mesh(4), progress=False)
    explicit = jax.make_mesh((4,), ("batch",))  # jax's default axis type is Explicit
    assert explicit.axis_types == (AxisType.Explicit,)
    theirs = fit(spec, TRAIN, mesh=explicit, progress=False)
    np.testing.assert_array_equal(ours.params["w"], theirs.params["w"])
    two_axes = jax.make_mesh((4, 1), ("batch", "model"))
    named = fit(spec, TRAIN, mesh=two_axes, data_axis="batch", progress=False)
    np.testing.assert_array_equal(ours.params["w"], named.params["w"])
    with pytest.raises(ConfigError, match="name the batch axis with fit\\(data_axis=...\\)"):
        fit(spec, TRAIN, mesh=two_axes, progress=False)
    with pytest.raises(ConfigError, match="model parallelism is not supported"):
        fit(spec, TRAIN, mesh=jax.make_mesh((2, 2), ("batch", "model")), data_axis="batch", progress=False)


def test_a_batch_size_the_data_source_does_not_use_is_flagged():
    with pytest.warns(UserWarning, match="train.batch_size=32 is not the batch size of spec.data \\(16\\)"):
        fit(regression_spec(batch_size=16), TrainConfig(**{**TRAIN.__dict__, "batch_size": 32}), progress=False)


def test_train_lr_is_the_learning_rate_when_the_spec_leaves_the_optimiser_out():
    # spec.optimizer=None: Adam at train.lr, so the config decides; negative control: another lr, other numbers.
    own = fit(regression_spec(lr=0.05), TRAIN, progress=False)
    from_config = fit(regression_spec()._replace(optimizer=None), TRAIN, progress=False)
    np.testing.assert_array_equal(own.params["w"], from_config.params["w"])
    other = fit(regression_spec()._replace(optimizer=None), TrainConfig(**{**TRAIN.__dict__, "lr": 0.01}),
                progress=False)
    assert not np.array_equal(own.params["w"], other.params["w"])


def test_a_train_lr_the_optimiser_does_not_use_is_flagged():
    spec = regression_spec()._replace(optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=0.05))
    with pytest.warns(UserWarning, match="train.lr=0.2 is not the learning rate of spec.optimizer \\(0.05\\)"):
        fit(spec, TrainConfig(**{**TRAIN.__dict__, "lr": 0.2}), progress=False)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same lr: no warning
        fit(spec, TRAIN, progress=False)


def test_library_resume_refuses_another_optimiser(tmp_path):
    spec = regression_spec()
    fit(spec, TRAIN, tmp_path, progress=False)
    other = spec._replace(optimizer=optax.adam(0.5))  # same state structure as adam(0.05): only the numbers differ
    with pytest.raises(CheckpointError, match="optimiser"):
        fit(other, TrainConfig(**{**TRAIN.__dict__, "steps": 9}), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="seeds"):
        fit(spec, TrainConfig(**{**TRAIN.__dict__, "steps": 9, "seed": 3}), tmp_path, progress=False)
    resumed = fit(spec, TrainConfig(**{**TRAIN.__dict__, "steps": 9}), tmp_path, progress=False)  # the same: fine
    assert resumed.origin == "checkpoint"
