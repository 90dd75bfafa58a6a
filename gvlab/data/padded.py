"""One convention for data that is not a dense array: pad to a fixed size and carry a boolean mask.

Sequences of different lengths, scenes with different numbers of agents and graphs with different numbers of
nodes all use the same form, `Padded(values, mask)`:

- `values`: `[..., N, F...]`, every example padded to `N` entries along its ragged axis (the axis just after the
  batch axes) with `fill` (0 by default);
- `mask`: `[..., N]` bool, True on real entries. Real entries come first: example b's entries are
  `values[b, :lengths(mask)[b]]`.

Pairwise structure uses the mask's outer product (`pair_mask`): a graph's dense adjacency `[B, N, N]` or an
agents' interaction matrix is read only where both ends are real. Time series keep time as the ragged axis.
Masks, not segment ids, because every model in gvlab is vmapped over examples: a fixed `N` per batch keeps one
compiled program, and a mask composes with `vmap` where segment ids would need a per-batch segment count.

Every reduction over the ragged axis goes through the masked functions below, so padding can never leak into a
loss; a test checks that each model's loss on a padded batch equals the mean of its losses on the unpadded
examples one by one (`tests/test_padded.py` for the functions here).

`Padded` is a NamedTuple, hence a pytree: it passes through `jit`, `vmap`, `fit`'s data sources and checkpoints.

    >>> batch = pad([np.ones((2, 3)), np.ones((4, 3))])
    >>> batch.values.shape, batch.mask.tolist()
    ((2, 4, 3), [[True, True, False, False], [True, True, True, True]])
    >>> float(masked_mean(batch.values[..., 0], batch.mask).sum())
    2.0
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from gvlab.errors import ConfigError


class Padded(NamedTuple):
    """Examples padded along their ragged axis; `mask` is True on real entries (which come first)."""

    values: Array
    mask: Bool[Array, "*batch n"]


def pad(examples: Sequence[np.ndarray], size: int | None = None, fill: float = 0.0) -> Padded:
    """Stack variable-length examples `[n_b, F...]` into `Padded([B, size, F...], [B, size])` (host-side, NumPy).

    Args:
        examples: arrays sharing their trailing shape and dtype; the first axis is the ragged one.
        size: the padded length; default the longest example. Longer examples are an error, never truncated.
        fill: the value written beyond each example's length.
    """
    if not len(examples):
        raise ConfigError("pad needs at least one example")
    arrays = [np.asarray(e) for e in examples]
    trailing = {a.shape[1:] for a in arrays}
    if len(trailing) != 1 or any(a.ndim == 0 for a in arrays):
        raise ConfigError(f"examples must be arrays [n, ...] with one trailing shape, got {sorted(trailing)}")
    lengths = np.array([len(a) for a in arrays])
    size = int(lengths.max()) if size is None else int(size)
    if lengths.max() > size:
        raise ConfigError(f"an example has {lengths.max()} entries, more than size={size}; raise size")
    values = np.full((len(arrays), size, *trailing.pop()), fill, dtype=np.result_type(*arrays))
    for b, a in enumerate(arrays):
        values[b, :len(a)] = a
    return Padded(values, np.arange(size)[None, :] < lengths[:, None])


def unpad(batch: Padded) -> list[np.ndarray]:
    """The real entries of each example, as a list (host-side inverse of `pad`)."""
    values, mask = np.asarray(batch.values), np.asarray(batch.mask)
    return [values[b, :n] for b, n in enumerate(mask.sum(-1))]


def lengths(mask: Bool[Array, "*batch n"]) -> Array:
    """Number of real entries per example."""
    return jnp.sum(mask, axis=-1)


def pair_mask(mask: Bool[Array, "*batch n"]) -> Bool[Array, "*batch n n"]:
    """True where both ends of a pair are real: the mask of an adjacency or interaction matrix."""
    return mask[..., :, None] & mask[..., None, :]


def _broadcast(mask: Array, x: Array) -> Array:
    """The mask `[..., N]` broadcast against `x` `[..., N, F...]` (features trail the ragged axis)."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def masked_sum(x: Float[Array, "*batch n ..."], mask: Bool[Array, "*batch n"]) -> Array:
    """Sum over the ragged axis of the real entries only: `sum_i m_i x_i`."""
    return jnp.sum(jnp.where(_broadcast(mask, x), x, 0.0), axis=mask.ndim - 1)


def masked_mean(x: Float[Array, "*batch n ..."], mask: Bool[Array, "*batch n"]) -> Array:
    """Mean over the ragged axis of the real entries: `sum_i m_i x_i / max(1, sum_i m_i)` (0 for an empty example)."""
    total = masked_sum(x, mask)  # a jax array in JAX's dtype (float64 NumPy input becomes float32 without x64)
    count = jnp.maximum(lengths(mask), 1).astype(total.dtype)
    return total / count.reshape(count.shape + (1,) * (x.ndim - mask.ndim))


def masked_max(x: Float[Array, "*batch n ..."], mask: Bool[Array, "*batch n"]) -> Array:
    """Max over the ragged axis of the real entries (-inf for an empty example)."""
    return jnp.max(jnp.where(_broadcast(mask, x), x, -jnp.inf), axis=mask.ndim - 1)


def masked_softmax(logits: Float[Array, "... n"], mask: Bool[Array, "... n"]) -> Float[Array, "... n"]:
    """Softmax over the last axis restricted to real entries; padded entries get exactly 0.

    `mask` broadcasts against `logits` (e.g. `pair_mask(m)` for attention `[B, N, N]`). A row with no real entry
    gives zeros rather than NaN, so an empty example's gradient stays finite.
    """
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, axis=-1, keepdims=True)
    weights = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), jnp.finfo(weights.dtype).tiny)


def mean_over_examples(per_entry: Float[Array, "b n"], mask: Bool[Array, "b n"]) -> Float[Array, ""]:
    """A batch loss that equals the mean of per-example means: `mean_b masked_mean(per_entry_b, mask_b)`.

    Every example weighs the same whatever its length, so the padded batch's loss is the mean of the losses of the
    unpadded examples computed one by one (not a mean over all real entries, which would weigh long examples more).
    """
    return jnp.mean(masked_mean(per_entry, mask))

