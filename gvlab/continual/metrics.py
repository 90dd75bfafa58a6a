"""Continual-learning metrics from an accuracy matrix R[i, j] = accuracy on task j after training task i
(Lopez-Paz & Ranzato, NeurIPS 2017, Sec. 4), and memory in floats.

    ACC = (1/T) sum_j R[T-1, j]                          average accuracy after the last task
    BWT = (1/(T-1)) sum_{j<T-1} (R[T-1, j] - R[j, j])    backward transfer (< 0: forgetting)

Leading axes (seeds) broadcast; the last two axes are [i, j].

Examples:
    >>> import numpy as np
    >>> r = np.array([[0.9, 0.1], [0.7, 0.8]])
    >>> float(average_accuracy(r)), round(float(backward_transfer(r)), 6)
    (0.75, -0.2)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def average_accuracy(accuracy: Float[Array, "... T T"]) -> Float[Array, "..."]:
    """ACC: mean accuracy over all tasks after training the last one."""
    return jnp.mean(accuracy[..., -1, :], axis=-1)


def backward_transfer(accuracy: Float[Array, "... T T"]) -> Float[Array, "..."]:
    """BWT: mean change of each earlier task's accuracy from just after it was learned to the end."""
    num_tasks = accuracy.shape[-1]
    if num_tasks < 2:
        raise ValueError("backward transfer needs at least two tasks")
    diagonal = jnp.diagonal(accuracy, axis1=-2, axis2=-1)
    return jnp.mean(accuracy[..., -1, :-1] - diagonal[..., :-1], axis=-1)


def accuracy_after_each_task(accuracy: Float[Array, "... T T"]) -> Float[Array, "... T"]:
    """Mean accuracy over the tasks seen so far, (1/(i+1)) sum_{j<=i} R[i, j], for each i."""
    accuracy = jnp.asarray(accuracy)  # numpy float64 in: JAX's float (float32 unless x64 is on), without a warning
    num_tasks = accuracy.shape[-1]
    seen = jnp.broadcast_to(jnp.tril(jnp.ones((num_tasks, num_tasks), accuracy.dtype)), accuracy.shape)
    counts = jnp.arange(1, num_tasks + 1, dtype=accuracy.dtype)
    return jnp.sum(accuracy * seen, axis=-1) / jnp.broadcast_to(counts, accuracy.shape[:-1])


def count_floats(tree) -> int:
    """Number of floating-point numbers in a pytree (a model's parameters or a stored coreset)."""
    return int(sum(x.size for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)))
