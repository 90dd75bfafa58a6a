"""Reconstruction metrics for inverse problems.

PSNR = 10 log10(range^2 / MSE) in dB, the fidelity metric of RED-Diff (Mardani et al. 2024), FLAIR (Erbach et al.
2025) and LensNet (Bai et al. 2025); `data_range` is max - min of the reference's scale (1 for [0, 1] images,
2 for [-1, 1], as skimage's `peak_signal_noise_ratio`). `rms_residual` is the data fit sqrt(||A x - y||^2 / M),
sigma_y at the truth; `fit_classifier` the jitted logistic-regression probe (`gvlab.probe`) whose accuracy on
reconstructions says whether they are the right digit. With S solutions (solver keys) per measurement,
`psnr_per_solution` and `accuracy_per_solution` average over the measurements per solution index. `wall_times`
times compiled solves (the cost side of a solver comparison).

    >>> x = jnp.zeros((4, 4))
    >>> float(psnr(x + 0.1, x, data_range=1.0))   # MSE = 0.01
    20.0
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from gvlab.inverse.operators import Inpainting
from gvlab.probe import LogisticProbe, fit_logistic
from gvlab.probe import accuracy as probe_accuracy


def psnr(x: Float[Array, "*batch H W"], reference: Float[Array, "*batch H W"], data_range: float | Array = 1.0,
         axis: int | tuple[int, ...] = (-2, -1)) -> Float[Array, "*batch"]:
    """10 log10(data_range^2 / mean((x - reference)^2)) per image, the mean taken over `axis`.

    `[H, W]` images give a scalar, `[B, H, W]` batches `[B]` (average those for a dataset score, as the papers
    do); `axis=-1` for flattened `[B, D]` vectors. Identical images give +inf, with a zero (not NaN) gradient.
    """
    mse = jnp.mean(jnp.square(x - reference), axis=axis)
    positive = mse > 0
    # The inner `where` keeps log10 away from 0 so that the gradient of the unused branch is finite.
    value = 10.0 * jnp.log10(jnp.square(data_range) / jnp.where(positive, mse, 1.0))
    return jnp.where(positive, value, jnp.inf)


def rms_residual(op, x: Float[Array, "B H W"], y: Float[Array, "B ..."]) -> Float[Array, " B"]:
    """sqrt(||A x - y||^2 / M) per row, M the number of measurements: the observed pixels of an `Inpainting` (whose
    y is zero-filled to the image shape), y's size per row otherwise. E[RMS^2] = sigma_y^2 at the true image."""
    if isinstance(op, Inpainting):
        count = jnp.sum(op.mask.astype(x.dtype))
    else:
        count = jnp.asarray(np.prod(y.shape[1:]), x.dtype)
    r = op.forward(x) - y
    return jnp.sqrt(jnp.sum(jnp.square(r).reshape(r.shape[0], -1), axis=1) / count)


fit_classifier = jax.jit(fit_logistic, static_argnames=("num_classes", "steps", "standardize"))
"""`gvlab.probe.fit_logistic`, jitted (one program): a classifier of clean images whose accuracy on reconstructions
(`gvlab.probe.accuracy`) measures whether they are the right class."""


def psnr_per_solution(x: Float[Array, "*batch N S H W"], reference: Float[Array, "N H W"],
                      data_range: float = 2.0) -> np.ndarray:
    """`psnr` of S solutions of each of N measurements, averaged over the measurements per solution index:
    `[*batch, S]` (float64 numpy). A claim then reads a mean over S values, one per solver key, with its spread."""
    x = np.asarray(x)
    scores = psnr(x, np.broadcast_to(np.asarray(reference)[:, None], x.shape), data_range=data_range)
    return np.asarray(scores, np.float64).mean(-2)


def accuracy_per_solution(probe: LogisticProbe, x: Float[Array, "*batch N S H W"], labels: Int[Array, " N"]
                          ) -> np.ndarray:
    """`gvlab.probe.accuracy` of a classifier of flattened images on S solutions of each of N measurements, per
    solution index: `[*batch, S]` (float64 numpy)."""
    x = np.asarray(x)
    by_solution = np.swapaxes(x, -3, -4).reshape(-1, len(labels), x.shape[-2] * x.shape[-1])  # [*batch S, N, D]
    scores = jax.vmap(probe_accuracy, in_axes=(None, 0, None))(probe, by_solution, jnp.asarray(labels))
    return np.asarray(scores, np.float64).reshape(*x.shape[:-4], x.shape[-3])


def wall_times(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, np.ndarray]:
    """Wall time in ms of zero-argument callables (compiled solves), `repeats` times each after one untimed call
    (compilation), interleaved so that all see the same machine load: `{name: [repeats]}`. Not reproducible: cache
    the result (`run.artifact`) and compare only times measured together."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        jax.block_until_ready(fn())
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: np.asarray(values) for name, values in times.items()}
