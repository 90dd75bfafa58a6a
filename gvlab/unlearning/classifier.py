"""The classifier f = h . g_e of unlearning and its supervised objectives: training, retraining, fine-tuning,
NegGrad+ and the head-only repair of LAF+R.

The model follows the official CNN's split (`Model.py::CNN`): an extractor g_e whose last layer is linear (the
"embedding" e, like `fc1`) and a linear head h (`fc2`, two stacked linear layers there, one here). Parameters are
`{"extractor": ..., "head": ...}`, so unlearning steps can touch one part only.

Objectives (mean cross-entropy CE over a batch):
* `cross_entropy`: CE(f(x), y) on `{"x", "y"}`: the original model (all data), retraining (D_r, from scratch: the
  oracle) and fine-tuning (D_r, warm-started from the original).
* `neggrad_plus`: beta CE(D_r) - (1 - beta) CE(D_f) on paired batches (Kurmanji et al. 2023, "Towards Unbounded
  Machine Unlearning", Sec. 4 NegGrad+): descent on the remaining data, ascent on the forgotten data.
* LAF+R's repair of the head alone (`VUnlearning.py::classifier_unlearning`: Adam on `fc2` only) is
  `neggrad_plus` with beta = 1 and the extractor's gradient switched off (`args`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from gvlab.config import check_sizes
from gvlab.errors import ConfigError
from gvlab.nn import MLP
from gvlab.types import Batch, Method, Params, PRNGKey


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Classifier architecture.

    Attributes:
        hidden: widths of the extractor's hidden layers (ReLU).
        embed_dim: dimension of the embedding e = g_e(x) (the extractor's linear output layer).
        num_classes: outputs of the linear head.
    """

    hidden: tuple[int, ...] = (128,)
    embed_dim: int = 64
    num_classes: int = 10

    def __post_init__(self):
        check_sizes(self, "hidden", "embed_dim", "num_classes")


class Classifier(NamedTuple):
    """Pure functions of the classifier. `x` is `[B, ...]` (flattened inside)."""

    init: Callable[[PRNGKey, Batch], Params]
    embed: Callable[[Params, jax.Array], jax.Array]  # extractor params, x -> e [B, embed_dim]
    head: Callable[[Params, jax.Array], jax.Array]  # head params, e -> logits [B, C]
    logits: Callable[[Params, jax.Array], jax.Array]  # classifier params, x -> logits [B, C]


def make_classifier(cfg: Config) -> Classifier:
    extractor = MLP(tuple(cfg.hidden) + (cfg.embed_dim,))
    head_net = MLP((cfg.num_classes,))

    def flat(x):
        return x.reshape(x.shape[0], -1)

    def init(key: PRNGKey, batch: Batch) -> Params:
        extractor_key, head_key = jax.random.split(key)
        x = flat(batch["x"][:1] if "x" in batch else batch["x_r"][:1])
        return {"extractor": extractor.init(extractor_key, x),
                "head": head_net.init(head_key, jnp.zeros((1, cfg.embed_dim), x.dtype))}

    def embed(extractor_params: Params, x: jax.Array) -> jax.Array:
        return extractor.apply(extractor_params, flat(x))

    def head(head_params: Params, e: jax.Array) -> jax.Array:
        return head_net.apply(head_params, e)

    def logits(params: Params, x: jax.Array) -> jax.Array:
        return head(params["head"], embed(params["extractor"], x))

    return Classifier(init=init, embed=embed, head=head, logits=logits)


def mean_cross_entropy(logits: Float[Array, "B C"], labels: Int[Array, " B"]) -> Float[Array, ""]:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def cross_entropy(classifier: Classifier) -> Method:
    """CE(f(x), y) on batches `{"x", "y"}`; reports `ce/loss` and `ce/accuracy`."""

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        del key, step
        out = classifier.logits(params, batch["x"])
        value = mean_cross_entropy(out, batch["y"])
        return value, {"ce/loss": value, "ce/accuracy": jnp.mean(jnp.argmax(out, -1) == batch["y"])}

    return Method(init=classifier.init, loss=loss)


def neggrad_plus_loss(logits_r: Float[Array, "Br C"], y_r: Int[Array, " Br"], logits_f: Float[Array, "Bf C"],
                      y_f: Int[Array, " Bf"], beta: float | jax.Array) -> Float[Array, ""]:
    """beta CE(D_r batch) - (1 - beta) CE(D_f batch) (Kurmanji et al. 2023, NegGrad+)."""
    return beta * mean_cross_entropy(logits_r, y_r) - (1.0 - beta) * mean_cross_entropy(logits_f, y_f)


def neggrad_plus(classifier: Classifier, beta: float) -> Method:
    """NegGrad+ on paired batches `{"x_r", "y_r", "x_f", "y_f"}`; reports both cross-entropies.

    The loss also takes `args={"beta": b, "train_extractor": t}` (a fit's `Spec.args`, one value per member): run
    r uses its own b, and t = 0 stops the gradient into the extractor (with Adam a zero gradient is an exactly zero
    update), so fine-tuning on D_r (b = 1), NegGrad+ and LAF+R's head-only repair (b = 1, t = 0, on labelled D_r
    examples; `VUnlearning.py::classifier_unlearning` trains `fc2` only) are members of one program.
    """
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"NegGrad+ weight beta must lie in [0, 1], got {beta}")

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: dict | None = None):
        del key, step
        weight = beta if args is None else args["beta"]
        if args is not None:  # t in {0, 1}: the extractor's gradient times t
            t = args["train_extractor"]
            params = {**params, "extractor": jax.tree.map(lambda p: t * p + (1.0 - t) * jax.lax.stop_gradient(p),
                                                          params["extractor"])}
        logits_r = classifier.logits(params, batch["x_r"])
        logits_f = classifier.logits(params, batch["x_f"])
        value = neggrad_plus_loss(logits_r, batch["y_r"], logits_f, batch["y_f"], weight)
        return value, {"neggrad/ce_remain": mean_cross_entropy(logits_r, batch["y_r"]),
                       "neggrad/ce_forget": mean_cross_entropy(logits_f, batch["y_f"])}

    return Method(init=classifier.init, loss=loss)
