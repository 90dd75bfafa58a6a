"""Measuring samplers, trained models and guidance against an analytic target (the `diffusion/principles` checks).

On a Gaussian mixture (`gvlab.data.gaussian_mixture`) every marginal p_t is analytic, so a sampler can be run with
the exact field eps*(x, t) and its error separated from the network's. The quality measure is the sliced
Wasserstein-2 distance (`gvlab.diffusion.metrics.sliced_wasserstein`) between N samples and N fresh data points;
`noise_floor` is what a perfect sampler scores (two independent data sets).

* Identities: `conversion_errors` (one velocity field, reached via x0* and eps* or via f x - g^2 score / 2) and
  `ddim_vs_dpm1` (DDIM with eta = 0 is DPM-Solver-1); `identity_errors` runs both in float64 and float32.
* Samplers with the analytic field: `sampler_swd`, `adaptive_swd` (jitted once per sampler and step count) and
  `compare_samplers`, the table over seeds x samplers x evaluation budgets (NFE, `steps_for`).
* Trained models: `make_sample_evaluator` (SWD of a trained network's samples) and `make_guidance_evaluator`
  (class accuracy and spread under classifier-free guidance), per-run evaluators for `run.evaluate`
  (`gvlab.evals`). Their run inputs are `{"params": ..., "key": ...}`: each run samples with its own key, so
  the seeds of a fit draw independent noise.

Static settings (sample counts, sampler names, step counts, schedules) are Python values; arrays (the mixture,
keys, guidance weights) are arguments, so one compiled program serves every seed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.data import gaussian_mixture as gm
from gvlab.diffusion import samplers
from gvlab.diffusion.metrics import sliced_wasserstein
from gvlab.diffusion.parameterisation import convert, probability_flow_velocity
from gvlab.diffusion.schedules import KINDS, Schedule


def steps_for(name: str, nfe: int) -> int:
    """The number of steps of sampler `name` that fits `nfe` evaluations (Heun: 2N - 1, DPM-Solver-2: 2N, others N)."""
    if name == "heun":
        return (nfe + 1) // 2
    if name == "dpm_solver_2":
        return max(nfe // 2, 1)
    return nfe


def analytic_model(spec: gm.Mixture, schedule: Schedule) -> samplers.Model:
    """The exact eps*(x, t) of the mixture under `schedule`, as a sampler model."""
    return samplers.Model(lambda x, t: gm.eps_star(spec, schedule, x, t), "eps")


def swd_to_data(spec: gm.Mixture, samples: Float[Array, "N d"], key: PRNGKeyArray,
                num_projections: int) -> Float[Array, ""]:
    """SWD between `samples` and as many fresh data points (the data draw and the projections come from `key`)."""
    data_key, projection_key = jax.random.split(key)
    return sliced_wasserstein(samples, gm.sample(spec, data_key, samples.shape[0]), projection_key, num_projections)


@functools.partial(jax.jit, static_argnums=(2, 3))
def noise_floor(spec: gm.Mixture, key: PRNGKeyArray, num: int, num_projections: int) -> Float[Array, ""]:
    """The SWD between two independent data sets of `num` points: what a perfect sampler scores."""
    a_key, b_key = jax.random.split(key)
    return swd_to_data(spec, gm.sample(spec, a_key, num), b_key, num_projections)


@functools.partial(jax.jit, static_argnums=2)  # one program per dtype: eager, each small op compiles on its own
def conversion_errors(spec: gm.Mixture, key: PRNGKeyArray, num: int) -> dict[str, Float[Array, ""]]:
    """max |(alpha_dot x0* + sigma_dot eps*) - (f x - g^2 score / 2)| per schedule kind, on `num` marginal samples
    x_t with t uniform in [t_min, min(t_max, 0.99)] (the score converted to eps, then to the velocity via x0)."""
    out = {}
    for i, kind in enumerate(KINDS):
        schedule = Schedule(kind)
        data_key, t_key, eps_key = jax.random.split(jax.random.fold_in(key, i), 3)
        t = jax.random.uniform(t_key, (num,), minval=schedule.t_min, maxval=min(schedule.t_max, 0.99))
        x = schedule.marginal(gm.sample(spec, data_key, num), t, jax.random.normal(eps_key, (num, 2)))
        score = gm.score(spec, schedule, x, t)
        eps = convert(score, "score", "eps", schedule, x, t)
        via_x0 = convert(eps, "eps", "velocity", schedule, x, t)
        out[kind] = jnp.max(jnp.abs(via_x0 - probability_flow_velocity(score, schedule, x, t)))
    return out


@functools.partial(jax.jit, static_argnums=(1, 3, 4, 5))
def ddim_vs_dpm1(spec: gm.Mixture, schedule: Schedule, key: PRNGKeyArray, shape: tuple[int, ...], steps: int,
                 dtype) -> Float[Array, ""]:
    """max |DDIM(eta = 0) - DPM-Solver-1| with the same noise and steps (one exponential integrator, two forms)."""
    model = analytic_model(spec, schedule)
    a = samplers.sample("ddim", model, schedule, key, shape, steps, dtype=dtype).x
    b = samplers.sample("dpm_solver_1", model, schedule, key, shape, steps, dtype=dtype).x
    return jnp.max(jnp.abs(a - b))


def identity_errors(spec: gm.Mixture, identity_key: PRNGKeyArray, num: int, schedule: Schedule,
                    sampler_keys: Sequence[PRNGKeyArray], shape: tuple[int, ...], steps: int) -> dict[str, Any]:
    """Both identities in float64 (the check: they are algebra) and float32 (reported: rounding is amplified by
    1 / alpha(t_max) in x0 = (x - sigma eps) / alpha).

    Returns:
        `{"conversion": {dtype: {kind: error}}, "ddim_vs_dpm1": {dtype: [len(sampler_keys)]}}`, dtype in
        "float64", "float32"; `conversion_errors` on `num` points from `identity_key`, `ddim_vs_dpm1` with
        `schedule`, `shape` and `steps` once per sampler key.
    """
    out: dict[str, Any] = {"conversion": {}, "ddim_vs_dpm1": {}}
    for name, dtype in (("float32", jnp.float32), ("float64", jnp.float64)):
        with jax.enable_x64(dtype == jnp.float64):
            typed = gm.astype(spec, dtype)
            out["conversion"][name] = {k: float(v) for k, v in conversion_errors(typed, identity_key, num).items()}
            out["ddim_vs_dpm1"][name] = np.array([float(ddim_vs_dpm1(typed, schedule, k, shape, steps, dtype))
                                                  for k in sampler_keys])
    return out


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 6, 7))  # sampler and SWD in one program per (sampler, steps)
def sampler_swd(spec: gm.Mixture, schedule: Schedule, name: str, steps: int, noise_key: PRNGKeyArray,
                swd_key: PRNGKeyArray, num: int, num_projections: int) -> Float[Array, ""]:
    """`swd_to_data` of `num` samples of the fixed-step sampler `name` (`steps` steps) with the analytic field."""
    x = samplers.sample(name, analytic_model(spec, schedule), schedule, noise_key, (num, spec.means.shape[1]), steps).x
    return swd_to_data(spec, x, swd_key, num_projections)


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def adaptive_swd(spec: gm.Mixture, schedule: Schedule, noise_key: PRNGKeyArray, swd_key: PRNGKeyArray, num: int,
                 num_projections: int, rtol: float = 1e-4, atol: float = 1e-4) -> tuple[Array, Array]:
    """`(swd_to_data, NFE)` of diffrax Tsit5 (adaptive) on the probability-flow ODE with the analytic field."""
    shape = (num, spec.means.shape[1])
    adaptive = samplers.sample("adaptive", analytic_model(spec, schedule), schedule, noise_key, shape, rtol=rtol,
                               atol=atol)
    return swd_to_data(spec, adaptive.x, swd_key, num_projections), adaptive.nfe


def compare_samplers(spec: gm.Mixture, schedule: Schedule, keys: Sequence[PRNGKeyArray], names: Sequence[str],
                     nfes: Sequence[int], num: int, num_projections: int, tolerance: float = 1e-4) -> dict[str, Any]:
    """Fixed-step samplers at several evaluation budgets and adaptive Tsit5, with the analytic field, per seed key.

    Seed s splits `keys[s]` into the noise key (shared by every sampler, so they start from the same x_T) and the
    SWD key (the fresh data and the projections); its noise floor uses `keys[s]` itself.

    Returns:
        `{"floor": [S], "swd": {name: [S, len(nfes)]}, "tsit5": [S], "tsit5_nfe": [S]}`.
    """
    out: dict[str, Any] = {"floor": np.array([float(noise_floor(spec, k, num, num_projections)) for k in keys]),
                           "swd": {name: np.zeros((len(keys), len(nfes))) for name in names},
                           "tsit5": np.zeros(len(keys)), "tsit5_nfe": np.zeros(len(keys))}
    for s, key in enumerate(keys):
        noise_key, swd_key = jax.random.split(key)
        for name in names:
            for j, nfe in enumerate(nfes):
                out["swd"][name][s, j] = float(sampler_swd(spec, schedule, name, steps_for(name, nfe), noise_key,
                                                           swd_key, num, num_projections))
        value, nfe = adaptive_swd(spec, schedule, noise_key, swd_key, num, num_projections, tolerance, tolerance)
        out["tsit5"][s], out["tsit5_nfe"][s] = float(value), float(nfe)
    return out


def make_sample_evaluator(apply: Callable[[Any, Array, Array], Array], prediction: str, schedule: Schedule,
                          sampler: str, nfe: int, num: int, num_projections: int):
    """Per-run evaluator: `num` samples of a trained network with `sampler` at `nfe` evaluations, and their SWD.

    `evaluate({"params", "key"}, spec, key) -> {"swd": scalar}`: the run's key draws the samples and (again) the
    SWD's data and projections (`swd_to_data`); `apply(params, x, t)` is the network's prediction of kind
    `prediction`. The evaluation `key` is unused (the run's own key is).
    """

    def evaluate(run, spec, key):
        del key
        model = samplers.Model(lambda x, t: apply(run["params"], x, t), prediction)
        x = samplers.sample(sampler, model, schedule, run["key"], (num, spec.means.shape[1]),
                            steps_for(sampler, nfe)).x
        return {"swd": swd_to_data(spec, x, run["key"], num_projections)}

    return evaluate


def make_guidance_evaluator(apply: Callable[[Any, Array, Array, Array], Array], prediction: str,
                            schedule: Schedule, num_classes: int, sampler: str, nfe: int, num: int):
    """Per-run evaluator of classifier-free guidance (`samplers.guided`, Ho & Salimans 2022) on a mixture.

    `evaluate({"params", "key"}, {"spec", "w"}, key) -> {"accuracy", "spread"}`: `num` samples at guidance weight
    `w` with labels `c_i = i mod num_classes` (null label `num_classes`), drawn with the run's key; accuracy is the
    fraction whose nearest mode has class c_i, spread the mean distance of a sample to its nearest mode.
    `apply(params, x, t, c)` is the conditional network.
    """

    def evaluate(run, data, key):
        del key
        spec, c = data["spec"], jnp.arange(num) % num_classes
        model = samplers.guided(lambda x, t, cc: apply(run["params"], x, t, cc), prediction, schedule, c,
                                jnp.full_like(c, num_classes), data["w"])
        x = samplers.sample(sampler, model, schedule, run["key"], (num, spec.means.shape[1]),
                            steps_for(sampler, nfe)).x
        accuracy = jnp.mean(gm.classify(spec, x) == c)
        spread = jnp.mean(jnp.linalg.norm(x - spec.means[gm.nearest_mode(spec, x)], axis=-1))
        return {"accuracy": accuracy, "spread": spread}

    return evaluate
