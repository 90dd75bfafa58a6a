"""Samplers of Gaussian-path diffusion and flow models: one interface, fixed-step scans and an adaptive diffrax solve.

A model is `Model(predict, prediction)`: `predict(x [B, ...], t [B]) -> [B, ...]` returns the kind `prediction`
("eps", "x0", "score" or "velocity"); every sampler converts it to what its update needs with
`gvlab.diffusion.parameterisation.convert`, so one network serves every sampler. Sampling starts from
x_T = sigma(t_max) z, z ~ N(0, I) (`initial_noise`: VP alpha(t_max) ~ 0 and sigma ~ 1; VE std sigma_max; rectified
flow x_1 ~ N(0, I)), and runs down a time grid t_max = t_0 > t_1 > ... > t_N = t_min (`time_grid`). Samples are
draws of p_{t_min}; `sample(..., denoise=True)` adds one last evaluation returning Tweedie's E[x0 | x_{t_min}].

With lambda_t = log(alpha_t / sigma_t) and h = lambda_s - lambda_t > 0 for a step t -> s < t
(Lai et al. 2025, *The Principles of Diffusion Models*):

    sampler          update t -> s                                                        NFE (N steps)
    euler            x_s = x_t + (s - t) v(x_t, t)           (probability-flow ODE)       N
    heun             trapezoid on v on every step (Karras et al. 2022, Alg. 1; see `heun`)     2N
    ddim             x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,          N
                     c^2 = eta^2 sigma_s^2 (1 - e^{-2h})   (Song et al. 2021a; eta = 0: deterministic)
    dpm_solver_1     x_s = (alpha_s / alpha_t) x_t - sigma_s (e^h - 1) eps_hat            N
    dpm_solver_2     midpoint in lambda (Lu et al. 2022, Alg. 1 with r1 = 1/2)            2N
    dpm_solver_pp_2s the same midpoint in the data prediction x0_hat (Lu et al. 2022b)    2N
    ddpm             x_s ~ q(x_s | x_t, x0 = x0_hat)   (ancestral; Ho et al. 2020, Kingma et al. 2021)   N
    euler_maruyama   reverse SDE dx = [f x - g^2 score] dt + g dW_bar (Song et al. 2021b, Eq. 6)   N
    adaptive         probability-flow ODE with diffrax Tsit5 + PIDController       6 per attempted step + 1

`ddim` (eta = 0) and `dpm_solver_1` are one exponential integrator written two ways (equal to rounding); `ddim`
with eta = 1 is `ddpm`. v is the probability-flow velocity f x - g^2 score / 2 (`convert(..., "velocity")`, equal
for the exact field). The exponential integrators need a finite lambda(t_max), and the reverse SDE a finite
f(t_max) = d log alpha / dt: for rectified flow (alpha_1 = 0) use t_max < 1 with `dpm_solver_*`, `euler_maruyama`
and the "log_snr" grid; `euler`, `heun`, `ddim`, `ddpm` and `adaptive` are fine at t = 1 with an x0 or velocity
model (an eps or score model cannot give x0 where alpha = 0).

Fixed-step samplers are one `lax.scan` each (one compiled program per sampler and grid length); the grid is an
array argument, so grids of equal length share the program, and a grid that repeats t_max at its start runs fewer
steps in the same program (a zero-length step is a no-op for every sampler here, though it still evaluates the
model). Everything is pure: jit, vmap and grad through it.
Classifier-free guidance (`guided`) turns a conditional model into a `Model` (Ho & Salimans 2022); `clip_x0` clips
a model's x0 prediction to the data range (improved DDPM).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from gvlab.diffusion.parameterisation import PREDICTIONS, Prediction, convert, per_example
from gvlab.diffusion.schedules import Schedule

SAMPLERS = ("euler", "heun", "ddim", "dpm_solver_1", "dpm_solver_2", "dpm_solver_pp_2s", "ddpm", "euler_maruyama",
            "adaptive")
SPACINGS = ("uniform", "log_snr", "karras")
Spacing = Literal["uniform", "log_snr", "karras"]
KARRAS_RHO = 7.0
"""The exponent of EDM's grid (Karras et al. 2022, Eq. 5 and Table 1: rho = 7)."""
_NFE_PER_STEP = {"euler": 1, "heun": 2, "ddim": 1, "dpm_solver_1": 1, "dpm_solver_2": 2, "dpm_solver_pp_2s": 2,
                 "ddpm": 1, "euler_maruyama": 1}


