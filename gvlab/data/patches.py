"""Small greyscale images in [0, 1] for lensless-imaging experiments: upsampled digits mixed with natural patches.

The LensNet mini-experiment's data (`inverse/lensnet`; Bai et al. 2025 train on real lensless captures, which
cannot be had offline). Half of each set are scikit-learn's 8x8 digits resized to `size x size` (order-1, i.e.
bilinear, `skimage.transform.resize`; x4 for the default 32), half are random `size x size` crops of
scikit-image's bundled photographs converted to grey (`camera`, `astronaut`, `coffee`, `chelsea`, `rocket`;
shipped inside the package, never downloaded). The two kinds are interleaved in a random order.

The train/test split is deterministic and disjoint: digits follow `gvlab.data.digits`'s fixed split (1497 / 300),
and crops come from the left 3/4 of every photograph for `"train"` and the right 1/4 for `"test"`, so no test
pixel is seen in training while both splits share the photographs' statistics.

`image_patches(key, num, split, size)` is a pure, jittable function of the key (sources are prepared once on the
host and cached). `photo_patches(key, num, split, size)` draws only the photograph crops (same photographs, same
split; natural-image statistics for compression, `compression/mcquic`).

    >>> x = image_patches(jax.random.key(0), 8, "train")
    >>> x.shape, x.dtype, bool(x.min() >= 0.0) and bool(x.max() <= 1.0)
    ((8, 32, 32), dtype('float32'), True)
    >>> bool(jnp.all(image_patches(jax.random.key(0), 8, "train") == x))
    True
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.data import digits as digits_lib
from gvlab.errors import ConfigError

PHOTOGRAPHS = ("camera", "astronaut", "coffee", "chelsea", "rocket")
TRAIN_FRACTION = 0.75  # of each photograph's width, from the left
Split = Literal["train", "test"]


def check_size(size: int) -> None:
    """Raise `ConfigError` unless 8 <= size <= 96 and size is a multiple of 8 (an integer digit upsampling)."""
    if not isinstance(size, (int, np.integer)) or size < 8 or size % 8 or size > 96:
        raise ConfigError(f"patch size must be a multiple of 8 between 8 and 96 (digits are 8x8 and upsampled by an "
                          f"integer factor; photograph test regions are >= 112 pixels wide), got {size!r}")


@functools.cache
def _grey_photographs() -> tuple[np.ndarray, ...]:
    """The bundled photographs as float32 grey images in [0, 1] (luminance of `skimage.color.rgb2gray`)."""
    import skimage.color
    import skimage.data

    out = []
    for name in PHOTOGRAPHS:
        image = getattr(skimage.data, name)()
        grey = skimage.color.rgb2gray(image) if image.ndim == 3 else image / 255.0
        out.append(np.clip(grey, 0.0, 1.0).astype(np.float32))
    return tuple(out)


@functools.cache
def _photo_regions(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The split's photograph regions zero-padded to one stack [P, Hmax, Wmax], and their sizes [P, 2]."""
    regions = []
    for photo in _grey_photographs():
        cut = int(TRAIN_FRACTION * photo.shape[1])
        regions.append(photo[:, :cut] if split == "train" else photo[:, cut:])
    height = max(r.shape[0] for r in regions)
    width = max(r.shape[1] for r in regions)
    stack = np.zeros((len(regions), height, width), np.float32)
    for i, r in enumerate(regions):
        stack[i, : r.shape[0], : r.shape[1]] = r
    return stack, np.array([r.shape for r in regions], np.int32)


@functools.cache
def _digits(split: Split, size: int) -> np.ndarray:
    """The split's digits resized to [N, size, size] (bilinear), in [0, 1]."""
    import skimage.transform

    counts, _ = digits_lib.split_counts(split)
    # One call on the stack: scale 1 along the example axis leaves it untouched (equal to resizing one by one).
    digit_images = skimage.transform.resize(counts / 16.0, (len(counts), size, size), order=1)
    return np.clip(digit_images, 0.0, 1.0).astype(np.float32)


def _check_request(num, split, size) -> None:
    """Raise `ConfigError` for a bad size (`check_size`), split or count."""
    check_size(size)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ConfigError(f"num must be a positive int, got {num!r}")


def image_patches(key: PRNGKeyArray, num: int, split: Split = "train", size: int = 32) -> Float[Array, "num size size"]:
    """`num` images `[num, size, size]` in [0, 1]: num // 2 upsampled digits and the rest photograph crops, shuffled.

    Args:
        key: the only source of randomness (which digits, which crops, the order).
        num: number of images (>= 1).
        split: `"train"` or `"test"` (disjoint sources; module docstring).
        size: side length, a multiple of 8 in [8, 96].

    Raises:
        ConfigError: bad `num`, `split` or `size`.
    """
    _check_request(num, split, size)
    digit_images, (photos, shapes) = _digits(split, size), _photo_regions(split)
    return _draw(key, jnp.asarray(digit_images), jnp.asarray(photos), jnp.asarray(shapes), int(num), size)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _draw(key, digit_images, photos, shapes, num: int, size: int):
    digit_key, photo_key, row_key, col_key, order_key = jax.random.split(key, 5)
    num_digits = num // 2
    num_crops = num - num_digits
    chosen_digits = digit_images[jax.random.randint(digit_key, (num_digits,), 0, digit_images.shape[0])]
    crops = _crops(photo_key, row_key, col_key, photos, shapes, num_crops, size)
    images = jnp.concatenate([chosen_digits, crops], axis=0)
    return images[jax.random.permutation(order_key, num)]


def _crops(photo_key, row_key, col_key, photos, shapes, num: int, size: int):
    """`num` crops: a photograph region chosen uniformly, then a uniform top-left corner inside it (its own height
    and width, not the padded stack's)."""
    which = jax.random.randint(photo_key, (num,), 0, photos.shape[0])
    top = jnp.floor(jax.random.uniform(row_key, (num,)) * (shapes[which, 0] - size + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(col_key, (num,)) * (shapes[which, 1] - size + 1)).astype(jnp.int32)
    return jax.vmap(lambda i, r, c: jax.lax.dynamic_slice(photos[i], (r, c), (size, size)))(which, top, left)


def photo_patches(key: PRNGKeyArray, num: int, split: Split = "train", size: int = 32) -> Float[Array, "num size size"]:
    """`num` random `size x size` crops in [0, 1] of the bundled photographs only (no digits): the photograph half
    of `image_patches`, with the same disjoint split (left 3/4 of each photograph for "train", right 1/4 for
    "test"). Pure in `key`.

    Raises:
        ConfigError: bad `num`, `split` or `size`.
    """
    _check_request(num, split, size)
    photos, shapes = _photo_regions(split)
    return _draw_photos(key, jnp.asarray(photos), jnp.asarray(shapes), int(num), size)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _draw_photos(key, photos, shapes, num: int, size: int):
    return _crops(*jax.random.split(key, 3), photos, shapes, num, size)
