"""Conversions between the four predictions of a Gaussian-path model at a given (x_t, t).

With x_t = alpha_t x0 + sigma_t eps (Lai et al. 2025, *The Principles of Diffusion Models*, Sec. 2-4, and
its notation):

    x0 = (x_t - sigma_t eps) / alpha_t,      score = -eps / sigma_t,      v = alpha_dot x0 + sigma_dot eps,

and conversely (x0, eps) from v by solving the 2x2 system [alpha sigma; alpha_dot sigma_dot] [x0; eps] = [x_t; v]
(determinant alpha sigma_dot - sigma alpha_dot, nonzero for every schedule in `gvlab.diffusion.schedules` on
(0, 1)). Tweedie's formula E[x0 | x_t] = (x_t + sigma_t^2 score) / alpha_t is `x0` from `score`.

`convert(pred, source, target, schedule, x_t, t)` maps any of "eps", "x0", "score", "velocity" to any other; `t`
is a scalar or one time per example (leading axis of x_t). Pure jnp: jit, vmap and grad through it.

    >>> from gvlab.diffusion.schedules import Schedule
    >>> s, x0, eps = Schedule("vp_cosine"), jnp.array([[1.0, -2.0]]), jnp.array([[0.3, 0.5]])
    >>> x_t = s.marginal(x0, jnp.array([0.4]), eps)
    >>> v = convert(eps, "eps", "velocity", s, x_t, jnp.array([0.4]))
    >>> bool(jnp.allclose(convert(v, "velocity", "x0", s, x_t, jnp.array([0.4])), x0, atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gvlab.diffusion.schedules import Schedule

Prediction = Literal["eps", "x0", "score", "velocity"]
PREDICTIONS = ("eps", "x0", "score", "velocity")


def per_example(values: Float[Array, "*t"], x: Float[Array, "*b ..."]) -> Float[Array, "*b ..."]:
    """Reshape per-example values `[B]` (or a scalar) to broadcast against `x` `[B, ...]` explicitly."""
    values = jnp.asarray(values, x.dtype)
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def _to_eps(pred, source: Prediction, schedule: Schedule, x_t, t):
    alpha, sigma = per_example(schedule.alpha(t), x_t), per_example(schedule.sigma(t), x_t)
    if source == "eps":
        return pred
    if source == "x0":
        return (x_t - alpha * pred) / sigma
    if source == "score":
        return -sigma * pred
    alpha_dot, sigma_dot = per_example(schedule.alpha_dot(t), x_t), per_example(schedule.sigma_dot(t), x_t)
    return (alpha * pred - alpha_dot * x_t) / (alpha * sigma_dot - sigma * alpha_dot)


def _from_eps(eps, target: Prediction, schedule: Schedule, x_t, t):
    alpha, sigma = per_example(schedule.alpha(t), x_t), per_example(schedule.sigma(t), x_t)
    if target == "eps":
        return eps
    if target == "score":
        return -eps / sigma
    x0 = (x_t - sigma * eps) / alpha
    if target == "x0":
        return x0
    return per_example(schedule.alpha_dot(t), x_t) * x0 + per_example(schedule.sigma_dot(t), x_t) * eps


def convert(pred: Float[Array, "*b ..."], source: Prediction, target: Prediction, schedule: Schedule,
            x_t: Float[Array, "*b ..."], t: ArrayLike) -> Float[Array, "*b ..."]:
    """Any prediction to any other at (x_t, t). x0 <-> velocity avoid dividing by alpha (finite at alpha = 0)."""
    for name in (source, target):
        if name not in PREDICTIONS:
            raise ValueError(f"unknown prediction {name!r}; choose from {PREDICTIONS}")
    if source == target:
        return pred
    if source == "velocity" and target == "x0":
        alpha, sigma = per_example(schedule.alpha(t), x_t), per_example(schedule.sigma(t), x_t)
        alpha_dot, sigma_dot = per_example(schedule.alpha_dot(t), x_t), per_example(schedule.sigma_dot(t), x_t)
        return (sigma_dot * x_t - sigma * pred) / (alpha * sigma_dot - sigma * alpha_dot)
    if source == "x0" and target == "velocity":  # keep x0 as given: dividing by alpha would fail where alpha = 0
        alpha, sigma = per_example(schedule.alpha(t), x_t), per_example(schedule.sigma(t), x_t)
        eps = (x_t - alpha * pred) / sigma
        return per_example(schedule.alpha_dot(t), x_t) * pred + per_example(schedule.sigma_dot(t), x_t) * eps
    return _from_eps(_to_eps(pred, source, schedule, x_t, t), target, schedule, x_t, t)


def probability_flow_velocity(score: Float[Array, "*b ..."], schedule: Schedule, x_t: Float[Array, "*b ..."],
                              t: ArrayLike) -> Float[Array, "*b ..."]:
    """dx/dt of the probability-flow ODE, f(t) x - g(t)^2 score / 2 (equal to `convert(score, "score", "velocity")`
    for the true score: the identity the `diffusion/principles` experiment checks)."""
    return (per_example(schedule.drift_coefficient(t), x_t) * x_t
            - 0.5 * per_example(schedule.diffusion_squared(t), x_t) * score)
