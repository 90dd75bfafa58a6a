"""Gradient attacks on any differentiable predictor: FGSM and PGD in the L-infinity and L2 balls.

Both maximise a per-example loss L(f(x'), y) over x' in the eps-ball around x (and, with `bounds`, inside the
input range):

* FGSM (Goodfellow et al. 2015, Eq. 6): x' = x + eps sign(grad_x L) for L-infinity; for L2 the fast gradient
  method x' = x + eps g / ||g||_2 (Miyato et al. 2016), g = grad_x L per example.
* PGD (Madry et al. 2018, Eq. 2 and Sec. 3): x^{t+1} = Proj_{B(x, eps)}(x^t + alpha d^t), d^t = sign(g^t) for
  L-infinity and g^t / ||g^t||_2 for L2, started uniformly inside the ball (`random_start`); with R restarts the
  input with the highest final loss is kept per example.

Arrays carry a leading batch axis: `x` is [B, ...] and `predict_fn(x)` returns logits [B, C] (or predictions
[B, ...]) row by row, so one example's gradient is its own loss's (a predictor that mixes rows, such as
training-mode batch norm, breaks that). Norms are taken per example over all non-batch axes. Static settings
(`norm`, `loss`, `num_steps`, `restarts`, `random_start`) are Python values; `eps`, `step_size` and `bounds` may be
traced, so `jax.vmap(lambda e: pgd(..., eps=e, step_size=e / 4))(eps_E)` attacks at every epsilon in one program.

    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([2.0, -1.0])
    >>> predict = lambda x: x @ w              # a linear regressor, [B, 2] -> [B]
    >>> x, y = jnp.zeros((1, 2)), jnp.ones(1)   # loss (x.w - 1)^2 rises along -w
    >>> fgsm(predict, x, y, jax.random.key(0), eps=0.1, loss="mse")
    Array([[-0.1,  0.1]], dtype=float32)
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
LOSSES: tuple[str, ...] = ("cross_entropy", "mse")
LossFn = Callable[[Array, Array], Float[Array, " B"]]
"""`loss(predictions, y) -> [B]`: one value per example (restarts are chosen per example)."""


def _concrete(value) -> np.ndarray | None:
    """`value` as a NumPy array when it is known while tracing, else None (a tracer under jit, vmap or grad)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: expected one of {NORMS}")


def _check_nonnegative(name: str, value) -> None:
    # Only concrete values can be checked: a traced eps (vmapped over epsilons) is the caller's responsibility.
    concrete = _concrete(value)
    if concrete is not None and np.any(concrete < 0):
        raise ValueError(f"{name} must be >= 0, got {concrete}")


def _check_input(x: Array, bounds) -> None:
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise TypeError(f"x must be floating point to be perturbed, got dtype {jnp.asarray(x).dtype}")
    if jnp.ndim(x) < 1:
        raise ValueError("x must have a leading batch axis [B, ...]; use x[None] for one example")
    if bounds is not None:
        if len(bounds) != 2:
            raise ValueError(f"bounds must be (lo, hi) or None, got {bounds!r}")
        lo, hi = _concrete(bounds[0]), _concrete(bounds[1])
        if lo is not None and hi is not None and np.any(lo > hi):
            raise ValueError(f"bounds need lo <= hi, got {bounds!r}")


