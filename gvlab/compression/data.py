"""Photograph-only grey patches for compression: random crops of scikit-image's bundled photographs.

`gvlab.data.patches.image_patches` mixes upsampled digits with photograph crops (for lensless imaging); the
compression experiment wants natural-image statistics only, so this draws crops from the same photographs with the
same disjoint split (left 3/4 of each photograph for "train", right 1/4 for "test"; `gvlab.data.patches`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.data import patches
from gvlab.errors import ConfigError


def photo_patches(key: PRNGKeyArray, num: int, split: str = "train", size: int = 32) -> Float[Array, "num size size"]:
    """`num` uniform random `size x size` crops in [0, 1] of the bundled photographs' `split` regions (a
    photograph chosen uniformly, then a uniform top-left corner inside its region). Pure in `key`."""
    patches.check_size(size)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ConfigError(f"num must be a positive int, got {num!r}")
    _, photos, shapes = patches._sources(split, size)  # the photograph regions of `image_patches`' split
    return _crops(key, jnp.asarray(photos), jnp.asarray(shapes), int(num), size)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _crops(key, photos, shapes, num: int, size: int):
    photo_key, row_key, col_key = jax.random.split(key, 3)
    which = jax.random.randint(photo_key, (num,), 0, photos.shape[0])
    top = jnp.floor(jax.random.uniform(row_key, (num,)) * (shapes[which, 0] - size + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(col_key, (num,)) * (shapes[which, 1] - size + 1)).astype(jnp.int32)
    return jax.vmap(lambda i, r, c: jax.lax.dynamic_slice(photos[i], (r, c), (size, size)))(which, top, left)