class Model(NamedTuple):
    """A denoising network as a pure function: `predict(x [B, ...], t [B]) -> [B, ...]` of kind `prediction`."""

    predict: Callable[[Array, Array], Array]
    prediction: Prediction = "eps"


class Samples(NamedTuple):
    """Output of `sample` and `adaptive_ode`.

    Attributes:
        x: samples `[B, ...]`.
        nfe: number of evaluations of the model (int32 scalar; one evaluation covers the whole batch).
        failed: True if the adaptive solver did not reach t_min (always False for fixed-step samplers).
    """

    x: Float[Array, "B ..."]
    nfe: Int[Array, ""]
    failed: Bool[Array, ""]


def evaluate(model: Model, target: Prediction, schedule: Schedule, x: Float[Array, "B ..."],
             t: ArrayLike) -> Float[Array, "B ..."]:
    """The model's prediction at (x, t) converted to `target`; a scalar t is broadcast to one time per example."""
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    return convert(model.predict(x, t_B), model.prediction, target, schedule, x, t_B)


def initial_noise(schedule: Schedule, key: PRNGKeyArray, shape: tuple[int, ...],
                  dtype=jnp.float32) -> Float[Array, "B ..."]:
    """x_T = sigma(t_max) z, z ~ N(0, I): the prior N(0, sigma_T^2 I) that every sampler starts from.

    It drops alpha(t_max) x0 (VP: alpha(1) = 0.0066 with the default rates; VE: sigma_max >> the data scale;
    rectified flow: alpha(1) = 0), so it is the exact marginal only when alpha(t_max) = 0.
    """
    return schedule.sigma(jnp.asarray(schedule.t_max, dtype)) * jax.random.normal(key, shape, dtype)


def _lambda(schedule: Schedule, t: ArrayLike) -> Array:
    return 0.5 * schedule.log_snr(t)


def time_at_lambda(schedule: Schedule, lam: Float[Array, "*n"]) -> Float[Array, "*n"]:
    """The inverse of lambda_t = log(alpha_t / sigma_t) in closed form (for VP linear as in Lu et al. 2022).

    VP (alpha^2 + sigma^2 = 1): alpha^2 = sigmoid(2 lambda), so -2 log alpha = softplus(-2 lambda) =: L and
        linear:  beta_min t + (beta_max - beta_min) t^2 / 2 = L,
        cosine:  t = (1 + s) (2 / pi) arccos(cos(pi s / (2 (1 + s))) alpha) - s;
    VE: sigma = e^{-lambda};  rectified flow: (1 - t) / t = e^lambda, t = sigmoid(-lambda).
    """
    return _time_at_lambda(schedule, jnp.asarray(lam), jnp)


def _time_at_lambda(schedule: Schedule, lam, xp):
    """`time_at_lambda` with the array module `xp` (numpy: float64 grids computed without compiling anything)."""
    if schedule.kind == "vp_linear":
        big_l = xp.logaddexp(0.0, -2.0 * lam)
        b0, b1 = schedule.beta_min, schedule.beta_max
        return 2.0 * big_l / (b0 + xp.sqrt(b0**2 + 2.0 * (b1 - b0) * big_l))
    if schedule.kind == "vp_cosine":
        s = schedule.cosine_offset
        alpha = xp.sqrt(1.0 / (1.0 + xp.exp(-2.0 * lam)))
        return (1 + s) * (2 / math.pi) * xp.arccos(math.cos(0.5 * math.pi * s / (1 + s)) * alpha) - s
    if schedule.kind == "ve":
        return (-lam - math.log(schedule.sigma_min)) / math.log(schedule.sigma_max / schedule.sigma_min)
    return 1.0 / (1.0 + xp.exp(lam))


