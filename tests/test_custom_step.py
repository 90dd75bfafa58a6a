"""State beyond parameters and a custom step with two optimisers, through the one `fit` loop.

1. A min-max game f(x, y) = x^T A y + a/2 |x|^2 - b/2 |y|^2 trained by a custom `Method.step`: x descends with Adam,
   y ascends with SGD (`gvlab.train.by_part`), and a moving-average baseline of f lives in `TrainState.extra`.
   Its saddle point is (0, 0) in closed form; 2 + 2 steps with a checkpoint between equal 4 steps, bitwise.
2. The default step with `Method.init_extra`: an EMA of the batch mean (an EMA codebook of one code) in the slot,
   returned by the loss; checkpointed and resumed like the parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import Method, Spec, TrainConfig, fit
from gvlab.data import sampled_batches
from gvlab.errors import ConfigError
from gvlab.train import by_part, make_train_step
from gvlab.train.state import TrainState

DIM = 3
A = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]])
TRAIN = TrainConfig(steps=4, batch_size=4, log_every=1, ckpt_every=2)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _game_spec() -> Spec:
    optimizer = by_part(x=optax.adam(0.05), y=optax.sgd(0.05))

    def value(params, batch):
        x, y = params["x"], params["y"]
        return x @ A @ y + 0.5 * jnp.sum(x**2) - 0.5 * jnp.sum(y**2) + 0.0 * batch["noise"].sum()

    def init(key, batch):
        x_key, y_key = jax.random.split(key)
        return {"x": jax.random.normal(x_key, (DIM,)), "y": jax.random.normal(y_key, (DIM,))}

    def loss(params, batch, key, step):
        f = value(params, batch)
        return f, {"game/f": f}

    def step(state: TrainState, batch, key):
        grads = jax.grad(value)(state.params, batch)
        x_updates, opt_state = optimizer.update("x", grads["x"], state.opt_state, state.params)  # descent on x
        y_updates, opt_state = optimizer.update("y", jax.tree.map(jnp.negative, grads["y"]), opt_state,
                                                state.params)  # ascent on y
        params = {"x": optax.apply_updates(state.params["x"], x_updates),
                  "y": optax.apply_updates(state.params["y"], y_updates)}
        f = value(params, batch)
        baseline = 0.9 * state.extra["baseline"] + 0.1 * f
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra={"baseline": baseline})
        return new, {"loss": f, "game/baseline": baseline, "game/distance": optax.tree.norm(params)}

    method = Method(init=init, loss=loss, step=step, init_extra=lambda key, batch, params: {"baseline": jnp.zeros(())})
    data = sampled_batches(lambda key: {"noise": jax.random.normal(key, (TRAIN.batch_size,))})
    return Spec(method=method, optimizer=optimizer, data=data)


def test_two_optimisers_resume_bitwise_with_extra_state(tmp_path):
    spec = _game_spec()
    straight = fit(spec, TRAIN, progress=False)
    two = TrainConfig(**{**TRAIN.__dict__, "steps": 2})
    fit(spec, two, tmp_path, progress=False)
    resumed = fit(spec, TRAIN, tmp_path, progress=False)
    assert resumed.timing["start_step"] == 2 and resumed.origin == "checkpoint"
    for a, b in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(resumed.state.opt_state) == {"x", "y"}
    assert float(resumed.state.extra["baseline"][0]) != 0.0  # the slot moved and was restored
    assert straight.history.rows == [r for r in resumed.history.rows]


def test_the_game_reaches_its_closed_form_saddle_point():
    result = fit(_game_spec(), TrainConfig(**{**TRAIN.__dict__, "steps": 400, "log_every": 100}), progress=False)
    distance = np.asarray(result.history.column("game/distance")[1])
    assert distance[-1] < 0.05 * distance[0], distance  # (0, 0) is the unique saddle of the strongly convex-concave f


def test_default_step_threads_extra_through_the_loss(tmp_path):
    def init(key, batch):
        return {"w": jnp.zeros(DIM)}

    def loss(params, batch, key, step, extra):
        mean = batch["x"].mean(0)
        new_code = 0.8 * extra["code"] + 0.2 * jax.lax.stop_gradient(mean)  # EMA codebook update
        fit_error = jnp.sum((params["w"] - extra["code"]) ** 2)
        return fit_error, {"code/norm": jnp.linalg.norm(new_code)}, {"code": new_code}

    target = jnp.array([1.0, -2.0, 0.5])
    data = sampled_batches(lambda key: {"x": target[None] + 0.1 * jax.random.normal(key, (8, DIM))})
    method = Method(init=init, loss=loss, init_extra=lambda key, batch, params: {"code": jnp.zeros(DIM)})
    spec = Spec(method=method, optimizer=optax.sgd(0.3), data=data)
    train = TrainConfig(steps=60, batch_size=8, log_every=20, ckpt_every=30)
    straight = fit(spec, train, progress=False)
    np.testing.assert_allclose(straight.state.extra["code"][0], target, atol=0.05)  # the EMA found the mean
    np.testing.assert_allclose(straight.params["w"][0], target, atol=0.1)  # and the parameters followed it
    fit(spec, TrainConfig(**{**train.__dict__, "steps": 30}), tmp_path, progress=False)
    resumed = fit(spec, train, tmp_path, progress=False)
    for a, b in zip(_leaves(straight.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_make_step_receives_the_fits_optimiser_and_step_excludes_it():
    # `make_step(tx)` is handed the fit's transformation (here a marker chained in front of Adam), not a copy.
    seen = []

    def make_step(tx):
        seen.append(tx)
        return lambda state, batch, key: (state, {"loss": jnp.zeros(())})

    method = Method(init=lambda key, batch: {"w": jnp.zeros(())}, loss=lambda *a, **k: (0.0, {}), make_step=make_step)
    tx = optax.adam(1e-2)
    assert make_train_step(method, tx)(None, {}, None)[1]["loss"] == 0 and seen == [tx]
    with pytest.raises(ConfigError, match="not both"):  # negative control: two custom steps are ambiguous
        make_train_step(method._replace(step=lambda s, b, k: (s, {})), tx)
