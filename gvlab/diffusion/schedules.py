"""Gaussian probability paths x_t = alpha_t x_0 + sigma_t eps, t in [0, 1] (t = 1: noise), and their SDE form.

One `Schedule` serves the three views of *The Principles of Diffusion Models* (Lai, Song, Kim, Mitsufuji & Ermon
2025, Ch. 2-4): the path's coefficients, their time derivatives (by forward-mode autodiff, so every schedule is
defined once), SNR(t) = alpha_t^2 / sigma_t^2, lambda_t = log(alpha_t / sigma_t), and the forward SDE
dx = f(t) x dt + g(t) dW with

    f(t) = d log(alpha_t) / dt,     g(t)^2 = d(sigma_t^2) / dt - 2 f(t) sigma_t^2          (book, Eq. for f and g).

Kinds (`kind`):
    "vp_linear":  beta(t) = beta_min + t (beta_max - beta_min), alpha_t = exp(-1/2 int_0^t beta), sigma_t^2 = 1 - alpha_t^2
                  (Song et al. 2021's VP SDE; the DDPM linear schedule in continuous time).
    "vp_cosine":  alpha_t^2 = cos^2(pi/2 (t + s) / (1 + s)) / cos^2(pi/2 s / (1 + s)), sigma_t^2 = 1 - alpha_t^2
                  (Nichol & Dhariwal 2021); t_max < 1 keeps alpha_t > 0.
    "ve":         alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021's VE SDE).
    "rectified_flow": alpha_t = 1 - t, sigma_t = t (flow matching / SD3, FLAIR's convention). At t = 1 alpha is
                  0, so f, g^2 and log SNR are infinite there: only x0 / velocity fields are finite at t = 1.

Schedules are frozen dataclasses of floats: hashable, so they pass as static arguments, and every method is a
pure jnp function of t (any shape) that jits, vmaps and differentiates.

    >>> s = Schedule("rectified_flow")
    >>> float(s.alpha(0.25)), float(s.sigma(0.25)), float(s.alpha_dot(0.25)), float(s.sigma_dot(0.25))
    (0.75, 0.25, -1.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

Kind = Literal["vp_linear", "vp_cosine", "ve", "rectified_flow"]
KINDS = ("vp_linear", "vp_cosine", "ve", "rectified_flow")
COSINE_T_MAX = 0.9946
"""The cosine schedule's default end time (DPM-Solver's T; see `Schedule`)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A Gaussian path; see the module docstring for each kind's formulas.

    Attributes:
        kind: one of `KINDS`.
        beta_min, beta_max: the VP-linear rates (defaults of Song et al. 2021: 0.1, 20).
        cosine_offset: s of the cosine schedule (0.008).
        sigma_min, sigma_max: the VE range (0.01, 10 here: the 2-D examples' scale).
        t_min, t_max: the time interval samplers use (t_min > 0: the VP score and g^2 are singular at t = 0;
            t_max defaults to 1, and to 0.9946 for the cosine schedule, whose alpha vanishes at 1: DPM-Solver's
            cosine schedule stops there (LuChengTHU/dpm-solver `dpm_solver_pytorch.py` at 4a82c39, `self.T =
            0.9946`; alpha = 0.0084, lambda = -4.78; its current code clips lambda at -5.1 instead). At 0.999,
            alpha = 0.0016, and x0 = (x - sigma eps) / alpha turns an eps error of 0.1 into an x0 error of ~60.
    """

    kind: Kind = "vp_linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_offset: float = 0.008
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    t_min: float = 1e-3
    t_max: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; choose from {KINDS}")
        if self.t_max is None:  # a frozen dataclass: resolve the default once, here
            object.__setattr__(self, "t_max", COSINE_T_MAX if self.kind == "vp_cosine" else 1.0)
        if not 0.0 < self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")
        if self.kind == "vp_cosine" and self.t_max >= 1.0:
            raise ValueError(f"the cosine schedule's alpha vanishes at t = 1: use t_max < 1 (default {COSINE_T_MAX})")

    def alpha(self, t: ArrayLike) -> Float[Array, "*t"]:
        t = jnp.asarray(t, jnp.result_type(float))
        if self.kind == "vp_linear":
            return jnp.exp(-0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))
        if self.kind == "vp_cosine":
            s = self.cosine_offset
            return jnp.cos(0.5 * math.pi * (t + s) / (1 + s)) / math.cos(0.5 * math.pi * s / (1 + s))
        if self.kind == "ve":
            return jnp.ones_like(t)
        return 1.0 - t

    def sigma(self, t: ArrayLike) -> Float[Array, "*t"]:
        t = jnp.asarray(t, jnp.result_type(float))
        if self.kind in ("vp_linear", "vp_cosine"):
            # -expm1(2 log alpha) = 1 - alpha^2 without cancellation at small t
            return jnp.sqrt(-jnp.expm1(2 * jnp.log(self.alpha(t))))
        if self.kind == "ve":
            return self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return t

    def alpha_dot(self, t: ArrayLike) -> Float[Array, "*t"]:
        return _time_derivative(self.alpha, t)

    def sigma_dot(self, t: ArrayLike) -> Float[Array, "*t"]:
        return _time_derivative(self.sigma, t)

    def log_snr(self, t: ArrayLike) -> Float[Array, "*t"]:
        """log SNR(t) = 2 lambda_t = 2 log(alpha_t / sigma_t); decreasing in t."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def drift_coefficient(self, t: ArrayLike) -> Float[Array, "*t"]:
        """f(t) = alpha_dot / alpha."""
        return self.alpha_dot(t) / self.alpha(t)

    def diffusion_squared(self, t: ArrayLike) -> Float[Array, "*t"]:
        """g(t)^2 = d(sigma^2)/dt - 2 f sigma^2 (differentiating sigma^2 itself keeps the VP value finite at t = 0,
        where sigma has an infinite slope: g(0)^2 = beta_min)."""
        return _time_derivative(self._sigma_squared, t) - 2.0 * self.drift_coefficient(t) * self._sigma_squared(t)

    def _sigma_squared(self, t: ArrayLike) -> Float[Array, "*t"]:
        if self.kind in ("vp_linear", "vp_cosine"):
            return -jnp.expm1(2 * jnp.log(self.alpha(t)))  # no square root: smooth at t = 0
        return jnp.square(self.sigma(t))

    def marginal(self, x0: Float[Array, "*b d"], t: ArrayLike, eps: Float[Array, "*b d"]) -> Float[Array, "*b d"]:
        """x_t = alpha_t x0 + sigma_t eps, with t broadcast against the leading axes of x0 (one t per example)."""
        t = jnp.asarray(t, x0.dtype)
        shape = t.shape + (1,) * (x0.ndim - t.ndim)
        return self.alpha(t).reshape(shape) * x0 + self.sigma(t).reshape(shape) * eps


def _time_derivative(fn, t: ArrayLike) -> Float[Array, "*t"]:
    """d fn / dt elementwise (fn acts elementwise), by one forward-mode pass."""
    t = jnp.asarray(t, jnp.result_type(float))
    _, tangent = jax.jvp(fn, (t,), (jnp.ones_like(t),))
    return tangent
