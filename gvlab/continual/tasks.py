"""Task streams on scikit-learn's 8x8 digits (`gvlab.data.digits`, pixels c/16 in [0, 1], flattened to 64).

* Split digits: task t holds classes {2t, 2t+1}, relabelled 0/1 (task-aware, 5 tasks of 2 classes).
* Permuted digits: task t holds all 10 classes under a fixed pixel permutation (task 0 the identity), as in
  permuted MNIST (Goodfellow et al. 2013; the KCL/GKCL benchmark scaled to digits).

Every task has the same array shapes, so one compiled train step serves all of them: training data is class-major
`[T, C, n, 64]` with the first `n` training images of each class; the test set is the fixed 300-image test split,
with a mask of the images that belong to each task and their within-task labels.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from gvlab.data.digits import split_counts
from gvlab.errors import ConfigError

PIXELS = 64


class TaskStream(NamedTuple):
    """A sequence of tasks with equal shapes.

    Attributes:
        train: `[T, C, n, 64]` training images, class-major (image i of class c of task t).
        test_x: `[T, N, 64]` test images as task t sees them.
        test_y: `[T, N]` within-task labels (0 where the image is not in task t).
        test_mask: `[T, N]` True where the image belongs to task t.
    """

    train: Float[Array, "T C n D"]
    test_x: Float[Array, "T N D"]
    test_y: Int[Array, "T N"]
    test_mask: Bool[Array, "T N"]

    @property
    def num_tasks(self) -> int:
        return self.train.shape[0]

    @property
    def num_classes(self) -> int:
        return self.train.shape[1]


def _digits(split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    counts, labels = split_counts(split)
    return counts.reshape(-1, PIXELS).astype(np.float32) / 16.0, labels


def _class_major(images: np.ndarray, labels: np.ndarray, classes: list[int], per_class: int) -> np.ndarray:
    available = min(int(np.sum(labels == c)) for c in classes)
    if per_class > available:
        raise ConfigError(f"train_per_class={per_class} exceeds the {available} training images of the rarest class")
    return np.stack([images[labels == c][:per_class] for c in classes])


def split_digits(train_per_class: int) -> TaskStream:
    """Five tasks of two classes, {0, 1}, {2, 3}, ..., {8, 9}, labels 0/1 within each task."""
    images, labels = _digits("train")
    test_images, test_labels = _digits("test")
    train = np.stack([_class_major(images, labels, [2 * t, 2 * t + 1], train_per_class) for t in range(5)])
    mask = np.stack([test_labels // 2 == t for t in range(5)])
    test_y = np.where(mask, test_labels % 2, 0)
    return TaskStream(jnp.asarray(train), jnp.broadcast_to(jnp.asarray(test_images), (5,) + test_images.shape),
                      jnp.asarray(test_y, jnp.int32), jnp.asarray(mask))


def permutations(key: jax.Array, num_tasks: int) -> Int[Array, "T D"]:
    """Fixed pixel permutations, the identity for task 0 (the usual permuted-MNIST protocol)."""
    keys = jax.random.split(key, num_tasks)
    perms = jax.vmap(lambda k: jax.random.permutation(k, PIXELS))(keys)
    return perms.at[0].set(jnp.arange(PIXELS))


def permuted_digits(key: jax.Array, num_tasks: int, train_per_class: int) -> TaskStream:
    """`num_tasks` tasks of all ten classes, task t's pixels permuted by `permutations(key, T)[t]`."""
    if num_tasks < 1:
        raise ConfigError(f"num_tasks must be >= 1, got {num_tasks}")
    images, labels = _digits("train")
    test_images, test_labels = _digits("test")
    base = jnp.asarray(_class_major(images, labels, list(range(10)), train_per_class))  # [C, n, D]
    perms = permutations(key, num_tasks)
    train = jax.vmap(lambda p: base[..., p])(perms)
    test_x = jax.vmap(lambda p: jnp.asarray(test_images)[:, p])(perms)
    test_y = jnp.broadcast_to(jnp.asarray(test_labels, jnp.int32), (num_tasks, test_labels.shape[0]))
    return TaskStream(train, test_x, test_y, jnp.ones(test_y.shape, bool))