def _loss_fn(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return _cross_entropy
    if loss == "mse":
        return _mse
    raise ValueError(f"unknown loss {loss!r}: expected one of {LOSSES} or a callable loss(predictions, y) -> [B]")


def _per_row_mean(v: Array) -> Float[Array, " B"]:
    return jnp.mean(v.reshape(v.shape[0], -1), axis=1)


def _cross_entropy(logits: Float[Array, "B ... C"], y: Array) -> Float[Array, " B"]:
    """-log softmax(logits)_y; integer labels [B, ...] or probability targets shaped like the logits. Extra
    axes (per-pixel labels) are averaged per example."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    if jnp.issubdtype(y.dtype, jnp.integer):
        nll = -jnp.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]
    else:
        nll = -jnp.sum(y * log_p, axis=-1)
    return _per_row_mean(nll) if nll.ndim > 1 else nll


def _mse(predictions: Float[Array, "B ..."], y: Float[Array, "B ..."]) -> Float[Array, " B"]:
    """Mean squared error per example over the non-batch axes (a regressor's [B] outputs give (f - y)^2)."""
    return _per_row_mean(jnp.square(predictions - y)) if predictions.ndim > 1 else jnp.square(predictions - y)


def per_example_loss(predict_fn: Callable[[Array], Array], x: Float[Array, "B ..."], y: Array,
                     loss: str | LossFn = "cross_entropy") -> Float[Array, " B"]:
    """The loss the attacks maximise, L(predict_fn(x), y) per example: "cross_entropy" (logits [B, C] with integer
    labels [B] or probability targets [B, C]), "mse" (mean over the non-batch axes) or a callable
    `loss(predictions, y) -> [B]`."""
    values = _loss_fn(loss)(predict_fn(x), y)
    if jnp.shape(values) != (jnp.shape(x)[0],):
        raise ValueError(f"the loss must give one value per example, shape ({jnp.shape(x)[0]},); got "
                         f"{jnp.shape(values)} (a callable loss must not reduce over the batch)")
    return values


def _input_grad(predict_fn, x, y, loss) -> Float[Array, "B ..."]:
    # The sum over the batch gives each row the gradient of its own loss (rows do not interact).
    return jax.grad(lambda x_: jnp.sum(per_example_loss(predict_fn, x_, y, loss)))(x)


def _norm_per_example(v: Array, ord: float) -> Array:
    """||v_b|| over the non-batch axes, shaped [B, 1, ..., 1] to broadcast against v (rank promotion is strict)."""
    flat = v.reshape(v.shape[0], -1)
    return jnp.linalg.norm(flat, ord=ord, axis=1).reshape((v.shape[0],) + (1,) * (v.ndim - 1))


def _direction(g: Array, norm: str) -> Array:
    """The steepest-ascent unit step for the norm: sign(g) (L-infinity) or g / ||g||_2 (L2); 0 where g = 0."""
    if norm == "linf":
        return jnp.sign(g)
    length = _norm_per_example(g, 2)
    # The inner `where` keeps the division finite (and its gradient free of NaN) for a zero gradient.
    return jnp.where(length > 0, g / jnp.where(length > 0, length, 1.0), 0.0)


def _project(delta: Array, eps, norm: str) -> Array:
    """Euclidean projection onto the eps-ball: a clip for L-infinity, a per-example rescale for L2."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    length = _norm_per_example(delta, 2)
    scale = jnp.minimum(1.0, eps / jnp.where(length > 0, length, 1.0))
    return delta * scale.astype(delta.dtype)


def _clip_to_bounds(x_adv: Array, bounds) -> Array:
    # x in range and x + delta clipped back: for L-infinity the result is the projection onto ball-and-box; for L2
    # each coordinate moves toward x, so the perturbation only shrinks and stays inside the ball.
    return x_adv if bounds is None else jnp.clip(x_adv, bounds[0], bounds[1])


def _clip_delta(x: Array, delta: Array, bounds) -> Array:
    # Without bounds delta is kept as is: (x + delta) - x differs from delta by rounding.
    return delta if bounds is None else _clip_to_bounds(x + delta, bounds) - x


def fgsm(predict_fn: Callable[[Array], Array], x: Float[Array, "B ..."], y: Array, key: PRNGKeyArray | None,
         eps: float | Float[Array, ""], loss: str | LossFn = "cross_entropy", norm: Norm = "linf",
         bounds: tuple | None = None) -> Float[Array, "B ..."]:
    """One gradient-sign step to the boundary of the eps-ball (Goodfellow et al. 2015, Eq. 6).

    x' = clip(x + eps sign(grad_x L(f(x), y)), lo, hi) for `norm="linf"`; for `norm="l2"` the fast gradient method
    x' = x + eps g / ||g||_2 per example. `key` is unused (FGSM is deterministic); it keeps the signature of `pgd`.

    Args:
        predict_fn: [B, ...] -> logits [B, C] or predictions [B, ...], applied row by row.
        x: clean inputs [B, ...]. y: labels [B] (int) or targets for `loss`.
        eps: radius of the ball, >= 0 (may be traced). loss: "cross_entropy", "mse" or `loss(pred, y) -> [B]`.
        bounds: (lo, hi) input range the result is clipped to, or None.

    Returns:
        The adversarial inputs [B, ...], ||x' - x|| <= eps per example.
    """
    del key
    _check_norm(norm)
    _check_nonnegative("eps", eps)
    _check_input(x, bounds)
    g = _input_grad(predict_fn, x, y, loss)
    return _clip_to_bounds(x + eps * _direction(g, norm), bounds)


def _random_start(key: PRNGKeyArray, x: Array, eps, norm: str) -> Array:
    """A uniform point in the eps-ball: uniform per coordinate for L-infinity (Madry et al. 2018); for L2 a uniform
    direction (normalised Gaussian) at radius eps u^(1/d), which is uniform in the ball's volume."""
    if norm == "linf":
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    direction_key, radius_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, x.shape, x.dtype)
    direction = direction / jnp.maximum(_norm_per_example(direction, 2), jnp.finfo(x.dtype).tiny)
    d = int(np.prod(x.shape[1:]))
    u = jax.random.uniform(radius_key, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    return direction * (eps * u ** (1.0 / d))


def pgd(predict_fn: Callable[[Array], Array], x: Float[Array, "B ..."], y: Array, key: PRNGKeyArray,
        eps: float | Float[Array, ""], step_size: float | Float[Array, ""], num_steps: int, norm: Norm = "linf",
        restarts: int = 1, random_start: bool = True, loss: str | LossFn = "cross_entropy",
        bounds: tuple | None = None) -> Float[Array, "B ..."]:
    """Projected gradient ascent on the loss inside the eps-ball (Madry et al. 2018, Eq. 2).

    delta^0 ~ U(B(0, eps)) (or 0 without `random_start`), then `num_steps` times
    delta <- Proj_{B(0, eps)}(delta + step_size d), d = sign(g) (L-infinity) or g / ||g||_2 per example (L2),
    g = grad_x L(f(x + delta), y), followed by the clip to `bounds`. The steps are one `lax.scan`; the restarts are
    vmapped, restart r starting from `fold_in(key, r)` (so restart 0 is the same whatever `restarts` is, and more
    restarts never lower the attained loss); per example, the restart whose final input has the highest loss wins.

    Args:
        predict_fn: [B, ...] -> logits [B, C] or predictions [B, ...], applied row by row.
        x: clean inputs [B, ...]. y: labels [B] (int) or targets for `loss`. key: random starts.
        eps: radius, >= 0; step_size: alpha, >= 0 (both may be traced, e.g. vmapped over a vector of epsilons).
        num_steps: >= 1. norm: "linf" or "l2". restarts: >= 1 (more than one needs `random_start`).
        loss: "cross_entropy", "mse" or `loss(pred, y) -> [B]`. bounds: (lo, hi) input range, or None.

    Returns:
        The adversarial inputs [B, ...], ||x' - x|| <= eps per example.
    """
    _check_norm(norm)
    _check_nonnegative("eps", eps)
    _check_nonnegative("step_size", step_size)
    _check_input(x, bounds)
    _loss_fn(loss)  # an unknown loss name fails here, before tracing
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a Python int >= 1, got {num_steps!r}")
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a Python int >= 1, got {restarts!r}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True: without it every restart is the same attack")

    def step(delta, _):
        g = _input_grad(predict_fn, x + delta, y, loss)
        delta = _project(delta + step_size * _direction(g, norm), eps, norm)
        return _clip_delta(x, delta, bounds), None

    def attack(restart_key):
        start = _random_start(restart_key, x, eps, norm) if random_start else jnp.zeros_like(x)
        start = _clip_delta(x, start, bounds)
        delta, _ = jax.lax.scan(step, start, None, length=num_steps)
        x_adv = x + delta
        return x_adv, per_example_loss(predict_fn, x_adv, y, loss)

    restart_keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(restarts))
    x_adv_R, loss_RxB = jax.vmap(attack)(restart_keys)
    best_B = jnp.argmax(loss_RxB, axis=0)  # ties go to the earliest restart
    return jnp.take_along_axis(x_adv_R, best_B.reshape((1, -1) + (1,) * (x.ndim - 1)), axis=0)[0]
