"""Measuring samplers, trained models and guidance against an analytic target (the `diffusion/principles` checks).

On a Gaussian mixture (`gvlab.data.gaussian_mixture`) every marginal p_t is analytic, so a sampler can be run with
the exact field eps*(x, t) and its error separated from the network's. The quality measure is the sliced
Wasserstein-2 distance (`gvlab.diffusion.metrics.sliced_wasserstein`) between N samples and N fresh data points;
`noise_floor` is what a perfect sampler scores (two independent data sets).

* Identities: `conversion_errors` (one velocity field, reached via x0* and eps* or via f x - g^2 score / 2) and
  `ddim_vs_dpm1` (DDIM with eta = 0 is DPM-Solver-1); `identity_errors` runs both in float64 and float32.
* Samplers with the analytic field: `sampler_output`, `adaptive_swd` (jitted once per sampler and step count),
  `exact_flow` (the ODE's solution from the same noise at tight tolerances), `pathwise_error` and
  `convergence_order`, and `compare_samplers`, the table over seeds x samplers x evaluation budgets (NFE,
  `steps_for`) of SWD to data and pathwise error.
* Trained models: `make_sample_evaluator` (SWD of a trained network's samples) and `make_guidance_evaluator`
  (class accuracy and spread under classifier-free guidance), per-run evaluators for `run.evaluate`
  (`gvlab.evals`). Their run inputs are `{"params": ..., "key": ...}`: each run samples with its own key, so
  the seeds of a fit draw independent noise.

Static settings (sample counts, sampler names, step counts, schedules) are Python values; arrays (the mixture,
keys, guidance weights) are arguments, so one compiled program serves every seed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

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
    """The number of steps of sampler `name` that fits `nfe` evaluations (Heun and the DPM-Solver-2 forms: 2N,
    others N)."""
    return max(nfe // samplers.num_function_evals(name, 1), 1)


def analytic_model(spec: gm.Mixture, schedule: Schedule) -> samplers.Model:
    """The exact eps*(x, t) of the mixture under `schedule`, as a sampler model."""
    return samplers.Model(lambda x, t: gm.eps_star(spec, schedule, x, t), "eps")


def swd_to_data(spec: gm.Mixture, samples: Float[Array, "N d"], key: PRNGKeyArray,
                num_projections: int) -> Float[Array, ""]:
    """SWD between `samples` and as many fresh data points (the data draw and the projections come from `key`)."""
    data_key, projection_key = jax.random.split(key)
    return sliced_wasserstein(samples, gm.sample(spec, data_key, samples.shape[0]), projection_key, num_projections)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def noise_floor(spec: gm.Mixture, key: PRNGKeyArray, num: int, num_projections: int,
                equal_counts: bool = False) -> Float[Array, ""]:
    """The SWD between two independent data sets of `num` points: what a perfect sampler scores.

    With `equal_counts`, both sets have the same number of points per mode (`gm.sample_stratified`): the floor
    without the multinomial noise of the mode counts, which is most of the SWD's floor on a mixture.
    """
    a_key, b_key = jax.random.split(key)
    if not equal_counts:
        return swd_to_data(spec, gm.sample(spec, a_key, num), b_key, num_projections)
    data_key, projection_key = jax.random.split(b_key)
    return sliced_wasserstein(gm.sample_stratified(spec, a_key, num), gm.sample_stratified(spec, data_key, num),
                              projection_key, num_projections)


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


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 6))
def sampler_output(spec: gm.Mixture, schedule: Schedule, name: str, steps: int, spacing: str,
                   noise_key: PRNGKeyArray, num: int) -> Float[Array, "N d"]:
    """`num` samples of the fixed-step sampler `name` (`steps` steps on the `spacing` grid) with the analytic field."""
    return samplers.sample(name, analytic_model(spec, schedule), schedule, noise_key, (num, spec.means.shape[1]), steps,
                           spacing=spacing).x


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def exact_flow(spec: gm.Mixture, schedule: Schedule, noise_key: PRNGKeyArray, num: int,
               tolerance: float = 1e-6) -> Float[Array, "N d"]:
    """The probability-flow ODE's solution from the samplers' initial noise (the same `noise_key`), with the
    analytic field and diffrax Tsit5 at tight tolerances: the reference of `pathwise_error`."""
    adaptive = samplers.sample("adaptive", analytic_model(spec, schedule), schedule, noise_key,
                               (num, spec.means.shape[1]), rtol=tolerance, atol=tolerance, max_steps=16384)
    return adaptive.x


def pathwise_error(x: Float[Array, "N d"], reference: Float[Array, "N d"]) -> Float[Array, ""]:
    """RMS over samples of |x_i - x_i^ref|: a sampler's discretisation error against the exact ODE solution from
    the same noise. Unlike a distance to data, it has no sampling noise floor, so it shows the order of
    convergence (error ~ NFE^-p for an order-p solver)."""
    return jnp.sqrt(jnp.mean(jnp.sum((x - reference) ** 2, axis=-1)))


def convergence_order(errors: Float[Array, "... 2"], nfes: Sequence[int]) -> Float[Array, "..."]:
    """The order p of error ~ NFE^-p between two budgets: log(e_1 / e_2) / log(n_2 / n_1)."""
    errors = np.asarray(errors)
    return np.log(errors[..., 0] / errors[..., 1]) / np.log(nfes[1] / nfes[0])


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def adaptive_swd(spec: gm.Mixture, schedule: Schedule, noise_key: PRNGKeyArray, swd_key: PRNGKeyArray, num: int,
                 num_projections: int, rtol: float = 1e-4, atol: float = 1e-4) -> tuple[Array, Array]:
    """`(swd_to_data, NFE)` of diffrax Tsit5 (adaptive) on the probability-flow ODE with the analytic field."""
    shape = (num, spec.means.shape[1])
    adaptive = samplers.sample("adaptive", analytic_model(spec, schedule), schedule, noise_key, shape, rtol=rtol,
                               atol=atol)
    return swd_to_data(spec, adaptive.x, swd_key, num_projections), adaptive.nfe


def compare_samplers(spec: gm.Mixture, schedule: Schedule, keys: Sequence[PRNGKeyArray], grids: Mapping[str, str],
                     nfes: Sequence[int], num: int, num_projections: int, tolerance: float = 1e-4) -> dict[str, Any]:
    """Fixed-step samplers at several evaluation budgets and adaptive Tsit5, with the analytic field, per seed key.

    `grids` maps each sampler to its time grid ("uniform" or "log_snr"). Seed s splits `keys[s]` into the noise key
    (shared by every sampler and by the exact ODE solution, so all start from the same x_T) and the SWD key (the
    fresh data and the projections); its noise floors use `keys[s]` itself.

    Returns:
        `{"floor": [S], "floor_equal_counts": [S], "swd": {name: [S, len(nfes)]}, "pathwise": {name: [S,
        len(nfes)]}, "tsit5": [S], "tsit5_nfe": [S]}`.
    """
    out: dict[str, Any] = {"floor": np.array([float(noise_floor(spec, k, num, num_projections)) for k in keys]),
                           "floor_equal_counts": np.array([float(noise_floor(spec, k, num, num_projections, True))
                                                           for k in keys]),
                           "swd": {name: np.zeros((len(keys), len(nfes))) for name in grids},
                           "pathwise": {name: np.zeros((len(keys), len(nfes))) for name in grids},
                           "tsit5": np.zeros(len(keys)), "tsit5_nfe": np.zeros(len(keys))}
    for s, key in enumerate(keys):
        noise_key, swd_key = jax.random.split(key)
        reference = exact_flow(spec, schedule, noise_key, num)
        for name, spacing in grids.items():
            for j, nfe in enumerate(nfes):
                x = sampler_output(spec, schedule, name, steps_for(name, nfe), spacing, noise_key, num)
                out["swd"][name][s, j] = float(swd_to_data(spec, x, swd_key, num_projections))
                out["pathwise"][name][s, j] = float(pathwise_error(x, reference))
        value, nfe = adaptive_swd(spec, schedule, noise_key, swd_key, num, num_projections, tolerance, tolerance)
        out["tsit5"][s], out["tsit5_nfe"][s] = float(value), float(nfe)
    return out


def _clipped(model: samplers.Model, schedule: Schedule, clip: tuple[float, float] | None) -> samplers.Model:
    return model if clip is None else samplers.clip_x0(model, schedule, *clip)


def data_range(spec: gm.Mixture, num_std: float = 4.0) -> tuple[float, float]:
    """A box holding the mixture's data (every coordinate within `num_std` stds of a mode centre): the range that
    x0 predictions are clipped to (`samplers.clip_x0`), as improved DDPM clips images to [-1, 1]."""
    means, std = np.asarray(spec.means), float(spec.std)
    return float(means.min() - num_std * std), float(means.max() + num_std * std)


def make_sample_evaluator(apply: Callable[[Any, Array, Array], Array], prediction: str, schedule: Schedule,
                          sampler: str, nfe: int, num: int, num_projections: int,
                          clip: tuple[float, float] | None = None):
    """Per-run evaluator: `num` samples of a trained network with `sampler` at `nfe` evaluations, and their SWD.

    `evaluate({"params", "key"}, spec, key) -> {"swd": scalar}`: the run's key draws the samples and (again) the
    SWD's data and projections (`swd_to_data`); `apply(params, x, t)` is the network's prediction of kind
    `prediction`, its x0 clipped to `clip` (low, high) when given. The evaluation `key` is unused (the run's own
    key is).
    """

    def evaluate(run, spec, key):
        del key
        model = _clipped(samplers.Model(lambda x, t: apply(run["params"], x, t), prediction), schedule, clip)
        x = samplers.sample(sampler, model, schedule, run["key"], (num, spec.means.shape[1]),
                            steps_for(sampler, nfe)).x
        return {"swd": swd_to_data(spec, x, run["key"], num_projections)}

    return evaluate


def analytic_conditional(spec: gm.Mixture, schedule: Schedule, num_classes: int):
    """`apply(params, x, t, c)` of the exact class-conditional eps*(x, t | c), the null label `num_classes` giving the
    unconditional eps*(x, t): a perfectly trained guidance network (the ceiling of `make_guidance_evaluator`)."""

    def apply(params, x, t, c):
        del params
        conditional = gm.eps_star(spec, schedule, x, t, jnp.minimum(c, num_classes - 1))
        return jnp.where((c == num_classes)[:, None], gm.eps_star(spec, schedule, x, t), conditional)

    return apply


def make_guidance_evaluator(apply: Callable[[Any, Array, Array, Array], Array], prediction: str,
                            schedule: Schedule, num_classes: int, sampler: str, nfe: int, num: int,
                            clip: tuple[float, float] | None = None):
    """Per-run evaluator of classifier-free guidance (`samplers.guided`, Ho & Salimans 2022) on a mixture.

    `evaluate({"params", "key"}, {"spec", "w"}, key) -> {"accuracy", "within_spread", "spread"}`: `num` samples at
    guidance weight `w` with labels `c_i = i mod num_classes` (null label `num_classes`), drawn with the run's key
    (x0 clipped to `clip` when given). accuracy is the fraction whose nearest mode has class c_i; within_spread the
    RMS distance of a sample to the centroid of the samples of its class (the diversity that guidance trades for
    fidelity: sqrt(E|x0 - E[x0|c]|^2) for exact class samples); spread the mean distance to the nearest mode centre
    (which guidance raises: it pushes samples away from the other classes' modes). `apply(params, x, t, c)` is the
    conditional network.
    """

    def evaluate(run, data, key):
        del key
        spec, c = data["spec"], jnp.arange(num) % num_classes
        model = samplers.guided(lambda x, t, cc: apply(run["params"], x, t, cc), prediction, schedule, c,
                                jnp.full_like(c, num_classes), data["w"])
        x = samplers.sample(sampler, _clipped(model, schedule, clip), schedule, run["key"],
                            (num, spec.means.shape[1]), steps_for(sampler, nfe)).x
        accuracy = jnp.mean(gm.classify(spec, x) == c)
        onehot = jax.nn.one_hot(c, num_classes, dtype=x.dtype)  # [num, C]: the samples' own class centroids
        centroids = (onehot.T @ x) / jnp.maximum(onehot.sum(0), 1.0)[:, None]
        within = jnp.sqrt(jnp.mean(jnp.sum((x - centroids[c]) ** 2, axis=-1)))
        spread = jnp.mean(jnp.linalg.norm(x - spec.means[gm.nearest_mode(spec, x)], axis=-1))
        return {"accuracy": accuracy, "within_spread": within, "spread": spread}

    return evaluate
