"""Diffusion- and flow-prior solvers of linear inverse problems y = A x + n: DPS, RED-Diff and FLAIR.

Every solver is `solver(model, schedule, op, y, sigma_y, key, num_steps, **options) -> Solution`: a prior
`Model` (`gvlab.diffusion.samplers`, any prediction kind) on the Gaussian path `schedule`, an operator of
`gvlab.inverse.operators` (a pytree), measurements y `[B, ...]` (one row per image of the batch `[B, H, W]`), the
noise level sigma_y, a key and the number of steps. Static options (strings, flags, step counts) are Python values
and everything else may be traced, so `jax.jit(functools.partial(red_diff, model, schedule, num_steps=50))` is one
program for every operator of a type, measurement, noise level and key, and hyperparameters passed as arrays
(`learning_rate`, `step_size`, ...) can be swept with `vmap` without recompiling.

    solver     update per step (x_t = alpha_t mu + sigma_t eps, D(x_t, t) = x0_hat)                     NFE   VJPs
    dps        x_s = DDIM/ancestral step from x_t - zeta grad_{x_t} ||y - A x0_hat(x_t)||              N     N
    red_diff   Adam on ||y - A mu||^2 / (2 sigma_y^2) + lambda w_t sg(eps_hat - eps)^T mu             N     0
    flair      mu -= lambda_R(t) (mu - D(x_t, t)) / t  (DTA noise), then hard data consistency (HDC)     N     0

RED-Diff and FLAIR share one step: with the same network evaluation,

    sigma_t / alpha_t (eps_hat - eps) = mu - D(x_t, t)        (exactly, for any model: `red_reading`),

so RED-Diff's gradient w_t (eps_hat - eps) with w_t = lambda sigma_t / alpha_t is lambda (mu - D), and FLAIR's
lambda_R (v_hat - (eps - mu)) for rectified flow is lambda_R (mu - D) / t. `regularised_step` computes
weight * (mu - D(x_t, t)) for both; they differ in the noise eps (fresh vs DTA), in how the data term enters
(Adam on the joint loss vs a decoupled projection) and in the weight (SNR vs calibrated).

`gaussian_prior_model` is the exact model of a Gaussian prior N(m, C), the oracle against which the solvers are
compared with `gvlab.inverse.gaussian.gaussian_posterior`.

    >>> from gvlab.diffusion.schedules import Schedule
    >>> from gvlab.inverse.operators import Identity
    >>> model = gaussian_prior_model(jnp.zeros((2, 2)), jnp.eye(4), Schedule("vp_linear"))
    >>> y = jnp.ones((1, 2, 2))
    >>> out = red_diff(model, Schedule("vp_linear"), Identity(), y, 0.5, jax.random.key(0), 5)
    >>> out.x.shape, out.residual.shape, int(out.nfe), int(out.backprops)
    ((1, 2, 2), (5, 1), 5, 0)
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from gvlab.diffusion.parameterisation import PREDICTIONS, Prediction, convert, per_example
from gvlab.diffusion.samplers import Model, initial_noise
from gvlab.diffusion.schedules import Schedule
from gvlab.inverse.operators import Inpainting, Operator

TimeOrder = Literal["descending", "ascending", "random"]
TIME_ORDERS = ("descending", "ascending", "random")
# RED-Diff's `denoise_term_weight` options (official `algos/reddiff.py`), as functions of s = sigma_t / alpha_t.
WEIGHTINGS = {
    "snr": lambda s: s,  # SNR^{-1/2}, the default; the code calls it "linear"
    "linear": lambda s: s,
    "sqrt": jnp.sqrt,
    "square": jnp.square,
    "log": jnp.log1p,
    "trunc_linear": lambda s: jnp.minimum(s, 1.0),
    "power2over3": lambda s: s ** (2.0 / 3.0),
    "constant": jnp.ones_like,
}
DATA_CONSISTENCY = ("gradient", "projection", "joint")


class Solution(NamedTuple):
    """A solver's output.

    Attributes:
        x: the reconstruction, `[B, H, W]`.
        residual: ||A x_k - y||_2 per example after step k, `[N, B]` (DPS: of the x0_hat(x_t) it guides with).
        times: the time of each step, `[N]`.
        nfe: network evaluations (one evaluation covers the batch), int32 scalar.
        backprops: backward passes through the network (DPS: one per step; RED-Diff and FLAIR: none).
        data_steps: gradient steps of FLAIR's data consistency per step and example, `[N, B]` (0 elsewhere).
    """

    x: Float[Array, "B H W"]
    residual: Float[Array, "N B"]
    times: Float[Array, " N"]
    nfe: Int[Array, ""]
    backprops: Int[Array, ""]
    data_steps: Int[Array, "N B"]


class Regularised(NamedTuple):
    """`regularised_step`'s output: the gradient weight * (mu - x0_hat) and the evaluation it came from."""

    gradient: Float[Array, "B H W"]
    x0: Float[Array, "B H W"]
    eps: Float[Array, "B H W"]