def _check_finite_lambda(schedule: Schedule, what: str):
    if schedule.kind == "rectified_flow" and schedule.t_max >= 1.0:
        raise ValueError(f"{what} needs a finite lambda(t_max) = log(alpha / sigma), but rectified flow has "
                         f"alpha(1) = 0: use Schedule('rectified_flow', t_max=0.999) or another sampler")


def time_grid(schedule: Schedule, num_steps: int, spacing: Spacing = "uniform",
              dtype=jnp.float32) -> Float[Array, " N+1"]:
    """`num_steps + 1` decreasing times from t_max to t_min, equally spaced in t ("uniform"), in lambda ("log_snr",
    the spacing Lu et al. 2022 recommend for DPM-Solver), or EDM's grid ("karras": equally spaced in
    sigma_hat^(1 / rho), rho = 7, for the noise level sigma_hat = sigma / alpha = e^{-lambda}; Karras et al. 2022,
    Eq. 5, the grid of their Heun sampler). The end points are exact.

    The grid is a constant (computed at trace time, in float64 where it can be), also inside `jit`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose from {SPACINGS}")
    if spacing == "uniform":
        ts = np.linspace(schedule.t_max, schedule.t_min, num_steps + 1)
    else:
        _check_finite_lambda(schedule, f"the {spacing} grid")
        with jax.ensure_compile_time_eval():
            ends = [float(_lambda(schedule, t)) for t in (schedule.t_max, schedule.t_min)]
        if spacing == "log_snr":
            lams = np.linspace(*ends, num_steps + 1)
        else:  # sigma_hat^(1/rho) linear from sigma_hat_max to sigma_hat_min, lambda = -log sigma_hat
            roots = np.linspace(*[np.exp(-lam / KARRAS_RHO) for lam in ends], num_steps + 1)
            lams = -KARRAS_RHO * np.log(roots)
        ts = _time_at_lambda(schedule, lams, np)
        ts[0], ts[-1] = schedule.t_max, schedule.t_min
    return jnp.asarray(ts, dtype)


def _steps(ts: Array):
    """(t, s) pairs of consecutive grid times, the scan's inputs."""
    return ts[:-1], ts[1:]


# ----------------------------------------------------------------------------- probability-flow ODE, fixed steps


def euler(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"]
          ) -> Float[Array, "B ..."]:
    """Euler on the probability-flow ODE dx/dt = v(x, t): x_s = x_t + (s - t) v(x_t, t). NFE = N."""

    def step(x, times):
        t, s = times
        return x + (s - t) * evaluate(model, "velocity", schedule, x, t), None

    return jax.lax.scan(step, x_T, _steps(ts))[0]


def heun(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"]
         ) -> Float[Array, "B ..."]:
    """Heun's second-order method on the probability-flow ODE, on every step of the grid. NFE = 2N.

    x' = x_t + (s - t) v(x_t, t),  x_s = x_t + (s - t) (v(x_t, t) + v(x', s)) / 2.

    EDM's sampler (Karras et al. 2022, Alg. 1; NVlabs/edm `generate.py`, `if i < num_steps - 1` before the 2nd
    order correction) skips the correction only on its extra last step sigma_min -> 0, where v is singular; that
    step is `sample(..., denoise=True)` here (an Euler step to sigma = 0 lands on D(x) = x0_hat). Every step of
    this grid ends at t >= t_min > 0, so each one is corrected: an Euler step over the last grid interval (where
    the modes form) would make the method first order exactly where its error matters most.
    """

    def step(x, times):
        t, s = times
        v = evaluate(model, "velocity", schedule, x, t)
        x_euler = x + (s - t) * v
        return x + 0.5 * (s - t) * (v + evaluate(model, "velocity", schedule, x_euler, s)), None

    return jax.lax.scan(step, x_T, _steps(ts))[0]


