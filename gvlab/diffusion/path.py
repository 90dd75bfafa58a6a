"""A diffusion path as an interface: what a discrete-time diffusion needs from its forward process.

A path fixes T steps and the forward marginals q(x_t | x_0), t = 0..T (t = 0: data), and supplies

* `marginal(key, x0, t)`: a draw x_t ~ q(x_t | x_0);
* `posterior(x_t, x0, t)`: the parameters of q(x_{t-1} | x_t, x_0), t >= 1 (Bayes' rule of the forward chain);
* `prior_sample(key, shape)`: a draw of x_T from the path's prior p(x_T);
* `loss(x0, x_t, t, prediction)`: the loss hook, the variational-bound term
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) of an x0-parameterised reverse model
  (Ho et al. 2020, Eq. 5; Austin et al. 2021, Eq. 1; Gu et al. 2022, VQ-Diffusion Eq. 5), per example in nats.

Two families implement it: the Gaussian paths of `gvlab.diffusion.schedules` through `GaussianPath` below (a thin
adapter; `Schedule` itself is unchanged), and the discrete mask-and-replace path of `gvlab.diffusion.discrete`.
Step indices `t` are integer arrays (any batch shape); every method is a pure jnp function that jits and vmaps.

    >>> from gvlab.diffusion.schedules import Schedule
    >>> isinstance(GaussianPath(Schedule("vp_linear"), num_steps=10), DiffusionPath)
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from gvlab.diffusion.schedules import Schedule


@runtime_checkable
class DiffusionPath(Protocol):
    """The forward process of a T-step diffusion and the x0-parameterised bound term (module docstring)."""

    num_steps: int

    def marginal(self, key: PRNGKeyArray, x0: Any, t: ArrayLike) -> Any: ...

    def posterior(self, x_t: Any, x0: Any, t: ArrayLike) -> Any: ...

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Any: ...

    def loss(self, x0: Any, x_t: Any, t: ArrayLike, prediction: Any) -> Array: ...


def _per_example(values: Array, x: Array) -> Array:
    """Broadcast per-example values `[B...]` against `x [B..., D...]` (t indexes the leading axes)."""
    return jnp.reshape(values, values.shape + (1,) * (x.ndim - values.ndim))


@dataclasses.dataclass(frozen=True)
class GaussianPath:
    """A `Schedule` seen at T + 1 grid times: x_t = alpha(s_t) x0 + sigma(s_t) eps, s_0 = t_min < ... < s_T = t_max.

    The grid is uniform in t, as `gvlab.diffusion.samplers.time_grid(..., "uniform")` reversed (index 0: data end).
    Posterior of the step s = s_{t-1} < u = s_t (Kingma et al. 2021, VDM, Eq. 26-28):
        alpha_{u|s} = alpha_u / alpha_s,   sigma_{u|s}^2 = sigma_u^2 - alpha_{u|s}^2 sigma_s^2,
        q(x_s | x_u, x0) = N(alpha_{u|s} sigma_s^2 / sigma_u^2 x_u + alpha_s sigma_{u|s}^2 / sigma_u^2 x0,
                             sigma_{u|s}^2 sigma_s^2 / sigma_u^2).
    The loss hook with an x0 prediction: KL = (alpha_s sigma_{u|s}^2 / sigma_u^2)^2 |x0 - x0_hat|^2 / (2 var).
    """

    schedule: Schedule
    num_steps: int

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    def times(self) -> Float[Array, " T1"]:
        """The grid times s_0 < ... < s_T (a constant at trace time)."""
        return jnp.asarray(np.linspace(self.schedule.t_min, self.schedule.t_max, self.num_steps + 1), jnp.float32)

    def _coefficients(self, t: ArrayLike):
        s_t = self.times()[jnp.asarray(t)]
        return self.schedule.alpha(s_t), self.schedule.sigma(s_t)

    def marginal(self, key: PRNGKeyArray, x0: Float[Array, "*b d"], t: ArrayLike) -> Float[Array, "*b d"]:
        alpha, sigma = (_per_example(c, x0) for c in self._coefficients(t))
        return alpha * x0 + sigma * jax.random.normal(key, x0.shape, x0.dtype)

    def posterior(self, x_t: Float[Array, "*b d"], x0: Float[Array, "*b d"], t: ArrayLike
                  ) -> tuple[Float[Array, "*b d"], Float[Array, "*b 1"]]:
        """`(mean, std)` of q(x_{t-1} | x_t, x0), t >= 1."""
        mean_xt, mean_x0, var = self._posterior_coefficients(t, x0)
        return mean_xt * x_t + mean_x0 * x0, jnp.sqrt(var)

    def _posterior_coefficients(self, t: ArrayLike, x: Array):
        t = jnp.asarray(t)
        alpha_u, sigma_u = self._coefficients(t)
        alpha_s, sigma_s = self._coefficients(t - 1)
        alpha_us = alpha_u / alpha_s
        var_us = sigma_u**2 - alpha_us**2 * sigma_s**2
        coeffs = (alpha_us * sigma_s**2 / sigma_u**2, alpha_s * var_us / sigma_u**2, var_us * sigma_s**2 / sigma_u**2)
        return tuple(_per_example(c, x) for c in coeffs)

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Float[Array, "..."]:
        """x_T ~ N(0, sigma(t_max)^2 I), the path's marginal at t_max for zero-mean data (alpha small)."""
        return self.schedule.sigma(self.schedule.t_max) * jax.random.normal(key, shape)

    def loss(self, x0: Float[Array, "*b d"], x_t: Float[Array, "*b d"], t: ArrayLike,
             prediction: Float[Array, "*b d"]) -> Float[Array, "*b"]:
        """KL(q(x_{t-1} | x_t, x0) || q(x_{t-1} | x_t, x0_hat)) in nats, summed over the last axis."""
        del x_t  # equal variances: the KL depends on the means' difference only
        _, mean_x0, var = self._posterior_coefficients(t, x0)
        return jnp.sum(mean_x0**2 * (x0 - prediction) ** 2 / (2 * var), axis=-1)
