"""Data sources whose batches are a pure function of `(key, step)`.

`epoch_batches` walks a finite dataset in epochs: epoch `e = step // steps_per_epoch` uses the permutation drawn
from `fold_in(perm_key, e)` and step t takes its slice `t % steps_per_epoch`. Resuming at step t therefore needs
nothing but t. The remainder of each epoch (n mod batch_size examples) is skipped, a different remainder per epoch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gvlab.errors import ConfigError
from gvlab.types import Batch, DataSource, PRNGKey


def epoch_batches(arrays: Any, batch_size: int,
                  transform: Callable[[Batch, PRNGKey], Batch] | None = None, *, per_member: bool = False
                  ) -> DataSource:
    """Shuffled minibatches of a finite dataset, one epoch after another.

    Args:
        arrays: a pytree of arrays sharing their leading (example) axis, e.g. `{"x": X, "y": y}`; with
            `per_member`, leaves are [M, N, ...]: one dataset of N examples per member of the fit.
        batch_size: examples per batch; at most the dataset size.
        transform: optional `(batch, key) -> batch` applied on device with a per-step key (e.g. dequantisation
            noise or augmentation).
        per_member: each member of the fit walks its own dataset (`DataSource.per_member`).

    Returns:
        A `DataSource` whose `batch(arrays, key, step)` is pure and jittable.
    """
    sizes = {x.shape[1 if per_member else 0] for x in jax.tree.leaves(arrays)}
    if len(sizes) != 1:
        raise ValueError(f"arrays must share their leading axis, got sizes {sorted(sizes)}")
    num_examples = sizes.pop()
    if not 1 <= batch_size <= num_examples:
        raise ConfigError(f"train.batch_size={batch_size} must be between 1 and the dataset size {num_examples}")
    steps_per_epoch = num_examples // batch_size

    def batch(arrays: Any, key: PRNGKey, step: jax.Array) -> Batch:
        perm_key, transform_key = jax.random.split(key)
        epoch, position = jnp.divmod(step, steps_per_epoch)
        order = jax.random.permutation(jax.random.fold_in(perm_key, epoch), num_examples)
        index = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
        out = jax.tree.map(lambda a: jnp.take(a, index, axis=0), arrays)
        if transform is not None:
            out = transform(out, jax.random.fold_in(transform_key, step))
        return out

    return DataSource(arrays=arrays, batch=batch, per_member=per_member)


def sampled_batches(sample: Callable[[PRNGKey], Batch]) -> DataSource:
    """Fresh synthetic data each step: `batch = sample(fold_in(key, step))`."""

    def batch(arrays: Any, key: PRNGKey, step: jax.Array) -> Batch:
        del arrays
        return sample(jax.random.fold_in(key, step))

    return DataSource(arrays={}, batch=batch)