# ----------------------------------------------------------------------------- exponential integrators


def _x0_and_eps(model: Model, schedule: Schedule, x, t):
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    pred = model.predict(x, t_B)
    return (convert(pred, model.prediction, "x0", schedule, x, t_B),
            convert(pred, model.prediction, "eps", schedule, x, t_B))


def ddim(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"],
         key: PRNGKeyArray | None = None, eta: ArrayLike = 0.0) -> Float[Array, "B ..."]:
    """DDIM (Song et al. 2021a, Eq. 12) for a continuous schedule. NFE = N.

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,   c^2 = eta^2 sigma_s^2 (1 - e^{-2h}),

    where sigma_s^2 (1 - e^{-2h}) = sigma_s^2 sigma_{t|s}^2 / sigma_t^2 is the variance of q(x_s | x_t, x0). With
    eta = 0 (no key needed) it is the first-order exponential integrator (= `dpm_solver_1`); eta = 1 is `ddpm`.
    x0_hat and eps_hat come from one evaluation, so x0 or velocity models are finite at alpha_t = 0.
    """
    keys = None if key is None else jax.random.split(key, ts.shape[0] - 1)

    def step(x, inputs):
        (t, s), step_key = inputs
        x0, eps = _x0_and_eps(model, schedule, x, t)
        sigma_s = schedule.sigma(s)
        x_s = schedule.alpha(s) * x0
        if step_key is None:
            return x_s + sigma_s * eps, None
        h = _lambda(schedule, s) - _lambda(schedule, t)
        c2 = -jnp.asarray(eta, x.dtype) ** 2 * sigma_s**2 * jnp.expm1(-2.0 * h)
        z = jax.random.normal(step_key, x.shape, x.dtype)
        return x_s + jnp.sqrt(jnp.maximum(sigma_s**2 - c2, 0.0)) * eps + jnp.sqrt(c2) * z, None

    return jax.lax.scan(step, x_T, (_steps(ts), keys))[0]


def dpm_solver_1(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"]
                 ) -> Float[Array, "B ..."]:
    """DPM-Solver-1 (Lu et al. 2022, Eq. 3.7): x_s = (alpha_s / alpha_t) x_t - sigma_s (e^h - 1) eps_hat(x_t, t),
    h = lambda_s - lambda_t. NFE = N. Needs alpha(t_max) > 0."""
    _check_finite_lambda(schedule, "dpm_solver_1")

    def step(x, times):
        t, s = times
        h = _lambda(schedule, s) - _lambda(schedule, t)
        eps = evaluate(model, "eps", schedule, x, t)
        return schedule.alpha(s) / schedule.alpha(t) * x - schedule.sigma(s) * jnp.expm1(h) * eps, None

    return jax.lax.scan(step, x_T, _steps(ts))[0]


def dpm_solver_2(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"]
                 ) -> Float[Array, "B ..."]:
    """DPM-Solver-2 (Lu et al. 2022, Alg. 1, r1 = 1/2): a midpoint step in lambda. NFE = 2N.

    r = t_lambda((lambda_t + lambda_s) / 2),
    u = (alpha_r / alpha_t) x_t - sigma_r (e^{h/2} - 1) eps_hat(x_t, t),
    x_s = (alpha_s / alpha_t) x_t - sigma_s (e^h - 1) eps_hat(u, r).
    """
    return _exponential_midpoint(model, schedule, x_T, ts, data_prediction=False)


