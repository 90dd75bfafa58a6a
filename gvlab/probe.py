"""Linear probes: multinomial logistic regression fitted in JAX, for downstream and fidelity evaluations.

    minimise  (1/N) sum_n -log softmax(x_n W + b)_{y_n} + (l2 / 2) |W|^2

on standardised features (mean and scale of the training inputs, stored with the weights; or the raw features),
full batch, by L-BFGS with a zoom line search (optax) in one `lax.scan`: a convex problem, so the result does not
depend on the initialisation (zeros) beyond the solver's tolerance. `l2 = 1 / (C N)` is scikit-learn's
`LogisticRegression(C=C)` objective divided by N. Pure functions: `fit_logistic` jits and vmaps (over seeds or feature subsets).

    >>> x = jnp.array([[0.0], [1.0], [2.0], [3.0]]); y = jnp.array([0, 0, 1, 1])
    >>> probe = fit_logistic(x, y, num_classes=2)
    >>> [int(k) for k in predict(probe, x)]
    [0, 0, 1, 1]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int


class LogisticProbe(NamedTuple):
    """Fitted probe: `logits = ((x - shift) / scale) @ weights + bias`."""

    weights: Float[Array, "D K"]
    bias: Float[Array, " K"]
    shift: Float[Array, " D"]
    scale: Float[Array, " D"]


def logits(probe: LogisticProbe, x: Float[Array, "N D"]) -> Float[Array, "N K"]:
    return ((x - probe.shift[None]) / probe.scale[None]) @ probe.weights + probe.bias[None]


def fit_logistic(x: Float[Array, "N D"], y: Int[Array, " N"], num_classes: int, l2: float = 1e-3,
                 steps: int = 100, mask: Array | None = None, standardize: bool = True) -> LogisticProbe:
    """Fit the probe on `(x, y)`; features outside the boolean `mask` (if given) are zeroed, i.e. unused.

    A mask rather than a column subset keeps every subset the same shape, so one compiled fit serves them all
    (with every feature masked the probe predicts the most frequent training class). Labels must lie in
    `[0, num_classes)`; unused classes are harmless (their logits are pushed down).
    """
    if standardize:
        shift = jnp.mean(x, axis=0)
        scale = jnp.where(jnp.std(x, axis=0) > 1e-6, jnp.std(x, axis=0), 1.0)
    else:
        shift, scale = jnp.zeros((x.shape[1],), x.dtype), jnp.ones((x.shape[1],), x.dtype)
    features = (x - shift[None]) / scale[None]
    if mask is not None:
        features = jnp.where(mask[None], features, 0.0)
    targets = jax.nn.one_hot(y, num_classes, dtype=x.dtype)

    def loss(params):
        w, b = params
        out = features @ w + b[None]
        return jnp.mean(optax.softmax_cross_entropy(out, targets)) + 0.5 * l2 * jnp.sum(jnp.square(w))

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)
    params = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))

    def step(carry, _):
        params, state = carry
        value, grads = value_and_grad(params, state=state)
        updates, state = opt.update(grads, state, params, value=value, grad=grads, value_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    w, b = params
    if mask is not None:
        w = jnp.where(mask[:, None], w, 0.0)
    return LogisticProbe(weights=w, bias=b, shift=shift, scale=scale)


def predict(probe: LogisticProbe, x: Float[Array, "N D"]) -> Int[Array, " N"]:
    return jnp.argmax(logits(probe, x), axis=-1)


def accuracy(probe: LogisticProbe, x: Float[Array, "N D"], y: Int[Array, " N"]) -> Float[Array, ""]:
    return jnp.mean(predict(probe, x) == y)
