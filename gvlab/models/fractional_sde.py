"""Latent SDE driven by fractional noise, with a controlled variational posterior (Daems et al., ICLR 2024).

Prior (per latent dimension):  dX = b(X, t) dt + s dB^H_t  with B^H the Markov approximation of fBM
(`gvlab.sde.mafbm`); here b = -theta X (theta = 0: scaled fBM) and s = exp(log_scale) * unit_variance_scale(H),
so that s B^H has variance exp(2 log_scale) at t = 1 whatever H.

Posterior: the same system with a control u_phi(t, X, Y, context) added to the driving noise. u_phi is an MLP on
(sin t, cos t, X, sqrt(2 gamma_k) Y^k, context_t) (Y standardised by its stationary std) with a zero-initialised
output layer, so training starts from the prior.
The Hurst index is H = sigmoid(hurst_logit), learned when `learn_hurst` is set: omega(H) is then differentiated
through the linear solve of `optimal_coefficients`. `kind="brownian"` is the Brownian-motion model (H = 1/2
exactly, gamma = [0], omega = [1]).

The ELBO of observations o_i at grid indices n_i with Gaussian noise (Eq. 12):
    sum_i log N(o_i; X_{t_{n_i}}, sigma_obs^2) - 1/2 int |u|^2 dt.

`make_model(cfg)` returns the model's pure functions (`FractionalSDE`); `make(cfg, observations)` wraps them as a
`gvlab.types.Method` whose loss is that negative ELBO per observation for batches of observed paths
(`Observations`). `control_context` builds the per-step input of a control that looks ahead to the next
observations (or frame features).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.dists import DiagNormal
from gvlab.nn import MLP
from gvlab.sde import fractional
from gvlab.sde.mafbm import (SegmentedSolution, brownian_coefficients, rescaled_step, solve_fractional_smoothed,
                             solve_fractional, solve_fractional_observed, solve_fractional_segments)
from gvlab.sde.solve import SDESolution, brownian_increments
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.config import check_sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Fractional latent SDE.

    Attributes:
        dim: latent dimensions D (each with its own W and K OU processes).
        num_terms: K, OU processes per dimension.
        gamma_max: the geometric grid spans [1/gamma_max, gamma_max] (keep gamma_max * dt < 0.5 for Euler).
        kind: "type1" (Mandelbrot-van Ness), "type2" (Riemann-Liouville) or "brownian" (H = 1/2, no OU terms).
        omega_horizon: T of the optimal-omega criterion E int_0^T (B - B_hat)^2 dt.
        hurst: the Hurst index (fixed), or its initial value when `learn_hurst`.
        learn_hurst: train H = sigmoid(logit) with the rest.
        learn_scale: train log s (the noise scale) with the rest.
        theta: mean reversion of the prior drift -theta X.
        hidden: widths of the control MLP.
        context_dim: size of the per-time context the control sees (0: none).
        learn_step_scale: the control network also outputs log rho, the std ratio of the last Euler step into
            each observation (`segments`; see `gvlab.sde.mafbm.rescaled_step`).
        solver: "diffrax" (Euler through diffrax) or "scan" (the lax.scan reference; same numbers).
        smoothing_control: `observed` samples the exact smoothing posterior of the linear prior given all the
            path's observations (`gvlab.sde.mafbm.solve_fractional_smoothed`: a drift affine in (X, Y) with gains
            set by the time to the observations and an offset from a backward pass over all future ones, the
            exact step variances, Y_0 from its posterior) with the network's output added to the drift as a
            learned correction (zero at initialisation). False: the network alone is the control.
    """

    dim: int = 1
    num_terms: int = 5
    gamma_max: float = 20.0
    kind: Literal["type1", "type2", "brownian"] = "type1"
    omega_horizon: float = 2.0
    hurst: float = 0.5
    learn_hurst: bool = False
    learn_scale: bool = False
    theta: float = 0.0
    hidden: tuple[int, ...] = (128, 128)
    context_dim: int = 0
    learn_step_scale: bool = False
    solver: Literal["diffrax", "scan"] = "diffrax"
    smoothing_control: bool = False

    def __post_init__(self):
        check_sizes(self, "dim", "num_terms", "hidden")