def dpm_solver_pp_2s(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"]
                     ) -> Float[Array, "B ..."]:
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1 with r = 1/2): the second-order single-step solver in the data
    prediction x0_hat. NFE = 2N.

    r = t_lambda((lambda_t + lambda_s) / 2),
    u = (sigma_r / sigma_t) x_t - alpha_r (e^{-h/2} - 1) x0_hat(x_t, t),
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) x0_hat(u, r)

    (LuChengTHU/dpm-solver `dpm_solver_pytorch.py`, `singlestep_dpm_solver_second_update`, "dpmsolver++" branch with
    r1 = 0.5). Unlike `dpm_solver_2`, the x0 form does not divide an eps error by alpha_t, so it stays accurate at
    few steps; exact in one step when the data are one point (x0_hat constant).
    """
    return _exponential_midpoint(model, schedule, x_T, ts, data_prediction=True)


def _exponential_midpoint(model: Model, schedule: Schedule, x_T: Array, ts: Array, data_prediction: bool) -> Array:
    """The midpoint-in-lambda exponential integrator in either prediction: with (keep, scale, sign, target) =
    (alpha, sigma, +1, eps) or (sigma, alpha, -1, x0), a step to v is keep_v / keep_t x - scale_v (e^{sign f h} - 1)
    target_hat, f = 1/2 to the midpoint r and f = 1 to s (`dpm_solver_2`, `dpm_solver_pp_2s`)."""
    name = "dpm_solver_pp_2s" if data_prediction else "dpm_solver_2"
    _check_finite_lambda(schedule, name)
    keep, scale = (schedule.sigma, schedule.alpha) if data_prediction else (schedule.alpha, schedule.sigma)
    sign, target = (-1.0, "x0") if data_prediction else (1.0, "eps")

    def step(x, times):
        t, s = times
        lam_t, lam_s = _lambda(schedule, t), _lambda(schedule, s)
        h = lam_s - lam_t
        r = time_at_lambda(schedule, lam_t + 0.5 * h).astype(x.dtype)
        keep_t = keep(t)
        u = keep(r) / keep_t * x - scale(r) * jnp.expm1(sign * 0.5 * h) * evaluate(model, target, schedule, x, t)
        return keep(s) / keep_t * x - scale(s) * jnp.expm1(sign * h) * evaluate(model, target, schedule, u, r), None

    return jax.lax.scan(step, x_T, _steps(ts))[0]


# ----------------------------------------------------------------------------- stochastic samplers


def ddpm(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"],
         key: PRNGKeyArray) -> Float[Array, "B ..."]:
    """Ancestral sampling: x_s ~ q(x_s | x_t, x0 = x0_hat(x_t, t)) for a continuous schedule. NFE = N.

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 (the posterior of
    Kingma et al. 2021's continuous-time VDM; Ho et al. 2020, Eq. 7, in discrete time):

        mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat,
        var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,        sigma_{t|s}^2 / sigma_t^2 = 1 - e^{-2h}.

    Noise is added on every step, the last included, so the output is a draw of p_{t_min}.
    """
    keys = jax.random.split(key, ts.shape[0] - 1)

    def step(x, inputs):
        (t, s), step_key = inputs
        x0 = evaluate(model, "x0", schedule, x, t)
        sigma_s, sigma_t = schedule.sigma(s), schedule.sigma(t)
        ratio = -jnp.expm1(-2.0 * (_lambda(schedule, s) - _lambda(schedule, t)))  # sigma_{t|s}^2 / sigma_t^2
        mean = schedule.alpha(t) / schedule.alpha(s) * (sigma_s / sigma_t) ** 2 * x + schedule.alpha(s) * ratio * x0
        return mean + jnp.sqrt(ratio) * sigma_s * jax.random.normal(step_key, x.shape, x.dtype), None

    return jax.lax.scan(step, x_T, (_steps(ts), keys))[0]


def euler_maruyama(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], ts: Float[Array, " N+1"],
                   key: PRNGKeyArray) -> Float[Array, "B ..."]:
    """Euler-Maruyama on the reverse SDE dx = [f(t) x - g(t)^2 score] dt + g(t) dW_bar (Song et al. 2021b, Eq. 6),
    backwards in time: x_s = x_t - [f x_t - g^2 score(x_t, t)] (t - s) + g(t) sqrt(t - s) z. NFE = N.

    A `lax.scan` on the sampler's own (possibly non-uniform, decreasing) grid, rather than `gvlab.sde.solve_sde`,
    whose grid is uniform and increasing; the tests check the two agree on a uniform grid.
    """
    keys = jax.random.split(key, ts.shape[0] - 1)

    def step(x, inputs):
        (t, s), step_key = inputs
        score = evaluate(model, "score", schedule, x, t)
        g2 = schedule.diffusion_squared(t)
        drift = schedule.drift_coefficient(t) * x - g2 * score
        z = jax.random.normal(step_key, x.shape, x.dtype)
        return x - (t - s) * drift + jnp.sqrt(g2 * (t - s)) * z, None

    return jax.lax.scan(step, x_T, (_steps(ts), keys))[0]


# ----------------------------------------------------------------------------- adaptive probability-flow ODE


def velocity_field(model: Model, schedule: Schedule, x_example: Array, t_example: ArrayLike):
    """The probability-flow velocity as `field(t, x, args)` for diffrax, and its `args`.

    The model's traced parameters are hoisted out by `jax.closure_convert` and passed through `args`, so the field
    closes over nothing traced (as `gvlab.sde.solve` asks of vector fields).
    """
    velocity, consts = jax.closure_convert(lambda x, t: evaluate(model, "velocity", schedule, x, t),
                                           x_example, jnp.asarray(t_example, x_example.dtype))

    def field(t, x, args):
        return velocity(x, jnp.asarray(t, x.dtype), *args)

    return field, tuple(consts)


def adaptive_ode(model: Model, schedule: Schedule, x_T: Float[Array, "B ..."], *, rtol: float = 1e-5,
                 atol: float = 1e-5, max_steps: int = 4096) -> Samples:
    """The probability-flow ODE from t_max down to t_min with diffrax's Tsit5 and a PID step-size controller.

    The whole batch is one ODE state (one step sequence; the error norm is the RMS over the batch). NFE is
    diffrax's count of attempted steps times 6 (Tsit5 has 7 stages, the first same as the last) plus the first
    evaluation; diffrax re-evaluates the first stage after a rejected first step, so it can undercount by one or
    two. A solve that hits `max_steps` sets `failed` instead of raising (inside vmap).
    """
    field, consts = velocity_field(model, schedule, x_T, schedule.t_max)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=schedule.t_max, t1=schedule.t_min, dt0=None, y0=x_T,
        args=consts, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        throw=False,
    )
    nfe = 6 * jnp.asarray(sol.stats["num_steps"], jnp.int32) + 1
    return Samples(x=sol.ys[-1], nfe=nfe, failed=sol.result != diffrax.RESULTS.successful)


# ----------------------------------------------------------------------------- guidance and dispatch


def guided(predict: Callable[[Array, Array, Any], Array], prediction: Prediction, schedule: Schedule,
           condition: Any, null_condition: Any, w: ArrayLike) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): eps~ = (1 + w) eps(x, c) - w eps(x, null).

    Args:
        predict: the conditional network, `predict(x [B, ...], t [B], c) -> prediction`.
        prediction: its kind; both predictions are converted to eps before mixing.
        schedule: the Gaussian path (for the conversion).
        condition, null_condition: c and the null condition (e.g. labels `[B]` and the null class K, as in
            `gvlab.diffusion.losses.make_method`).
        w: guidance weight, a scalar or one per example `[B]`; w = 0 is the conditional model.

    Returns:
        an eps-predicting `Model`; each of its evaluations costs two network calls.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose from {PREDICTIONS}")

    def guided_predict(x, t):
        eps_c = convert(predict(x, t, condition), prediction, "eps", schedule, x, t)
        eps_null = convert(predict(x, t, null_condition), prediction, "eps", schedule, x, t)
        weight = per_example(jnp.asarray(w, x.dtype), x)
        return (1 + weight) * eps_c - weight * eps_null

    return Model(guided_predict, "eps")


def clip_x0(model: Model, schedule: Schedule, low: ArrayLike, high: ArrayLike) -> Model:
    """The model with its x0 prediction clipped to the data's range [low, high] (per coordinate, broadcast).

    Improved DDPM clips every predicted x0 to the data range before the sampler uses it (Nichol & Dhariwal 2021;
    openai/improved-diffusion `gaussian_diffusion.py`, `p_mean_variance.process_xstart`: `x.clamp(-1, 1)` when
    `clip_denoised`). Near t_max, x0 = (x - sigma eps) / alpha magnifies an eps error by 1 / alpha; the clip bounds
    what that error can do. Every sampler converts from the returned x0 prediction.
    """
    if model.prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {model.prediction!r}; choose from {PREDICTIONS}")

    def predict(x, t):
        x0 = convert(model.predict(x, t), model.prediction, "x0", schedule, x, t)
        return jnp.clip(x0, jnp.asarray(low, x.dtype), jnp.asarray(high, x.dtype))

    return Model(predict, "x0")


_DETERMINISTIC = {"euler": euler, "heun": heun, "dpm_solver_1": dpm_solver_1, "dpm_solver_2": dpm_solver_2,
                  "dpm_solver_pp_2s": dpm_solver_pp_2s}
_STOCHASTIC = {"ddpm": ddpm, "euler_maruyama": euler_maruyama}


def num_function_evals(name: str, num_steps: int) -> int:
    """Model evaluations of a fixed-step sampler with `num_steps` steps (see the table in the module docstring)."""
    if name not in _NFE_PER_STEP:
        raise ValueError(f"unknown fixed-step sampler {name!r}; choose from {tuple(_NFE_PER_STEP)}")
    return _NFE_PER_STEP[name] * num_steps


def sample(name: str, model: Model, schedule: Schedule, key: PRNGKeyArray, shape: tuple[int, ...],
           num_steps: int | None = None, *, spacing: Spacing = "uniform", eta: ArrayLike = 0.0,
           rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096, denoise: bool = False,
           dtype=jnp.float32) -> Samples:
    """Draw `shape[0]` samples with the named sampler (one of `SAMPLERS`).

    Args:
        name: sampler name; see the module docstring for the update and the NFE of each.
        model: the network and its prediction kind.
        schedule: the Gaussian path; the samplers run from `schedule.t_max` to `schedule.t_min`.
        key: split into the initial noise's key and the stochastic samplers' key.
        shape: `(B, ...)`, the shape of x.
        num_steps: N, the grid's number of steps (fixed-step samplers only).
        spacing: the grid ("uniform" in t or "log_snr", uniform in lambda).
        eta: DDIM's noise level (0: deterministic).
        rtol, atol, max_steps: the adaptive solver's tolerances and step budget ("adaptive" only).
        denoise: return Tweedie's x0_hat(x_{t_min}, t_min) instead of x_{t_min} (one more evaluation).
        dtype: dtype of the noise and the grid.

    Returns:
        `Samples(x [B, ...], nfe, failed)`.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {SAMPLERS}")
    if model.prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {model.prediction!r}; choose from {PREDICTIONS}")
    if name != "adaptive":
        if num_steps is None:
            raise ValueError(f"sampler {name!r} needs num_steps")
        ts = time_grid(schedule, num_steps, spacing, dtype)
    noise_key, step_key = jax.random.split(key)
    x_T = initial_noise(schedule, noise_key, shape, dtype)
    if name == "adaptive":
        result = adaptive_ode(model, schedule, x_T, rtol=rtol, atol=atol, max_steps=max_steps)
    else:
        if name == "ddim":
            deterministic = isinstance(eta, (int, float)) and eta == 0
            x = ddim(model, schedule, x_T, ts, None if deterministic else step_key, eta)
        elif name in _STOCHASTIC:
            x = _STOCHASTIC[name](model, schedule, x_T, ts, step_key)
        else:
            x = _DETERMINISTIC[name](model, schedule, x_T, ts)
        result = Samples(x, jnp.asarray(num_function_evals(name, num_steps), jnp.int32), jnp.zeros((), bool))
    if denoise:
        x0 = evaluate(model, "x0", schedule, result.x, schedule.t_min)
        result = result._replace(x=x0, nfe=result.nfe + 1)
    return result
