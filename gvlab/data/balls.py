"""Moving-ball videos whose motion is fractional Brownian motion of known Hurst index (cf. Daems et al. 2024).

Each video shows one ball, a Gaussian blob of standard deviation `radius` pixels and peak 1, on a one-channel
`size x size` canvas. Its two coordinates are independent copies of the latent path

    dX_t = -reversion X_t dt + scale dB^H_t,    X_0 ~ N(0, initial_std^2),    t in [0, duration],

with B^H standard fractional Brownian motion (type I, Var B^H_1 = 1: `unit_variance_scale`), drawn exactly by the
Cholesky sampler `gvlab.sde.fractional.sample_fbm` on a grid of `substeps` points per frame interval. With
`reversion = 0` (the default) the path is exactly X_0 + scale B^H at the frame times; otherwise it is the Euler
scheme of the fractional OU equation on the fine grid, driven by the exact fBM increments (the official data,
`sde/data/ball.py`, uses an OU drift -0.2 X and diffusion 0.1). Frames are taken at t_i = i duration / (T - 1),
i = 0..T-1.

The path is mapped into the canvas by tanh squashing, pixel = (size - 1) / 2 + half_range tanh(X) with
half_range = (size - 1) / 2 - margin, so the ball never leaves the frame (its centre stays `margin` pixels from
the border) and the map is close to linear for |X| < 1/2. Pixel coordinates are (x, y) = (column, row).

`sample(key, ...)` is a pure function of the key. Frames are in [0, 1].

Examples:
    >>> data = sample(jax.random.key(0), 3, 5, 0.7, size=12)
    >>> data["frames"].shape, data["paths"].shape, data["pixels"].shape
    ((3, 5, 12, 12), (3, 5, 2), (3, 5, 2))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.sde import fractional


def frame_times(num_frames: int, duration: float = 1.0) -> Float[Array, " T"]:
    """t_i = i duration / (T - 1), i = 0..T-1 (float32)."""
    return jnp.arange(num_frames, dtype=jnp.float32) * (duration / (num_frames - 1))


@functools.partial(jax.jit, static_argnames=("num", "num_frames", "substeps"))
def sample_paths(key: PRNGKeyArray, num: int, num_frames: int, hurst: float, *, scale: float = 0.5,
                 initial_std: float = 0.3, reversion: float = 0.0, duration: float = 1.0,
                 substeps: int = 4) -> Float[Array, "num T 2"]:
    """Latent paths X at the frame times: `[num, T, 2]`, two independent coordinates per video.

    X_0 ~ N(0, initial_std^2); B^H is exact standard type-I fBM on the fine grid h = duration / ((T-1) substeps),
    and X_{n+1} = X_n - reversion X_n h + scale (B^H_{(n+1)h} - B^H_{nh}) (exact for reversion = 0).
    """
    start_key, fbm_key = jax.random.split(key)
    num_fine = (num_frames - 1) * substeps
    step = duration / num_fine
    ts = jnp.arange(1, num_fine + 1, dtype=jnp.float32) * step
    hurst = jnp.asarray(hurst, jnp.float32)
    fbm = fractional.unit_variance_scale(hurst, "type1") * fractional.sample_fbm(fbm_key, ts, hurst, "type1",
                                                                                 2 * num)
    increments = jnp.diff(jnp.pad(fbm, ((0, 0), (1, 0))), axis=1).reshape(num, 2, num_fine)
    x0 = initial_std * jax.random.normal(start_key, (num, 2))

    def euler(x, db):
        x = x - reversion * step * x + scale * db
        return x, x

    _, xs = jax.lax.scan(euler, x0, jnp.moveaxis(increments, 2, 0))  # [num_fine, num, 2]
    paths = jnp.concatenate([x0[None], xs[substeps - 1::substeps]], axis=0)
    return jnp.moveaxis(paths, 0, 1)


def to_pixels(paths: Float[Array, "*batch 2"], size: int, margin: float = 2.5) -> Float[Array, "*batch 2"]:
    """Ball centres in pixel coordinates: (size - 1)/2 + half_range tanh(X), half_range = (size - 1)/2 - margin."""
    centre = (size - 1) / 2
    return centre + (centre - margin) * jnp.tanh(paths)


def render(pixels: Float[Array, "*batch 2"], size: int, radius: float = 1.0) -> Float[Array, "*batch size size"]:
    """Gaussian blobs exp(-|p - c|^2 / (2 radius^2)) at centres c = (x, y), sampled at integer pixels p."""
    grid = jnp.arange(size, dtype=pixels.dtype).reshape((1,) * (pixels.ndim - 1) + (size,))
    dx = jnp.square(grid - pixels[..., 0:1])  # [..., size] over columns
    dy = jnp.square(grid - pixels[..., 1:2])  # [..., size] over rows
    d2 = dy[..., :, None] + dx[..., None, :]
    return jnp.exp(-d2 / (2.0 * radius**2))


def center_of_mass(frames: Float[Array, "*batch H W"]) -> Float[Array, "*batch 2"]:
    """Intensity-weighted mean pixel (x, y) = (column, row) of each frame."""
    lead = (1,) * (frames.ndim - 2)
    rows = jnp.arange(frames.shape[-2], dtype=frames.dtype).reshape(lead + (-1, 1))
    cols = jnp.arange(frames.shape[-1], dtype=frames.dtype).reshape(lead + (1, -1))
    total = jnp.sum(frames, axis=(-2, -1))
    x = jnp.sum(frames * cols, axis=(-2, -1)) / total
    y = jnp.sum(frames * rows, axis=(-2, -1)) / total
    return jnp.stack([x, y], axis=-1)


def sample(key: PRNGKeyArray, num: int, num_frames: int, hurst: float, *, size: int = 16, radius: float = 1.0,
           margin: float = 2.5, scale: float = 0.5, initial_std: float = 0.3, reversion: float = 0.0,
           duration: float = 1.0, substeps: int = 4) -> dict[str, Array]:
    """`num` videos of `num_frames` frames, a pure function of `key`.

    Returns:
        `{"frames": [num, T, size, size] in [0, 1], "paths": [num, T, 2] latent X, "pixels": [num, T, 2]
        ball centres (x, y)}`, all float32.
    """
    paths = sample_paths(key, num, num_frames, hurst, scale=scale, initial_std=initial_std, reversion=reversion,
                         duration=duration, substeps=substeps)
    pixels = to_pixels(paths, size, margin)
    return {"frames": render(pixels, size, radius), "paths": paths, "pixels": pixels}