class Coefficients(NamedTuple):
    hurst: Array
    gammas: Array
    omegas: Array
    scale: Array


class FractionalSDE(NamedTuple):
    """The model's pure functions.

    Attributes:
        init: `key -> params`.
        coefficients: `params -> Coefficients` (H, gamma, omega, noise scale).
        sample: `(params, key, x0 [D], context [N, C], num_steps, dt, posterior) -> SDESolution`; X is
            `ys[:, :, 0]`; `posterior=False` samples the prior (and its KL is 0).
        observed: `(params, key, x0, context [N, C], observations [M, D], num_steps, dt, obs_noise)
            -> SegmentedSolution`: the posterior with the step into each observation (every N / M steps) drawn
            from its exact conditional (`gvlab.sde.mafbm.solve_fractional_observed`); the ELBO is
            `log_lik - kl`.
        segments: `(params, key, x0, context [N, C], num_segments, num_steps, dt) -> SegmentedSolution`: the
            posterior whose last step into each segment end (every N / M steps) has a learned variance
            (`learn_step_scale`), for observations with a non-Gaussian likelihood; the caller adds
            log p(o_i | zs[i]) to `-kl`.
    """

    init: object
    coefficients: object
    sample: object
    observed: object
    segments: object


def make_model(cfg: Config) -> FractionalSDE:
    """Build the model's functions (static settings captured here; arguments carry arrays only)."""
    outputs = 2 * cfg.dim if cfg.learn_step_scale else cfg.dim
    control_net = MLP(tuple(cfg.hidden) + (outputs,), "tanh", zero_init_last=True)
    num_terms = 1 if cfg.kind == "brownian" else cfg.num_terms
    solve_kind = "type2" if cfg.kind == "brownian" else cfg.kind
    features = 2 + cfg.dim * (1 + num_terms) + cfg.context_dim

    def init(key: PRNGKeyArray):
        return {
            "control": control_net.init(key, jnp.zeros((1, features))),
            "hurst_logit": jnp.asarray(jnp.log(cfg.hurst) - jnp.log1p(-cfg.hurst), jnp.float32),
            "log_scale": jnp.zeros((), jnp.float32),
        }

    def coefficients(params) -> Coefficients:
        log_scale = params["log_scale"] if cfg.learn_scale else jax.lax.stop_gradient(params["log_scale"])
        if cfg.kind == "brownian":
            gammas, omegas = brownian_coefficients()
            return Coefficients(jnp.asarray(0.5, jnp.float32), gammas, omegas, jnp.exp(log_scale))
        logit = params["hurst_logit"] if cfg.learn_hurst else jax.lax.stop_gradient(params["hurst_logit"])
        hurst = jax.nn.sigmoid(logit)
        gammas = fractional.gamma_grid(cfg.num_terms, cfg.gamma_max)
        omegas = fractional.optimal_coefficients(hurst, gammas, cfg.omega_horizon, cfg.kind)
        return Coefficients(hurst, gammas, omegas, jnp.exp(log_scale) * fractional.unit_variance_scale(hurst, cfg.kind))

    def drift(t, x, p):
        return -cfg.theta * x

    def diffusion(t, x, p):
        return jnp.broadcast_to(p["scale"], x.shape)

    def control_fields(params, context, num_steps: int, dt: float):
        """The control u(t, Z) and the arrays it reads (its inputs are indexed by the Euler step of t)."""
        coef = coefficients(params)

        def network(t, z, p):
            index = jnp.clip(jnp.round(t / dt).astype(jnp.int32), 0, num_steps - 1)
            # Y^k has stationary std 1/sqrt(2 gamma_k) (3.2 for gamma = 0.05): standardise it so that slow
            # OU components do not saturate the tanh control (gamma = 0, Brownian motion, is left as it is).
            y_scale = jnp.where(p["gammas"] > 0, jnp.sqrt(2 * p["gammas"]), 1.0)
            z = jnp.concatenate([z[:, :1], z[:, 1:] * y_scale[None, :]], axis=1)
            inputs = [jnp.stack([jnp.sin(t), jnp.cos(t)]), z.reshape(-1)]
            if cfg.context_dim:
                inputs.append(p["context"][index])
            return control_net.apply(p["control"], jnp.concatenate(inputs)[None])[0]

        def control(t, z, p):
            return network(t, z, p)[: cfg.dim]

        def control_and_log_step_ratio(t, z, p):
            out = network(t, z, p)  # one evaluation for both heads
            return out[: cfg.dim], out[cfg.dim:]

        fields = {"control": params["control"], "scale": coef.scale, "context": context, "gammas": coef.gammas}
        return coef, control, control_and_log_step_ratio, fields

    def sample(params, key: PRNGKeyArray, x0: Float[Array, "D"], context: Float[Array, "N C"], num_steps: int,
               dt: float, posterior: bool = True, save_every: int = 1) -> SDESolution:
        coef, control, _, fields = control_fields(params, context, num_steps, dt)
        y0_key, noise_key = jax.random.split(key)
        increments = brownian_increments(noise_key, num_steps, dt, (cfg.dim,), x0.dtype)
        return solve_fractional(y0_key, x0, increments, gammas=coef.gammas, omegas=coef.omegas, kind=solve_kind,
                                drift=drift, diffusion=diffusion, params=fields,
                                control=control if posterior else None, dt=dt, save_every=save_every,
                                solver=cfg.solver)

    def observed(params, key: PRNGKeyArray, x0: Float[Array, "D"], context: Float[Array, "N C"],
                 observations: Float[Array, "M D"], num_steps: int, dt: float, obs_noise: float) -> SegmentedSolution:
        coef, control, _, fields = control_fields(params, context, num_steps, dt)
        y0_key, noise_key = jax.random.split(key)
        increments = brownian_increments(noise_key, num_steps, dt, (cfg.dim,), x0.dtype)
        if cfg.smoothing_control:  # the exact smoothing posterior of the linear prior, the network as a correction
            return solve_fractional_smoothed(y0_key, x0, increments, observations, obs_noise, gammas=coef.gammas,
                                             omegas=coef.omegas, kind=solve_kind, scale=coef.scale, theta=cfg.theta,
                                             dt=dt, control=control, params=fields)
        return solve_fractional_observed(y0_key, x0, increments, observations, obs_noise, gammas=coef.gammas,
                                         omegas=coef.omegas, kind=solve_kind, drift=drift, diffusion=diffusion,
                                         params=fields, control=control, dt=dt, solver=cfg.solver)

    def segments(params, key: PRNGKeyArray, x0: Float[Array, "D"], context: Float[Array, "N C"], num_segments: int,
                 num_steps: int, dt: float) -> SegmentedSolution:
        if not cfg.learn_step_scale:
            raise ValueError("segments needs Config(learn_step_scale=True): the network must output log rho")
        coef, control, control_and_log_step_ratio, fields = control_fields(params, context, num_steps, dt)
        y0_key, noise_key = jax.random.split(key)
        increments = brownian_increments(noise_key, num_steps, dt, (cfg.dim,), x0.dtype)
        return solve_fractional_segments(y0_key, x0, increments, jnp.arange(num_segments),
                                         rescaled_step(control_and_log_step_ratio, dt), gammas=coef.gammas,
                                         omegas=coef.omegas, kind=solve_kind, drift=drift, diffusion=diffusion,
                                         params=fields, control=control, dt=dt, solver=cfg.solver)

    return FractionalSDE(init=init, coefficients=coefficients, sample=sample, observed=observed, segments=segments)