class RedReading(NamedTuple):
    """The RED reading's two sides (`red_reading`): lambda w(t) (eps_hat - eps) and lambda (mu - x0_hat)."""

    eps_form: Float[Array, "B H W"]
    denoiser_form: Float[Array, "B H W"]


# ----------------------------------------------------------------------------- the exact Gaussian prior


def gaussian_prior_model(mean: Float[ArrayLike, "*shape"], cov: Float[ArrayLike, "D D"], schedule: Schedule,
                         prediction: Prediction = "eps") -> Model:
    """The exact `Model` of data x0 ~ N(mean, cov) on the path x_t = alpha_t x0 + sigma_t eps.

    The marginal is x_t ~ N(alpha m, R_t), R_t = alpha^2 C + sigma^2 I, so with C = Q diag(c) Q^T

        E[eps | x_t] = sigma R_t^{-1} (x_t - alpha m),     E[x0 | x_t] = m + alpha C R_t^{-1} (x_t - alpha m)

    (Tweedie). "eps" and "score" are converted from the first, "x0" and "velocity" from the second, which stays
    finite at alpha = 0 (rectified flow at t = 1). Q and c come from one `eigh` when the model is built.

    Args:
        mean: m with the image shape (`[H, W]`), or flat `[D]`; x `[B, *mean.shape]` is flattened row-major (the
            order of `gvlab.inverse.operators.dense_matrix`).
        cov: C, `[D, D]` symmetric positive semi-definite.
        schedule: the Gaussian path.
        prediction: the kind the model returns.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose from {PREDICTIONS}")
    mean, cov = jnp.asarray(mean), jnp.asarray(cov)
    m_D = mean.reshape(-1)
    eigenvalues, q_DxD = jnp.linalg.eigh(cov)
    eigenvalues = jnp.maximum(eigenvalues, 0.0)

    def predict(x, t):
        x_BxD = x.reshape(x.shape[0], -1)
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        coords_BxD = (x_BxD - alpha * m_D[None]) @ q_DxD
        variances_BxD = alpha**2 * eigenvalues[None] + sigma**2
        if prediction in ("eps", "score"):
            eps = (coords_BxD * sigma / variances_BxD) @ q_DxD.T
            out = convert(eps, "eps", prediction, schedule, x_BxD, t)
        else:
            x0 = m_D[None] + (coords_BxD * alpha * eigenvalues[None] / variances_BxD) @ q_DxD.T
            out = convert(x0, "x0", prediction, schedule, x_BxD, t)
        return out.reshape(x.shape)

    return Model(predict, prediction)


# ----------------------------------------------------------------------------- the shared regularised step


def _x0_and_eps(model: Model, schedule: Schedule, x: Array, t: ArrayLike):
    t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    pred = model.predict(x, t_B)
    return (convert(pred, model.prediction, "x0", schedule, x, t_B),
            convert(pred, model.prediction, "eps", schedule, x, t_B))


def regularised_step(model: Model, schedule: Schedule, mu: Float[Array, "B H W"], eps: Float[Array, "B H W"],
                     t: ArrayLike, weight: ArrayLike) -> Regularised:
    """The regulariser gradient shared by RED-Diff and FLAIR: weight * (mu - D(x_t, t)), x_t = alpha_t mu + sigma_t eps.

    One network evaluation and no backpropagation through it (the stop-gradient of both papers). The weight
    (a scalar) is, with lambda the papers' regulariser weight:

        RED-Diff, SNR weighting  w_t = lambda sigma_t / alpha_t:   weight = lambda                (Mardani et al. 2024)
        RED-Diff, weighting w_t in general:                        weight = w_t alpha_t / sigma_t
        FLAIR (rectified flow, sigma_t = t):                        weight = lambda_R(t) / t       (Erbach et al. 2025)

    since w_t (eps_hat - eps) = w_t alpha_t / sigma_t (mu - D) (`red_reading`) and, for rectified flow,
    v_hat - (eps - mu) = (mu - D) / t. t is a scalar. The eps and x0 of the same evaluation are returned too
    (FLAIR's DTA reuses eps_hat as its next noise, x1_hat = x_t + (1 - t) v_hat).
    """
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x_t = alpha * mu + sigma * eps
    x0, eps_hat = jax.lax.stop_gradient(_x0_and_eps(model, schedule, x_t, t))
    return Regularised(gradient=weight * (mu - x0), x0=x0, eps=eps_hat)


def red_reading(model: Model, schedule: Schedule, mu: Float[Array, "B H W"], eps: Float[Array, "B H W"],
                t: ArrayLike, regulariser_weight: ArrayLike = 0.25, weighting: str = "snr") -> RedReading:
    """Both sides of RED-Diff's RED reading (Mardani et al. 2024, Sec. 4), from one evaluation at
    x_t = alpha_t mu + sigma_t eps:

        eps_form      = lambda w(t) (eps_hat(x_t, t) - eps)        (the gradient of the official `algos/reddiff.py`)
        denoiser_form = lambda (mu - x0_hat(x_t, t)),              x0_hat = (x_t - sigma_t eps_hat) / alpha_t.

    With the "snr" weighting w(t) = sigma_t / alpha_t the two are equal for every model, mu, eps and t (no
    expectation involved: mu - x0_hat = sigma_t / alpha_t (eps_hat - eps) by substituting x_t), so RED-Diff's
    update is a RED step toward the denoiser at a random noise level. Any other weighting differs by
    w(t) alpha_t / sigma_t, and an eps other than the one in x_t breaks it.
    """
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x0, eps_hat = _x0_and_eps(model, schedule, alpha * mu + sigma * eps, t)
    w = regulariser_weight * _weight(weighting, schedule, t)
    return RedReading(eps_form=w * (eps_hat - eps), denoiser_form=regulariser_weight * (mu - x0))


def _weight(weighting: str | Callable[[Array], Array], schedule: Schedule, t: ArrayLike) -> Array:
    """w(t) / lambda: a named RED-Diff weighting of sigma_t / alpha_t, or a callable of t."""
    if callable(weighting):
        return weighting(jnp.asarray(t))
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {tuple(WEIGHTINGS)} or pass a callable")
    return WEIGHTINGS[weighting](schedule.sigma(t) / schedule.alpha(t))


# ----------------------------------------------------------------------------- shared helpers


def _residual_norm(op: Operator, x: Array, y: Array) -> Float[Array, " B"]:
    r = op.forward(x) - y
    return jnp.sqrt(jnp.sum(jnp.square(r).reshape(r.shape[0], -1), axis=1))


def _data_gradient(op: Operator, mu: Array, y: Array) -> Array:
    """A^T (A mu - y), the gradient of ||A mu - y||^2 / 2 (by autodiff: also right for a nonlinear forward)."""
    forward, vjp = jax.vjp(op.forward, mu)
    return vjp(forward - y)[0]


def _measurement_count(op: Operator, y: Array) -> Array:
    """Measurements per example: the observed pixels of an `Inpainting` (its y is zero-filled to the image shape),
    else y's size per example."""
    if isinstance(op, Inpainting):
        return jnp.sum(op.mask.astype(y.dtype))
    return jnp.asarray(np.prod(y.shape[1:]), y.dtype)


def _order(times: Array, order: TimeOrder, key: PRNGKeyArray) -> Array:
    if order not in TIME_ORDERS:
        raise ValueError(f"unknown time order {order!r}; choose from {TIME_ORDERS}")
    if order == "ascending":
        return times[::-1]
    if order == "random":
        return jax.random.permutation(key, times)
    return times


def _solution(x, residual, times, nfe, backprops=0, data_steps=None) -> Solution:
    if data_steps is None:
        data_steps = jnp.zeros(residual.shape, jnp.int32)
    return Solution(x=x, residual=residual, times=times, nfe=jnp.asarray(nfe, jnp.int32),
                    backprops=jnp.asarray(backprops, jnp.int32), data_steps=data_steps)


def red_diff_times(schedule: Schedule, num_steps: int, dtype=jnp.float32) -> Float[Array, " N"]:
    """RED-Diff's descending grid t_k = t_min + k (t_max - t_min) / N, k = N - 1, ..., 0.

    The official `utils/functions.py::get_timesteps` iterates `reversed(range(0, 1000, 1000 // N))` with
    `alpha(i) = alphas_cumprod[i + 1]`, i.e. t = (i + 1) / 1000 = 0.001 + k / N on the continuous VP-linear
    schedule (beta 0.1 -> 20 is the DDPM beta 1e-4 -> 0.02, T = 1000): this grid with t_min = 1e-3, t_max = 1
    (up to a factor 0.999 on the spacing).
    """
    k = np.arange(num_steps - 1, -1, -1)
    return jnp.asarray(schedule.t_min + k * (schedule.t_max - schedule.t_min) / num_steps, dtype)


def flair_times(num_steps: int, ts_min: float = 0.18, dtype=jnp.float32) -> Float[Array, " N"]:
    """FLAIR's grid `linspace(1, ts_min, N + 2)[1:-1]` (official `pipelines/sd3.py::get_timesteps`): descending,
    excluding t = 1 and the low-noise end t < ts_min where the model is least accurate."""
    return jnp.asarray(np.linspace(1.0, ts_min, num_steps + 2)[1:-1], dtype)


# ----------------------------------------------------------------------------- DPS


def dps(model: Model, schedule: Schedule, op: Operator, y: Float[Array, "B ..."], sigma_y: ArrayLike,
        key: PRNGKeyArray, num_steps: int, *, step_size: ArrayLike = 0.5, eta: ArrayLike = 1.0) -> Solution:
    """Diffusion posterior sampling (Chung et al. 2023): a DDIM / ancestral step plus a likelihood step,

        x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z - zeta grad_{x_t} ||y - A x0_hat(x_t)||_2,

    c^2 = eta^2 sigma_s^2 (1 - e^{-2h}) (eta = 1: ancestral, the official DPS sampler; eta = 0: DDIM, RED-Diff's DPS
    baseline), with the gradient backpropagated through the network. zeta = `step_size` multiplies the gradient of
    the *unsquared* norm, as the official code (`condition_methods.py::PosteriorSampling`: `x_t -= norm_grad * scale`;
    `scale` 0.5 for random inpainting, 0.3 for SR x4 / Gaussian deblur in the official configs). That is the
    normalised step zeta_i = zeta' / ||y - A x0_hat|| on the squared norm with zeta' = zeta / 2, the form of
    RED-Diff's `algos/dps.py` (`grad_term_weight` zeta' 0.1 for inpainting, 1.0 for SR x4). The step does not involve
    sigma_y (the normalisation absorbs it); the argument is kept for one signature across solvers.

    The N evaluation times run from t_max to t_min (uniform) and the last step goes to clean data (alpha_s = 1,
    sigma_s = 0: x0_hat minus the guidance step), so NFE = N with N backward passes. Starts from
    `initial_noise` (pure noise, as the official DPS; RED-Diff's baseline starts from a noised pinv).
    """
    del sigma_y
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    noise_key, step_key = jax.random.split(key)
    dtype = y.dtype
    x_T = initial_noise(schedule, noise_key, op.pinv(y).shape, dtype)
    times = jnp.asarray(np.linspace(schedule.t_max, schedule.t_min, num_steps), dtype)
    targets = times[1:]
    lam_t, lam_s = 0.5 * schedule.log_snr(times[:-1]), 0.5 * schedule.log_snr(targets)
    c2 = -jnp.asarray(eta, dtype) ** 2 * schedule.sigma(targets) ** 2 * jnp.expm1(-2.0 * (lam_s - lam_t))
    # The last step goes to clean data: alpha = 1, sigma = 0, no noise.
    alpha_s = jnp.concatenate([schedule.alpha(targets), jnp.ones((1,), dtype)])
    sigma_s = jnp.concatenate([schedule.sigma(targets), jnp.zeros((1,), dtype)])
    c = jnp.sqrt(jnp.maximum(jnp.concatenate([c2, jnp.zeros((1,), dtype)]), 0.0))
    keys = jax.random.split(step_key, num_steps)

    def residual_norms(x, t):
        x0, eps = _x0_and_eps(model, schedule, x, t)
        sq = jnp.sum(jnp.square(op.forward(x0) - y).reshape(x.shape[0], -1), axis=1)
        # sqrt with a finite gradient at a zero residual
        norms = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        return jnp.sum(norms), (x0, eps, norms)  # examples are independent: the sum's gradient is per example

    def step(x, inputs):
        t, a, s, c_s, step_key = inputs
        grad, (x0, eps, norms) = jax.grad(residual_norms, has_aux=True)(x, t)
        z = jax.random.normal(step_key, x.shape, x.dtype)
        x_s = a * x0 + jnp.sqrt(jnp.maximum(s**2 - c_s**2, 0.0)) * eps + c_s * z - step_size * grad
        return x_s, norms

    x, residual = jax.lax.scan(step, x_T, (times, alpha_s, sigma_s, c, keys))
    return _solution(x, residual, times, num_steps, backprops=num_steps)


# ----------------------------------------------------------------------------- RED-Diff


def red_diff(model: Model, schedule: Schedule, op: Operator, y: Float[Array, "B ..."], sigma_y: ArrayLike,
             key: PRNGKeyArray, num_steps: int, *, regulariser_weight: ArrayLike = 0.25, learning_rate: ArrayLike = 0.1,
             weighting: str | Callable[[Array], Array] = "snr", time_order: TimeOrder = "descending",
             data_weight: ArrayLike | None = None, init: Float[Array, "B H W"] | None = None,
             times: Float[Array, " N"] | None = None, optimizer: optax.GradientTransformation | None = None
             ) -> Solution:
    """RED-Diff (Mardani et al. 2024; official `algos/reddiff.py`), with the stop-gradient.

    The variational mean mu (init A^+ y) takes one optimiser step per time t_k of a descending grid, each with a
    fresh eps, on

        loss = data_weight ||y - A mu||^2 / 2 + lambda w(t) sg(eps_hat(x_t, t) - eps)^T mu,
        x_t = alpha_t mu + sigma_t eps,

    whose regulariser gradient is `regularised_step` with weight w(t) alpha_t / sigma_t (= lambda for the SNR
    weighting). Returns mu after the last step (the code's `sigma_x0 = 0`).

    Defaults are the official `_configs/algo/reddiff.yaml`: lambda = `grad_term_weight` 0.25, Adam with
    lr 0.1 and betas (0.9, 0.99), `denoise_term_weight: linear` (w = lambda sigma_t / alpha_t, SNR^{-1/2}: "snr"
    here), descending times (`red_diff_times`); the experiments default to 50 steps. data_weight defaults to
    1 / sigma_y^2, the paper's likelihood. The code instead averages both terms over pixels with `obs_weight` 1,
    i.e. data_weight = 1 against lambda with sums (Adam is invariant to the common 1 / numel): pass
    `data_weight=1.0` for the code's balance. Both reductions agree where only one term acts on a pixel (the
    missing pixels of inpainting).

    Args:
        regulariser_weight: lambda.
        learning_rate: Adam's step size (ignored when `optimizer` is given).
        weighting: "snr" (default), "constant" (w = lambda: the ablation), the code's other options ("sqrt",
            "square", "log", "trunc_linear", "power2over3", functions of sigma_t / alpha_t), or a callable
            t -> w / lambda.
        time_order: "descending" (default), "ascending" or "random" (a permutation of the grid, the ablation).
        data_weight: the data term's weight (see above); None: 1 / sigma_y^2, 1.0: the official code's balance.
        init: mu_0, `[B, H, W]`; None: A^+ y.
        times: a grid to use instead of `red_diff_times` (before `time_order` is applied).
        optimizer: an optax transformation to use instead of Adam (e.g. `optax.sgd(1.0)`).
    """
    _, order_key, step_key = jax.random.split(key, 3)  # the first key is FLAIR's DTA start: keep the streams aligned
    dtype = y.dtype
    grid = red_diff_times(schedule, num_steps, dtype) if times is None else jnp.asarray(times, dtype)
    grid = _order(grid, time_order, order_key)
    mu = op.pinv(y) if init is None else jnp.asarray(init, dtype)
    data_weight = 1.0 / jnp.square(jnp.asarray(sigma_y, dtype)) if data_weight is None else data_weight
    optimizer = optax.adam(learning_rate, b1=0.9, b2=0.99) if optimizer is None else optimizer
    keys = jax.random.split(step_key, grid.shape[0])

    def step(carry, inputs):
        mu, state = carry
        t, k = inputs
        eps = jax.random.normal(k, mu.shape, mu.dtype)
        w = regulariser_weight * _weight(weighting, schedule, t)
        reg = regularised_step(model, schedule, mu, eps, t, w * schedule.alpha(t) / schedule.sigma(t))
        grad = reg.gradient + data_weight * _data_gradient(op, mu, y)
        updates, state = optimizer.update(grad, state, mu)
        mu = optax.apply_updates(mu, updates)
        return (mu, state), _residual_norm(op, mu, y)

    (mu, _), residual = jax.lax.scan(step, (mu, optimizer.init(mu)), (grid, keys))
    return _solution(mu, residual, grid, grid.shape[0])


# ----------------------------------------------------------------------------- FLAIR


def calibrated_weights(errors: Float[ArrayLike, " n"], regulariser_weight: ArrayLike = 0.5,
                       shift: ArrayLike = 0.0) -> Float[Array, " n"]:
    """FLAIR's calibrated regulariser weights (CRW) from a model-error curve e(t) on `linspace(1, 0, n)`:

        lambda_R = regulariser_weight * max(w + shift, 0),    w = (1 / e) / mean(1 / e)

    (official `var_post_samp.py`, `1 / (e + 1e-7)` normalised by `nansum / n`; `reg-shift` 0 and
    `regularizer_weight` 0.5 in every config). Regularise more where the model is more accurate.
    """
    inverse = 1.0 / (jnp.asarray(errors) + 1e-7)
    w = inverse / jnp.nansum(inverse) * inverse.shape[0]
    return jnp.maximum(w + shift, 0.0) * regulariser_weight


def model_error_curve(model: Model, schedule: Schedule, key: PRNGKeyArray, x0: Float[Array, "B H W"],
                      num_times: int = 100, target: Prediction = "velocity") -> Float[Array, " n"]:
    """e(t) = mean over x0 ~ data, eps, pixels of (prediction - target)^2 at t on `linspace(1, 0, num_times)`
    (clipped to [t_min, t_max]), FLAIR's CRW calibration (`LCFM/*.npy`: the SD3 velocity MSE on 100 values of t,
    DIV2K). target "velocity" is u = alpha_dot x0 + sigma_dot eps (eps - x0 for rectified flow)."""
    times = jnp.clip(jnp.linspace(1.0, 0.0, num_times, dtype=x0.dtype), schedule.t_min, schedule.t_max)
    keys = jax.random.split(key, num_times)

    def error(t, k):
        eps = jax.random.normal(k, x0.shape, x0.dtype)
        t_B = jnp.full(x0.shape[:1], t, x0.dtype)
        x_t = schedule.marginal(x0, t_B, eps)
        truth = {"eps": eps, "x0": x0, "score": -eps / schedule.sigma(t),
                 "velocity": schedule.alpha_dot(t) * x0 + schedule.sigma_dot(t) * eps}[target]
        pred = convert(model.predict(x_t, t_B), model.prediction, target, schedule, x_t, t_B)
        return jnp.mean(jnp.square(pred - truth))

    return jax.vmap(error)(times, keys)


def _lookup(curve: Array, t: Array) -> Array:
    """The entry of a curve on `linspace(1, 0, n)` nearest to t (official `find_closest_t`)."""
    grid = jnp.linspace(1.0, 0.0, curve.shape[0], dtype=t.dtype)
    return curve[jnp.argmin(jnp.abs(grid - t))]


def flair(model: Model, schedule: Schedule, op: Operator, y: Float[Array, "B ..."], sigma_y: ArrayLike,
          key: PRNGKeyArray, num_steps: int, *, regulariser_weight: ArrayLike = 0.5,
          error_curve: Float[ArrayLike, " n"] | None = None, crw: bool = True, dta: bool = True,
          data_consistency: str = "gradient", learning_rate: ArrayLike = 1.0, data_learning_rate: ArrayLike = 0.1,
          data_steps: int = 15, data_tolerance: ArrayLike | None = None, likelihood_weight: ArrayLike = 1.0,
          ts_min: float = 0.18, time_order: TimeOrder = "descending", init: Float[Array, "B H W"] | None = None,
          times: Float[Array, " N"] | None = None, max_step: ArrayLike | None = None) -> Solution:
    """FLAIR (Erbach et al. 2025; official `src/flair/var_post_samp.py`) in pixel space, for a flow prior.

    For each t of a descending grid (`flair_times`: 50 steps in (ts_min = 0.18, 1)), from mu_0 = A^+ y:

    1. DTA (deterministic trajectory adjustment): eps_t = a x1_hat + sqrt(1 - a^2) xi, a = 1 - t (`inv_alpha: 1-t`),
       xi ~ N(0, I), x1_hat the previous step's eps_hat (x_t + (1 - t) v_hat; initially N(0, I)). `dta=False`: a = 0.
    2. Regulariser: mu -= learning_rate lambda_R(t) (v_hat - (eps_t - mu)) = `regularised_step` with weight
       lambda_R(t) / t (SGD, lr 1), one network evaluation, no backprop.
    3. HDC (hard data consistency), decoupled from 2, by `data_consistency`:
       "gradient": up to `data_steps` (15) SGD steps, lr `data_learning_rate` (0.1 for inpainting and motion blur,
       12 for SR x12 in the configs), on w_D ||A mu - y||^2, stopping per example once
       ||A mu - y||^2 < tolerance * M (M measurements; the code's `early_stopping` 1e-4 = sigma_y^2 at its
       sigma_y = 0.01: the discrepancy principle, so `data_tolerance` defaults to sigma_y^2);
       "projection": mu += A^+ (y - A mu), the exact projection onto {A x = y} (A A^+ = I on the range of A);
       "joint" (the ablation without HDC): the data gradient 2 w_D A^T (A mu - y) joins step 2's single step.
    4. CRW: lambda_R(t) = `calibrated_weights(error_curve, regulariser_weight)` at the nearest of
       `linspace(1, 0, n)` (`likelihood_weight_mode: reg_weight`: w_D = likelihood_weight lambda_R(t));
       `crw=False`: lambda_R = regulariser_weight and w_D = likelihood_weight (the code's scalar weight).

    Returns mu (the code decodes it; here pixel space, D = identity). The weights assume sigma_t = t (rectified
    flow, a velocity model: FLAIR's setting); other schedules run with sigma_t in place of t.

    Args:
        error_curve: the model-error curve e(t) on `linspace(1, 0, n)` (`model_error_curve`); needed when `crw`.
        crw, dta: switch calibration and trajectory adjustment off for the ablations.
        data_consistency: "gradient" (official), "projection" or "joint" (see 3).
        init: mu_0 (None: A^+ y). times: a grid to use instead of `flair_times` (before `time_order`).
        max_step: None (official) or a cap c on the regulariser's step size, min(learning_rate lambda_R(t) / t, c)
            (not in the official code; an ablation). The step moves mu the fraction lr lambda_R / t of the way to
            D(x_t, t): above 1 it overshoots the denoiser (mu - s (mu - D) = D + (1 - s)(mu - D)), which happens at
            the last times (t ~ ts_min) when lambda_R > ts_min / lr; c = 1 stops at D.
    """
    if data_consistency not in DATA_CONSISTENCY:
        raise ValueError(f"unknown data_consistency {data_consistency!r}; choose from {DATA_CONSISTENCY}")
    if crw and error_curve is None:
        raise ValueError("CRW needs the model's error curve (`model_error_curve`); pass error_curve or crw=False")
    init_key, order_key, step_key = jax.random.split(key, 3)
    dtype = y.dtype
    grid = flair_times(num_steps, ts_min, dtype) if times is None else jnp.asarray(times, dtype)
    grid = _order(grid, time_order, order_key)
    curve = calibrated_weights(error_curve, regulariser_weight) if crw else None
    mu = op.pinv(y) if init is None else jnp.asarray(init, dtype)
    tolerance = jnp.square(jnp.asarray(sigma_y, dtype)) if data_tolerance is None else data_tolerance
    threshold = tolerance * _measurement_count(op, y)
    keys = jax.random.split(step_key, grid.shape[0])

    def hdc(mu, data_w):
        def body(_, carry):
            mu, count = carry
            forward, vjp = jax.vjp(op.forward, mu)
            r = forward - y
            active = jnp.sum(jnp.square(r).reshape(r.shape[0], -1), axis=1) >= threshold  # checked first, as the code
            update = data_learning_rate * 2.0 * data_w * vjp(r)[0]  # the gradient of w_D ||A mu - y||^2
            return mu - per_example(active, mu) * update, count + active.astype(jnp.int32)

        return jax.lax.fori_loop(0, data_steps, body, (mu, jnp.zeros(mu.shape[:1], jnp.int32)))

    def step(carry, inputs):
        mu, x1 = carry
        t, k = inputs
        lam = _lookup(curve, t) if crw else jnp.asarray(regulariser_weight, dtype)
        data_w = likelihood_weight * lam if crw else likelihood_weight
        xi = jax.random.normal(k, mu.shape, mu.dtype)
        eps = (1.0 - t) * x1 + jnp.sqrt(1.0 - jnp.square(1.0 - t)) * xi if dta else xi
        weight = lam / schedule.sigma(t)
        if max_step is not None:  # learning_rate * weight <= max_step
            weight = jnp.minimum(weight, max_step / learning_rate)
        reg = regularised_step(model, schedule, mu, eps, t, weight)
        grad = reg.gradient
        if data_consistency == "joint":
            grad = grad + 2.0 * data_w * _data_gradient(op, mu, y)
        mu = mu - learning_rate * grad
        count = jnp.zeros(mu.shape[:1], jnp.int32)
        if data_consistency == "gradient":
            mu, count = hdc(mu, data_w)
        elif data_consistency == "projection":
            mu = mu + op.pinv(y - op.forward(mu))
        return (mu, reg.eps), (_residual_norm(op, mu, y), count)

    x1 = jax.random.normal(init_key, mu.shape, mu.dtype)
    (mu, _), (residual, counts) = jax.lax.scan(step, (mu, x1), (grid, keys))
    return _solution(mu, residual, grid, grid.shape[0], data_steps=counts)
