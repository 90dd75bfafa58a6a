"""Regression data for the IB experiments: a heavy-tailed synthetic set, diabetes splits, and a data source.

* `heavy_tailed`: x ~ N(0, I_5), y = f(x) + eps, f(x) = sin(2 x_1) + x_2^2 / 2 + x_3 x_4, and contaminated noise
  eps ~ (1 - p) N(0, s_in^2) + p N(0, s_out^2) with p = 0.2, s_in = 0.1, s_out = 1 (notes sec. 9(d)). The noise is
  symmetric about 0, so f(x) is at once the conditional mean, median and mode, and the best possible test RMSE is
  the noise's root mean square, `noise_floor_rmse` = sqrt((1 - p) s_in^2 + p s_out^2) (0.456 for the defaults).
* `diabetes_splits`: sklearn's bundled `load_diabetes` (442 x 10, no download), random 60/20/20 splits, x and y
  standardised with the training split's mean and standard deviation.
* `regression_source`: shuffled training minibatches (`gvlab.data.batching.epoch_batches`) plus the whole
  validation split in every batch (`val_x`, `val_y`), which the method's validation selection reads.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.data.batching import epoch_batches
from gvlab.types import DataSource


def heavy_tailed_function(x: jax.Array) -> jax.Array:
    """f(x) = sin(2 x_1) + x_2^2 / 2 + x_3 x_4 for x `[N, d >= 4]` -> `[N]`."""
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"x must be [N, d] with d >= 4, got {x.shape}")
    return jnp.sin(2 * x[:, 0]) + 0.5 * jnp.square(x[:, 1]) + x[:, 2] * x[:, 3]


@functools.partial(jax.jit, static_argnames=("num", "dim"))  # one program per size, not one per primitive
def heavy_tailed(key: jax.Array, num: int, dim: int = 5, outlier_prob: float = 0.2, inlier_scale: float = 0.1,
                 outlier_scale: float = 1.0) -> dict[str, jax.Array]:
    """`{"x": [num, dim], "y": [num], "f": [num]}`: inputs, noisy targets and the noise-free f(x)."""
    x_key, pick_key, noise_key = jax.random.split(key, 3)
    x = jax.random.normal(x_key, (num, dim))
    scale = jnp.where(jax.random.uniform(pick_key, (num,)) < outlier_prob, outlier_scale, inlier_scale)
    f = heavy_tailed_function(x)
    return {"x": x, "y": f + scale * jax.random.normal(noise_key, (num,)), "f": f}


def noise_floor_rmse(outlier_prob: float = 0.2, inlier_scale: float = 0.1, outlier_scale: float = 1.0) -> float:
    """RMSE of the Bayes predictor f(x) on noisy targets: sqrt(E eps^2) = sqrt((1-p) s_in^2 + p s_out^2)."""
    return math.sqrt((1 - outlier_prob) * inlier_scale ** 2 + outlier_prob * outlier_scale ** 2)


def standardise(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre and scale every array with the mean and standard deviation of `train` (per column)."""
    mean, std = train.mean(0), train.std(0)
    return tuple((a - mean) / std for a in (train, *others))


def diabetes_splits(seed: int, num_splits: int, fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, np.ndarray]:
    """`num_splits` random train/val/test splits of sklearn's diabetes data, standardised per split.

    Returns `{"train_x": [S, n_train, 10], "train_y": [S, n_train], "val_x", "val_y", "test_x", "test_y"}`
    (float32), test = the rest after the train and validation fractions.
    """
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x, y = data.data.astype(np.float64), data.target.astype(np.float64)
    n = len(y)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    for _ in range(num_splits):
        order = rng.permutation(n)
        parts = np.split(order, [n_train, n_train + n_val])
        xs = standardise(*(x[p] for p in parts))
        ys = standardise(*(y[p] for p in parts))
        for name, xi, yi in zip(("train", "val", "test"), xs, ys):
            out[f"{name}_x"].append(xi)
            out[f"{name}_y"].append(yi)
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def regression_source(train_x: jax.Array, train_y: jax.Array, val_x: jax.Array, val_y: jax.Array,
                      batch_size: int, per_member: bool = True) -> DataSource:
    """Minibatches `{"x", "y"}` of the training split plus the whole validation split `{"val_x", "val_y"}`.

    With `per_member` every array has a leading member axis [M] (each member its own split or data draw).
    """
    inner = epoch_batches({"x": train_x, "y": train_y}, batch_size, per_member=per_member)

    def batch(arrays, key, step):
        out = dict(inner.batch(arrays["train"], key, step))
        out.update(val_x=arrays["val_x"], val_y=arrays["val_y"])
        return out

    arrays = {"train": inner.arrays, "val_x": val_x, "val_y": val_y}
    return DataSource(arrays=arrays, batch=batch, per_member=per_member)