def observation_log_likelihood(xs: Float[Array, "S D"], observations: Float[Array, "M D"],
                               indices: Array, noise: float) -> Array:
    """sum_i log N(o_i; X_{t_{n_i}}, noise^2), summed over observations and dimensions."""
    picked = xs[indices]
    return jnp.sum(DiagNormal(picked, jnp.full(picked.shape, noise, picked.dtype)).log_prob(observations))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observations:
    """How a batch observes the latent path, for the loss of `make`.

    M observations o_i = X_{t_i} + N(0, noise^2) at t_i = i T / M (i = 1..M), every N / M Euler steps of
    dt = T / N from X_0 = 0 (M is the size of the batch's observation axis).

    Attributes:
        horizon: T, the time of the last observation.
        num_steps: N, Euler steps on [0, T] (a multiple of M).
        noise: the observation noise std sigma.
        exact_step: draw the step that ends at each observation from its exact conditional given it
            (`FractionalSDE.observed`); False: plain controlled Euler steps and log N(o_i; X_{t_i}, sigma^2).
    """

    horizon: float = 1.0
    num_steps: int = 100
    noise: float = 0.1
    exact_step: bool = False


def make_path_elbo(model: FractionalSDE, obs: Observations):
    """`(params, observations [M, D], context [N, C], key) -> (log_lik, kl, failed)`: a one-sample ELBO of a path."""
    dt = obs.horizon / obs.num_steps

    def elbo(params, observations, context, key):
        x0 = jnp.zeros(observations.shape[1:], observations.dtype)
        if obs.exact_step:
            sol = model.observed(params, key, x0, context, observations, obs.num_steps, dt, obs.noise)
            return sol.log_lik, sol.kl, sol.failed
        path = model.sample(params, key, x0, context, obs.num_steps, dt)
        index = jnp.arange(1, observations.shape[0] + 1) * (obs.num_steps // observations.shape[0])
        log_lik = observation_log_likelihood(path.ys[:, :, 0], observations, index, obs.noise)
        return log_lik, path.kl[-1], path.failed

    return elbo


def make(cfg: Config, observations: Observations = Observations()) -> Method:
    """The fractional latent SDE as a `Method` over batches of observed paths.

    Batches are `{"obs": [B, M, D]}` plus, with `cfg.context_dim`, `"context": [B, N, C]` (the control's input at
    each Euler step, e.g. `control_context`). The loss is -(1/M) mean_b [log_lik_b - KL_b], one posterior path per
    example (Eq. 12 of Daems et al. 2024, divided by the number of observations); terms `elbo/elbo` (the mean
    ELBO, not divided), `elbo/recon`, `elbo/kl`, `sde/failed` (fraction of unfinished solves), `fbm/hurst` and
    `fbm/scale` (the current H and noise scale s). `make_model` exposes the solver-level functions.
    """
    model = make_model(cfg)
    elbo = make_path_elbo(model, observations)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        del step
        obs = batch["obs"]
        context = batch.get("context", jnp.zeros((obs.shape[0], observations.num_steps, 0), obs.dtype))
        keys = jax.random.split(key, obs.shape[0])
        log_lik, kl, failed = jax.vmap(elbo, in_axes=(None, 0, 0, 0))(params, obs, context, keys)
        value = jnp.mean(log_lik - kl)
        coef = model.coefficients(params)
        terms = {"elbo/elbo": value, "elbo/recon": jnp.mean(log_lik), "elbo/kl": jnp.mean(kl),
                 "sde/failed": jnp.mean(failed.astype(value.dtype)), "fbm/hurst": coef.hurst, "fbm/scale": coef.scale}
        return -value / obs.shape[1], terms

    return Method(init=lambda key, batch: model.init(key), loss=loss)


def control_context(targets: Float[Array, "M C"], steps_per_interval: int, count: int = 1) -> Float[Array, "N Q"]:
    """The control's input at each Euler step: the next `count` targets and the time left until the next one.

    Target i (an observation, or a frame's features) sits at the end of interval i, each interval
    `steps_per_interval` Euler steps long (N = M steps_per_interval). Step n reads targets
    `n // steps_per_interval + j` for j < count (past the last one, the last is repeated) and the time left,
    in units of the interval (1, 3/4, 2/4, 1/4 for 4 steps): in units of t it would span only a few dt, a nearly
    constant input from which the control could not form its bridge-like gain. Returns `[N, count C + 1]`.
    """
    num_targets = targets.shape[0]
    step = jnp.arange(num_targets * steps_per_interval)
    next_target = step // steps_per_interval
    time_left = (((next_target + 1) * steps_per_interval - step) / steps_per_interval).astype(targets.dtype)
    upcoming = jnp.minimum(next_target[:, None] + jnp.arange(count)[None, :], num_targets - 1)
    return jnp.concatenate([targets[upcoming].reshape(step.shape[0], -1), time_left[:, None]], axis=1)
