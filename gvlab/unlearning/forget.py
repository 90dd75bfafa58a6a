"""Forget sets and the paired (remaining, forgotten) mini-batches of unlearning.

A forget set is a boolean mask over the training set: `class_forget_mask` (every example of one class, the "class
removal" task of Shen et al. 2024, `Data.py::class_data` with a one-hot distribution) or `random_forget_mask`
(exactly `round(fraction N)` examples drawn uniformly without replacement, the "random removal" task; the official
`class_data` draws random per-class fractions, a uniform draw is the label-free version of it).

Several forget sets of different sizes become members of one compiled fit through padded index lists
(`padded_indices`): each member stores the indices of its D_r and D_f padded to a common length plus their true
counts, and `paired_batches` draws a batch from each (uniformly, with replacement) as a pure function of
`(key, step)`. Padding never enters a batch, since indices are drawn below the member's count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.errors import ConfigError
from gvlab.types import Batch, DataSource, PRNGKey


def class_forget_mask(labels: np.ndarray, forget_class: int) -> np.ndarray:
    """`bool [N]`: the examples whose label is `forget_class` (class removal)."""
    labels = np.asarray(labels)
    if not np.any(labels == forget_class):
        raise ConfigError(f"no training example has label {forget_class}")
    return labels == forget_class


def random_forget_mask(num_examples: int, fraction: float, seed: int) -> np.ndarray:
    """`bool [N]` with exactly `round(fraction * N)` entries set, drawn uniformly without replacement (numpy `seed`)."""
    return subset_mask(np.ones(num_examples, bool), fraction, seed)


def subset_mask(mask: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`bool [N]`: exactly `round(fraction * mask.sum())` of the set entries of `mask`, drawn uniformly without
    replacement (numpy `seed`): a random forget set, or the labelled share of D_r that LAF+R may use."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the subset fraction must lie in (0, 1), got {fraction}")
    found = np.flatnonzero(mask)
    count = int(round(fraction * found.size))
    if count < 1:
        raise ConfigError(f"fraction {fraction} of {found.size} examples selects nothing")
    chosen = np.random.default_rng(seed).choice(found, size=count, replace=False)
    out = np.zeros(np.shape(mask), bool)
    out[chosen] = True
    return out


def padded_indices(masks: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The set entries of each mask as index lists padded to one length.

    Args:
        masks: `bool [M, N]`, one subset per member.
        length: the padded length (default: the largest subset).

    Returns:
        `(index int32 [M, length], count int32 [M])`: row m starts with the sorted indices of mask m, then
        repeats its first index (never drawn by `draw`). An empty subset has count 0 and index 0 everywhere: its
        draws are example 0, for members whose objective never reads them (the original model's empty D_f).
    """
    masks = np.asarray(masks, bool)
    counts = masks.sum(axis=1)
    length = max(int(counts.max()), 1) if length is None else length
    if counts.max() > length:
        raise ConfigError(f"a subset has {counts.max()} examples, more than the padded length {length}")
    index = np.zeros((masks.shape[0], length), np.int32)
    for m, mask in enumerate(masks):
        found = np.flatnonzero(mask)
        index[m, : found.size] = found
        index[m, found.size:] = found[0] if found.size else 0
    return index, counts.astype(np.int32)


def draw(index: jax.Array, count: jax.Array, key: PRNGKey, batch_size: int) -> jax.Array:
    """`int32 [batch_size]`: dataset indices drawn uniformly (with replacement) from the first `count` of `index`."""
    position = jax.random.randint(key, (batch_size,), 0, count)
    return jnp.take(index, position)


def member_arrays(x: np.ndarray, y: np.ndarray, forget_masks: np.ndarray,
                  remain_masks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The per-member arrays of `paired_batches`: the training set repeated per member with each member's D_r and
    D_f index lists, padded to N so that any members' arrays concatenate (`forget_masks`: `bool [M, N]`; D_r is
    the complement unless `remain_masks` names another subset, e.g. the labelled share of D_r)."""
    forget_masks = np.asarray(forget_masks, bool)
    remain_masks = ~forget_masks if remain_masks is None else np.asarray(remain_masks, bool)
    m, n = forget_masks.shape
    remain_index, remain_count = padded_indices(remain_masks, n)
    forget_index, forget_count = padded_indices(forget_masks, n)
    return {"x": np.broadcast_to(x, (m,) + x.shape).copy(), "y": np.broadcast_to(y, (m,) + y.shape).copy(),
            "remain_index": remain_index, "remain_count": remain_count,
            "forget_index": forget_index, "forget_count": forget_count}


def paired_batches(arrays: dict, batch_size: int, forget_batch_size: int | None = None) -> DataSource:
    """Per-member paired batches `{"x_r", "y_r", "x_f", "y_f", "x_all"}` from D_r, D_f and the whole training set.

    The official loop zips the forget and remaining loaders (`VUnlearning.py::extractor_unlearning`), so every step
    sees one batch of each; here both are drawn uniformly with replacement from the member's subsets. `x_all`
    (`batch_size` draws from all N examples) is what LAF's VAE_s trains on (`LAF.ipynb`: `loaders['train']`).
    """
    forget_batch_size = forget_batch_size or batch_size

    def batch(arrays: dict, key: PRNGKey, step: jax.Array) -> Batch:
        remain_key, forget_key, all_key = jax.random.split(jax.random.fold_in(key, step), 3)
        r = draw(arrays["remain_index"], arrays["remain_count"], remain_key, batch_size)
        f = draw(arrays["forget_index"], arrays["forget_count"], forget_key, forget_batch_size)
        a = jax.random.randint(all_key, (batch_size,), 0, arrays["x"].shape[0])
        return {"x_r": arrays["x"][r], "y_r": arrays["y"][r], "x_f": arrays["x"][f], "y_f": arrays["y"][f],
                "x_all": arrays["x"][a]}

    return DataSource(arrays=arrays, batch=batch, per_member=True)


def remaining_batches(arrays: dict, batch_size: int) -> DataSource:
    """Per-member batches `{"x", "y"}` from D_r only: what retraining and fine-tuning see."""
    paired = paired_batches(arrays, batch_size, forget_batch_size=1)

    def batch(arrays: dict, key: PRNGKey, step: jax.Array) -> Batch:
        out = paired.batch(arrays, key, step)
        return {"x": out["x_r"], "y": out["y_r"]}

    return DataSource(arrays=arrays, batch=batch, per_member=True)
