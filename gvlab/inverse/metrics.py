"""Reconstruction metrics for inverse problems.

PSNR = 10 log10(range^2 / MSE) in dB, the fidelity metric of RED-Diff (Mardani et al. 2024), FLAIR (Erbach et al.
2025) and LensNet (Bai et al. 2025); `data_range` is max - min of the reference's scale (1 for [0, 1] images,
2 for [-1, 1], as skimage's `peak_signal_noise_ratio`).

    >>> x = jnp.zeros((4, 4))
    >>> float(psnr(x + 0.1, x, data_range=1.0))   # MSE = 0.01
    20.0
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


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
