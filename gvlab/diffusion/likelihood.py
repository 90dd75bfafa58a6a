"""Exact log-likelihood of a diffusion or flow model through the probability-flow ODE.

Along the probability-flow ODE dx/dt = v(x, t) (`gvlab.diffusion.samplers.velocity_field`) the density obeys the
instantaneous change of variables d log p_t(x_t) / dt = -div v(x_t, t) (Chen et al. 2018, Thm. 1), so solving
forward from the data point x at t_min to x_T at t_max (Song et al. 2021b, App. D.2):

    log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^{t_max} div v(x_t, t) dt.

The pair (x_t, int div v) is one ODE state, solved per example with diffrax's Tsit5 and a PID controller (each
example gets its own step sequence; vmapped). The divergence is exact (the trace of the Jacobian from d
Jacobian-vector products: d times the cost, for small d) or Hutchinson's estimate E_z[z^T (dv/dx) z] with
Rademacher or Gaussian probes z drawn once per example and kept fixed along the path (FFJORD; Grathwohl et al.
2019), which makes log_prob an unbiased estimate of the exact value. The prior p_T defaults to N(0, sigma(t_max)^2 I)
(the samplers' `initial_noise`: VE N(0, sigma_max^2 I), rectified flow N(0, I), VP N(0, sigma_1^2 I) with
alpha_1 x0 neglected); any other prior can be applied afterwards to the returned x_T.

The result is the density of the model's p_{t_min}, not of p_0; with t_min = 1e-3 the two differ by O(sigma_{t_min}^2
/ data variance) per dimension. Everything is pure jnp: jit, vmap and grad through it (RecursiveCheckpointAdjoint).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from gvlab.diffusion.samplers import Model, velocity_field
from gvlab.diffusion.schedules import Schedule

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


class LogLikelihood(NamedTuple):
    """Output of `log_likelihood`, one entry per example.

    Attributes:
        log_prob: log p_{t_min}(x) = prior_log_prob + divergence_integral, `[B]`, in nats.
        prior_log_prob: log p_T(x_T), `[B]`.
        divergence_integral: int_{t_min}^{t_max} div v(x_t, t) dt, `[B]` (exact or Hutchinson).
        x_T: the ODE's end point at t_max, `[B, ...]`.
        nfe: evaluations of the velocity (each with its divergence): 6 per attempted Tsit5 step + 1, `[B]`.
        failed: True where the solve did not reach t_max (`max_steps`), `[B]`.
    """

    log_prob: Float[Array, " B"]
    prior_log_prob: Float[Array, " B"]
    divergence_integral: Float[Array, " B"]
    x_T: Float[Array, "B ..."]
    nfe: Int[Array, " B"]
    failed: Bool[Array, " B"]


def gaussian_prior_log_prob(schedule: Schedule, x_T: Float[Array, "B ..."]) -> Float[Array, " B"]:
    """log N(x_T; 0, sigma(t_max)^2 I), summed over the data axes."""
    sigma = schedule.sigma(jnp.asarray(schedule.t_max, x_T.dtype))
    squares = jnp.sum(jnp.reshape(x_T, (x_T.shape[0], -1)) ** 2, axis=1)
    d = math.prod(x_T.shape[1:])
    return -0.5 * squares / sigma**2 - d * jnp.log(sigma) - 0.5 * d * math.log(2 * math.pi)


def _probes(divergence: str, key: PRNGKeyArray | None, num_probes: int, probe: str, x: Array):
    """Probes of one example's state shape `[1, ...]`: the standard basis `[d, 1, ...]` shared by all examples
    (sum_i e_i^T J e_i = tr J), or K random ones per example `[B, K, 1, ...]`; the weight of their quadratic forms;
    and the vmap axis of the probes."""
    example_shape = (1, *x.shape[1:])
    if divergence == "exact":
        d = math.prod(x.shape[1:])
        return jnp.eye(d, dtype=x.dtype).reshape(d, *example_shape), 1.0, None
    if key is None:
        raise ValueError("the Hutchinson divergence needs a key")
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    shape = (x.shape[0], num_probes, *example_shape)
    if probe == "rademacher":
        return jax.random.rademacher(key, shape, x.dtype), 1.0 / num_probes, 0
    return jax.random.normal(key, shape, x.dtype), 1.0 / num_probes, 0


def log_likelihood(model: Model, schedule: Schedule, x: Float[Array, "B ..."], *,
                   divergence: Literal["exact", "hutchinson"] = "exact", key: PRNGKeyArray | None = None,
                   num_probes: int = 1, probe: Literal["rademacher", "gaussian"] = "rademacher",
                   rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096,
                   prior_log_prob: Callable[[Array], Array] | None = None) -> LogLikelihood:
    """log p_{t_min}(x) of the model's probability-flow ODE (module docstring), per example.

    Args:
        model: the network and its prediction kind (`gvlab.diffusion.samplers.Model`).
        schedule: the Gaussian path; the ODE runs from `schedule.t_min` to `schedule.t_max`.
        x: data `[B, ...]`.
        divergence: "exact" (trace of the Jacobian, d JVPs per evaluation) or "hutchinson".
        key: the probes' key (Hutchinson only).
        num_probes: K probes per example (Hutchinson only; the estimate averages their quadratic forms).
        probe: "rademacher" (lower variance) or "gaussian".
        rtol, atol, max_steps: Tsit5's tolerances and step budget.
        prior_log_prob: log p_T(x_T [B, ...]) -> [B]; default `gaussian_prior_log_prob(schedule, .)`.

    Returns:
        `LogLikelihood` with `log_prob [B]` in nats (`bits_per_dim` converts).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose from {DIVERGENCES}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose from {PROBES}")
    probes, weight, probe_axis = _probes(divergence, key, num_probes, probe, x)
    velocity, consts = velocity_field(model, schedule, x[:1], schedule.t_min)

    def field(t, state, args):
        y, _ = state
        field_consts, z = args
        v, jvp = jax.linearize(lambda y: velocity(t, y, field_consts), y)
        return v, weight * jnp.sum(z * jax.vmap(jvp)(z))

    def solve(x_i, z_i):
        y0 = (x_i[None], jnp.zeros((), x.dtype))
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), t0=schedule.t_min, t1=schedule.t_max, dt0=None, y0=y0,
            args=(consts, z_i), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps, throw=False,
        )
        x_T, integral = sol.ys
        nfe = 6 * jnp.asarray(sol.stats["num_steps"], jnp.int32) + 1
        return x_T[-1, 0], integral[-1], nfe, sol.result != diffrax.RESULTS.successful

    x_T, integral, nfe, failed = jax.vmap(solve, in_axes=(0, probe_axis))(x, probes)
    prior = (prior_log_prob or (lambda y: gaussian_prior_log_prob(schedule, y)))(x_T)
    return LogLikelihood(log_prob=prior + integral, prior_log_prob=prior, divergence_integral=integral, x_T=x_T,
                         nfe=nfe, failed=failed)


