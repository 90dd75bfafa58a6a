"""Tiny specs for loop tests: cheap to compile, with an exact answer and a switch to produce NaNs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gvlab import DataSource, Method, Spec
from gvlab.data import epoch_batches, sampled_batches

DIM = 4
TRUE_W = jnp.arange(1.0, DIM + 1.0)


def regression_spec(batch_size: int = 16, lr: float = 0.05, nan_from_step: int | None = None,
                    trace_counter: list | None = None, finite_data: bool = False) -> Spec:
    """Linear regression y = x . w* + noise; the loss adds key-dependent noise so that keys matter.

    `nan_from_step`: the loss becomes NaN from that step on (to test the guard).
    `trace_counter`: a list that gets one element per trace of the loss (to count compilations).
    `finite_data`: a fixed dataset walked in epochs instead of fresh samples per step.
    """

    def init(key, batch):
        return {"w": 0.1 * jax.random.normal(key, (batch["x"].shape[-1],)), "b": jnp.zeros(())}

    def loss(params, batch, key, step):
        if trace_counter is not None:
            trace_counter.append(1)
        pred = batch["x"] @ params["w"] + params["b"]
        pred = pred + 0.01 * jax.random.normal(key, pred.shape)
        mse = jnp.mean((pred - batch["y"]) ** 2)
        if nan_from_step is not None:
            mse = jnp.where(step >= nan_from_step, jnp.nan, mse)
        return mse, {"toy/mse": mse, "toy/w_error": jnp.sum((params["w"] - TRUE_W) ** 2)}

    def sample_batch(key):
        x_key, noise_key = jax.random.split(key)
        x = jax.random.normal(x_key, (batch_size, DIM))
        return {"x": x, "y": x @ TRUE_W + 0.1 * jax.random.normal(noise_key, (batch_size,))}

    if finite_data:
        x = jax.random.normal(jax.random.key(1), (96, DIM))
        fixed = {"x": x, "y": x @ TRUE_W}
        data: DataSource = epoch_batches(fixed, batch_size)
    else:
        data = sampled_batches(sample_batch)

    def w_error(params, key):
        del key
        return {"w_error": jnp.sum((params["w"] - TRUE_W) ** 2)}

    return Spec(method=Method(init=init, loss=loss), optimizer=optax.adam(lr), data=data,
                evals={"truth": w_error})
