"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 17 grey levels, 10 classes): real data, offline.

The file ships inside scikit-learn (`sklearn/datasets/data/digits.csv.gz`); it is read directly, which avoids
importing `sklearn.datasets` (over a second) and never touches the network. The train/test split is fixed
(a permutation from numpy seed 0; 1497 train, 300 test images), so every experiment tests on the same images.

Representations of the pixel counts c in {0..16}:
* `"binary"`: 1 where c >= 8, for Bernoulli likelihoods (deterministic, so test log-likelihoods are exact);
* `"unit"`: c / 16 in [0, 1];
* `"dequantized"`: (c + u) / 17 with u ~ U(0, 1), a continuous density on [0, 1]^64 for Gaussian likelihoods
  (fresh noise per training step via `dequantize`; a fixed draw for evaluation).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Representation = Literal["binary", "unit", "dequantized"]
NUM_TEST = 300
IMAGE_SHAPE = (8, 8)
LEVELS = 17  # grey levels 0..16


@functools.cache
def load_counts() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as pixel counts `uint8 [1797, 8, 8]` and labels `int32 [1797]`."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.exists():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        images, labels = table[:, :-1], table[:, -1]
    else:  # layout changed in a future scikit-learn: use its loader (still offline)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.data.astype(np.int64), bunch.target
    return images.reshape(-1, *IMAGE_SHAPE).astype(np.uint8), labels.astype(np.int32)


@functools.cache
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(0).permutation(len(load_counts()[1]))
    return np.sort(order[NUM_TEST:]), np.sort(order[:NUM_TEST])


def split_counts(split: Literal["train", "test", "all"]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts and labels of one split."""
    images, labels = load_counts()
    if split == "all":
        return images, labels
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    index = _split_indices()[0 if split == "train" else 1]
    return images[index], labels[index]


def to_representation(counts: np.ndarray, representation: Representation,
                      key: jax.Array | None = None) -> jax.Array:
    """Pixel counts -> float32 images `[..., 8, 8]` in the given representation (`key` for dequantisation)."""
    counts = jnp.asarray(counts, jnp.float32)
    if representation == "binary":
        return (counts >= 8.0).astype(jnp.float32)
    if representation == "unit":
        return counts / 16.0
    if representation == "dequantized":
        if key is None:
            raise ValueError("dequantized digits need a key for the uniform noise")
        return dequantize(counts, key)
    raise ValueError(f"unknown representation {representation!r}; use binary, unit or dequantized")


def dequantize(counts: jax.Array, key: jax.Array) -> jax.Array:
    """(c + u) / 17, u ~ U(0, 1): maps the 17 levels onto [0, 1] so that a density there bounds their log-mass.

    log P(c) >= E_u[log p((c + u) / 17)] - D log 17 for D pixels (Theis et al. 2016, Eq. 4, scaled to [0, 1]).
    """
    noise = jax.random.uniform(key, counts.shape, jnp.float32)
    return (counts + noise) / LEVELS


def digits(split: Literal["train", "test", "all"], representation: Representation = "binary",
           key: jax.Array | None = None) -> dict[str, jax.Array]:
    """`{"x": float32 [N, 8, 8], "y": int32 [N]}` for one split.

    For `"dequantized"` the noise is drawn from `key` (default: a fixed key, so test sets are reproducible);
    training code should re-draw it per step with `dequantize` on the counts instead.
    """
    counts, labels = split_counts(split)
    if representation == "dequantized" and key is None:
        key = jax.random.key(0)
    return {"x": to_representation(counts, representation, key), "y": jnp.asarray(labels)}
