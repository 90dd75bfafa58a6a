"""The classifier an input-filter defence protects: an MLP trained with softmax cross-entropy on clean data.

loss = -(1/B) sum_b log softmax(f(x_b))_{y_b}. Batches hold `"x"` ([B, *image], any values) and `"y"` (int [B]).
`make_classifier` returns the Method and the `predict(params, x) -> logits [B, C]` that attacks and evaluators use.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gvlab.nn import MLP
from gvlab.types import Batch, Method, Params, PRNGKey


def make_classifier(hidden: tuple[int, ...], num_classes: int, activation: str = "relu"
                    ) -> tuple[Method, Callable[[Params, jax.Array], jax.Array]]:
    """(Method, predict) of an MLP `pixels -> hidden -> num_classes` on flattened inputs."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    net = MLP(tuple(hidden) + (num_classes,), activation)

    def predict(params: Params, x: jax.Array) -> jax.Array:
        return net.apply(params, x.reshape(x.shape[0], -1))

    def init(key: PRNGKey, batch: Batch) -> Params:
        return net.init(key, batch["x"][:1].reshape(1, -1))

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        del key, step
        logits = predict(params, batch["x"])
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
        return ce, {"classifier/ce": ce, "classifier/accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

    return Method(init=init, loss=loss), predict