def _gaussian_log_density(x: Float[Array, " d"], mean: Float[Array, " d"], cov: Float[Array, "d d"]):
    diff = x - mean
    return -0.5 * (diff @ jnp.linalg.solve(cov, diff) + jnp.linalg.slogdet(cov)[1] + x.shape[0] * math.log(2 * math.pi))


@functools.partial(jax.jit, static_argnums=0)
def gaussian_oracle_error(schedule: Schedule, mean: Float[Array, " d"], cov: Float[Array, "d d"],
                          x: Float[Array, "B d"]) -> Float[Array, ""]:
    """max_i |log_likelihood(x_i) - log N(x_i; mean, cov)| with the exact field of Gaussian data: the analytic check.

    For x0 ~ N(m, C) the marginal is N(alpha_t m, C_t), C_t = alpha_t^2 C + sigma_t^2 I, and eps* = -sigma_t score
    = sigma_t C_t^-1 (x - alpha_t m); the prior is that marginal at t_max, so the only error is the ODE solve's
    (exact divergence, default tolerances) and the gap between p_{t_min} and p_0.
    """
    identity = jnp.eye(mean.shape[0], dtype=x.dtype)

    def marginal(t):
        a, s = schedule.alpha(t), schedule.sigma(t)
        return a * mean, a**2 * cov + s**2 * identity

    def eps(x, t):
        def one(xi, ti):
            centre, c = marginal(ti)
            return schedule.sigma(ti) * jnp.linalg.solve(c, xi - centre)
        return jax.vmap(one)(x, t)

    def prior(x_T):
        return jax.vmap(lambda xi: _gaussian_log_density(xi, *marginal(schedule.t_max)))(x_T)

    result = log_likelihood(Model(eps, "eps"), schedule, x, prior_log_prob=prior)
    return jnp.max(jnp.abs(result.log_prob - jax.vmap(lambda xi: _gaussian_log_density(xi, mean, cov))(x)))


def bits_per_dim(log_prob: Float[Array, "*B"], num_dims: int, scale: ArrayLike = 1.0) -> Float[Array, "*B"]:
    """-log2 p(y) / d for data y whose model coordinates are x = scale * y + shift.

    log p_y(y) = log p_x(x) + d log(scale); e.g. 8-bit images y in [0, 256) (uniformly dequantised) mapped to
    [-1, 1] have scale = 2 / 256, which adds 7 bits per dimension to -log2 p_x(x) / d.
    """
    return -(log_prob + num_dims * jnp.log(jnp.asarray(scale, log_prob.dtype))) / (num_dims * math.log(2.0))
