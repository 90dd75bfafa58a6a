"""Procedural "dSprites-lite": binary images of one shape with known generative factors.

A stand-in for dSprites (Matthey et al. 2017) at CPU scale, as used for the mean-vs-sampled representation study
(Bonheme & Grzes, JMLR 2023): a 20x20 canvas shows one shape in {square, disk, plus} of half-size
`scale` in {2, 3, 4, 5} pixels, centred at x and y each one of the 8 pixel positions 5..12 (no shape is clipped).
3 * 4 * 8 * 8 = 768 factor combinations, all rendering to different images. Shapes are defined on pixel centres (i, j):

    square: max(|i - y|, |j - x|) <= s,   disk: (i - y)^2 + (j - x)^2 <= s^2,
    plus:   (|i - y| <= s and |j - x| <= s / 3) or (|j - x| <= s and |i - y| <= s / 3).

`sample(key, n)` draws factors uniformly with replacement, a pure function of the key; `render` is exact and
deterministic, so any factor combination can be drawn on its own (`all_factors` lists them in order).

    >>> data = sample(jax.random.key(0), 5)
    >>> data["images"].shape, data["factors"].shape, sorted(FACTORS)
    ((5, 20, 20), (5, 4), ['scale', 'shape', 'x', 'y'])
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

SIZE = 20
SHAPES = ("square", "disk", "plus")
SCALES = (2.0, 3.0, 4.0, 5.0)
# Integer centres 5..12: the largest shape spans 0..17, never clipped; non-integer centres would make some small
# disks and pluses render to the same pixels.
POSITIONS = tuple(float(p) for p in range(5, 13))
FACTORS = {"shape": len(SHAPES), "scale": len(SCALES), "x": len(POSITIONS), "y": len(POSITIONS)}


def render(factors: Int[Array, "*batch 4"]) -> Float[Array, "*batch 20 20"]:
    """Images (float32 in {0, 1}) for integer factor codes (shape, scale, x, y), each in range(FACTORS[name])."""
    shape, scale_code, x_code, y_code = (factors[..., i] for i in range(4))
    scale = jnp.asarray(SCALES, jnp.float32)[scale_code][..., None, None]
    x = jnp.asarray(POSITIONS, jnp.float32)[x_code][..., None, None]
    y = jnp.asarray(POSITIONS, jnp.float32)[y_code][..., None, None]
    lead = (1,) * (factors.ndim - 1)
    grid = jnp.arange(SIZE, dtype=jnp.float32)
    rows = jnp.abs(grid.reshape(lead + (SIZE, 1)) - y)  # |i - y|: [..., SIZE, 1]
    cols = jnp.abs(grid.reshape(lead + (1, SIZE)) - x)  # |j - x|: [..., 1, SIZE]
    square = jnp.maximum(rows, cols) <= scale
    disk = jnp.square(rows) + jnp.square(cols) <= jnp.square(scale)
    bar = scale / 3.0
    plus = ((rows <= scale) & (cols <= bar)) | ((cols <= scale) & (rows <= bar))
    kind = shape[..., None, None]
    image = jnp.where(kind == 0, square, jnp.where(kind == 1, disk, plus))
    return image.astype(jnp.float32)


def all_factors() -> Int[Array, "768 4"]:
    """Every factor combination once, in lexicographic order of (shape, scale, x, y)."""
    return jnp.asarray(list(itertools.product(*(range(n) for n in FACTORS.values()))), jnp.int32)


def sample(key: PRNGKeyArray, num: int) -> dict[str, Array]:
    """`num` images with factors drawn uniformly and independently: `{"images": [num, 20, 20], "factors": [num, 4]}`."""
    keys = jax.random.split(key, len(FACTORS))
    factors = jnp.stack([jax.random.randint(k, (num,), 0, n) for k, n in zip(keys, FACTORS.values())], axis=1)
    return {"images": render(factors), "factors": factors}
