"""Moving-ball videos (gvlab.data.balls): shapes, purity, rendering that tracks the path, fBM statistics of the path.

The path oracle is the exact fBM covariance: increments of X_0 + s B^H over a frame interval h have variance
s^2 h^{2H} and lag-1 correlation 2^{2H-1} - 1; each check has a negative control (the other H, or another key's
path) that the same tolerance rejects.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gvlab.data import balls

pytestmark = pytest.mark.usefixtures("strict_dtypes")


def test_shapes_range_and_dtypes(key):
    data = balls.sample(key, 3, 7, 0.7, size=12, radius=1.0, margin=2.0)
    assert data["frames"].shape == (3, 7, 12, 12)
    assert data["paths"].shape == data["pixels"].shape == (3, 7, 2)
    assert all(v.dtype == np.float32 for v in data.values())
    frames = np.asarray(data["frames"])
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    assert frames.max(axis=(-2, -1)).min() > 0.5  # the ball is on every frame
    pixels = np.asarray(data["pixels"])
    assert pixels.min() >= 2.0 and pixels.max() <= 12 - 1 - 2.0  # the margin holds
    np.testing.assert_allclose(balls.frame_times(5), [0.0, 0.25, 0.5, 0.75, 1.0])


def test_pure_function_of_the_key(key):
    a = balls.sample(key, 4, 6, 0.3)
    b = balls.sample(key, 4, 6, 0.3)
    c = balls.sample(jax.random.fold_in(key, 1), 4, 6, 0.3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.allclose(a["paths"], c["paths"])


def test_centre_of_mass_tracks_the_path(key):
    data = balls.sample(key, 64, 8, 0.7, size=16, radius=1.0, margin=2.5)
    com = np.asarray(balls.center_of_mass(data["frames"]))
    error = np.abs(com - np.asarray(data["pixels"]))
    assert error.max() < 0.02, error.max()  # truncation at 2.5 px from the edge moves the mean by < 0.02 px
    # Negative control: another key's ball positions are far off by the same measure.
    other = np.asarray(balls.sample(jax.random.fold_in(key, 1), 64, 8, 0.7, size=16)["pixels"])
    assert np.abs(com - other).mean() > 0.5
    # Coordinates are (x, y) = (column, row): a ball right of centre lights up columns on the right.
    frame = np.asarray(balls.render(np.array([10.0, 4.0], np.float32), 16))
    assert frame.argmax() == 4 * 16 + 10


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_path_increments_have_the_fbm_covariance(key, hurst):
    num, frames, scale = 4000, 6, 0.5
    paths = np.asarray(balls.sample_paths(key, num, frames, hurst, scale=scale, initial_std=0.3))
    steps = np.diff(paths, axis=1).reshape(num, frames - 1, 2).transpose(0, 2, 1).reshape(2 * num, frames - 1)
    h = 1.0 / (frames - 1)
    variance = steps.var(axis=0).mean()
    np.testing.assert_allclose(variance, scale**2 * h ** (2 * hurst), rtol=0.05)
    corr = np.mean([np.corrcoef(steps[:, i], steps[:, i + 1])[0, 1] for i in range(frames - 2)])
    expected = 2 ** (2 * hurst - 1) - 1  # +0.32 for H = 0.7, -0.24 for H = 0.3
    tol = 5 / np.sqrt(2 * num * (frames - 2))  # ~5 standard errors of the pooled correlation
    assert abs(corr - expected) < tol, (corr, expected)
    other = 2 ** (2 * (1 - hurst) - 1) - 1  # negative control: the other Hurst index
    assert abs(corr - other) > tol
    np.testing.assert_allclose(paths[:, 0].std(), 0.3, rtol=0.05)  # X_0 ~ N(0, 0.3^2)


def test_mean_reversion_pulls_paths_back(key):
    free = np.asarray(balls.sample_paths(key, 2000, 6, 0.5, scale=0.5, initial_std=0.5))
    pulled = np.asarray(balls.sample_paths(key, 2000, 6, 0.5, scale=0.5, initial_std=0.5, reversion=2.0))
    np.testing.assert_array_equal(free[:, 0], pulled[:, 0])  # same start, same noise
    # dX = -2 X dt + 0.5 dW, X_0 ~ N(0, 0.25): Var X_1 = 0.25 e^{-4} + 0.0625 (1 - e^{-4}) = 0.066 (Euler: 0.068)
    np.testing.assert_allclose(pulled[:, -1].var(), 0.25 * np.exp(-4) + 0.0625 * (1 - np.exp(-4)), rtol=0.1)
    np.testing.assert_allclose(free[:, -1].var(), 0.25 + 0.25, rtol=0.1)
