"""Digits with attribute vectors: the one-hot class plus two binary attributes derived from the pixels.

The attribute-conditioned generation study (Debbagh 2023, after Sohn et al. 2015) at 8x8 scale: a = [one-hot
class (10), heavy ink, wide], where, with thresholds taken per class on the *training* split,

    heavy ink: total intensity sum_ij c_ij above the class median,
    wide:      horizontal extent (last - first inked column + 1, a column being inked when some pixel >= 8 of
               16 grey levels) above the class median.

"Above" is strict, so ties at the median count as 0 and the classes are not exactly balanced.

    >>> counts, labels = split_counts("train")
    >>> attributes(counts, labels, *thresholds()).shape
    (1497, 12)
"""

from __future__ import annotations

import functools

import numpy as np

from gvlab.data.digits import split_counts

NUM_CLASSES = 10
NAMES = tuple(f"digit {k}" for k in range(NUM_CLASSES)) + ("heavy ink", "wide")
INK_LEVEL = 8  # of 16: a pixel this dark counts as ink for the width


def total_ink(counts: np.ndarray) -> np.ndarray:
    """Sum of grey levels per image `[N]`."""
    return counts.reshape(len(counts), -1).sum(axis=1).astype(np.float64)


def width(counts: np.ndarray) -> np.ndarray:
    """Horizontal extent in columns `[N]` (0 for an image with no inked pixel)."""
    inked = (counts >= INK_LEVEL).any(axis=1)  # [N, 8] columns
    first = np.argmax(inked, axis=1)
    last = inked.shape[1] - 1 - np.argmax(inked[:, ::-1], axis=1)
    return np.where(inked.any(axis=1), last - first + 1, 0).astype(np.float64)


@functools.cache
def thresholds() -> tuple[np.ndarray, np.ndarray]:
    """Per-class medians of (total ink, width) on the training split, `([10], [10])`."""
    counts, labels = split_counts("train")
    ink, wide = total_ink(counts), width(counts)
    return (np.array([np.median(ink[labels == k]) for k in range(NUM_CLASSES)]),
            np.array([np.median(wide[labels == k]) for k in range(NUM_CLASSES)]))


def attributes(counts: np.ndarray, labels: np.ndarray, ink_median: np.ndarray, width_median: np.ndarray
               ) -> np.ndarray:
    """`float32 [N, 12]`: one-hot class, heavy ink, wide."""
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    heavy = (total_ink(counts) > ink_median[labels]).astype(np.float32)
    wide = (width(counts) > width_median[labels]).astype(np.float32)
    return np.concatenate([onehot, heavy[:, None], wide[:, None]], axis=1)
