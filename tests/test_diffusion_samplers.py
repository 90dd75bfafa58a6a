"""Oracles of the diffusion samplers and the probability-flow likelihood (gvlab.diffusion.samplers, .likelihood).

Gaussian data x0 ~ N(m, C) in 2-D (C = Q diag(0.25, 0.04) Q^T: anisotropic and rotated, so a transposed or
per-axis mistake shows; C = s^2 I is the special case) has the Gaussian marginals p_t = N(alpha_t m, R_t^2),
R_t^2 = alpha_t^2 C + sigma_t^2 I, hence the analytic score -(R_t^2)^{-1} (x - alpha_t m) and the affine
probability-flow map from t to s,

    Phi(x) = alpha_s m + R_s R_t^{-1} (x - alpha_t m).

With this field every deterministic sampler is affine in its initial noise, x = A x_T + b. Running it on x_T in
{0, e_1, e_2} gives (A, b), so the law of its samples under x_T ~ N(0, sigma_T^2 I) is exactly N(b, sigma_T^2 A A^T):
solver errors are measured without Monte Carlo noise (Wasserstein-2 between Gaussians).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gvlab.diffusion import likelihood, samplers
from gvlab.diffusion.parameterisation import convert
from gvlab.diffusion.schedules import Schedule
from gvlab.sde.solve import solve_sde_reference

ANGLE = 0.6
ROTATION = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
EIGENVALUES = np.array([0.25, 0.04])
MEAN = np.array([1.0, -0.5])
COV = ROTATION @ np.diag(EIGENVALUES) @ ROTATION.T
PARAMS = {"mean": jnp.asarray(MEAN, jnp.float32), "rotation": jnp.asarray(ROTATION, jnp.float32),
          "eigenvalues": jnp.asarray(EIGENVALUES, jnp.float32)}
SCHEDULES = {"vp_linear": Schedule("vp_linear"), "vp_cosine": Schedule("vp_cosine"), "ve": Schedule("ve"),
             "rectified_flow": Schedule("rectified_flow", t_max=0.999),
             "vp_linear_small_t_min": Schedule("vp_linear", t_min=1e-5)}
PROBE_ROWS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
NUM_MC = 2000


def gaussian_model(params, schedule: Schedule, prediction: str = "score") -> samplers.Model:
    """The exact prediction of kind `prediction` for data N(mean, rotation diag(eigenvalues) rotation^T)."""

    def predict(x, t):
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        variances = alpha**2 * params["eigenvalues"][None] + sigma**2
        score = -(((x - alpha * params["mean"][None]) @ params["rotation"]) / variances) @ params["rotation"].T
        return convert(score, "score", prediction, schedule, x, t)

    return samplers.Model(predict, prediction)


# ----------------------------------------------------------------------------- numpy oracles (float64)


def _coefficients(schedule, t):
    return float(schedule.alpha(t)), float(schedule.sigma(t))


def marginal(schedule, t):
    """Mean and covariance of p_t."""
    alpha, sigma = _coefficients(schedule, t)
    return alpha * MEAN, ROTATION @ np.diag(alpha**2 * EIGENVALUES + sigma**2) @ ROTATION.T


def flow_map(schedule, t_from, t_to):
    """(M, c) with Phi(x) = M x + c, the exact probability-flow map from t_from to t_to."""
    a_from, s_from = _coefficients(schedule, t_from)
    a_to, s_to = _coefficients(schedule, t_to)
    ratio = np.sqrt((a_to**2 * EIGENVALUES + s_to**2) / (a_from**2 * EIGENVALUES + s_from**2))
    m = ROTATION @ np.diag(ratio) @ ROTATION.T
    return m, a_to * MEAN - m @ (a_from * MEAN)


def log_normal(x, mean, cov):
    diff = x - mean
    return (-0.5 * np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
            - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))


def w2(mean_a, cov_a, mean_b, cov_b):
    """Wasserstein-2 distance between two Gaussians."""
    root = scipy.linalg.sqrtm(cov_b)
    cross = np.real(scipy.linalg.sqrtm(root @ cov_a @ root))
    return float(np.sqrt(np.sum((mean_a - mean_b) ** 2) + max(np.trace(cov_a + cov_b - 2 * cross), 0.0)))


def exact_law(schedule, out):
    """The law N(b, sigma_T^2 A A^T) of an affine sampler's output, from its rows on x_T = 0, e_1, e_2."""
    out = np.asarray(out, np.float64)
    b = out[0]
    a = (out[1:3] - b).T
    sigma_t = _coefficients(schedule, schedule.t_max)[1]
    return b, sigma_t**2 * a @ a.T


def ideal_law(schedule):
    """The law of the exact flow applied to the samplers' prior N(0, sigma_T^2 I)."""
    m, c = flow_map(schedule, schedule.t_max, schedule.t_min)
    sigma_t = _coefficients(schedule, schedule.t_max)[1]
    return c, sigma_t**2 * m @ m.T


# ----------------------------------------------------------------------------- compiled programs (few, shared)


@jax.jit
def _standard_normal(key):
    return jax.random.normal(key, (NUM_MC, 2))


def initial_rows(kind, key):
    """The probe rows (0, e_1, e_2) and NUM_MC draws of the prior N(0, sigma_T^2 I) (`samplers.initial_noise`'s
    law), one batch: one compiled program per sampler."""
    sigma_t = _coefficients(SCHEDULES[kind], SCHEDULES[kind].t_max)[1]
    return np.concatenate([PROBE_ROWS, sigma_t * np.asarray(_standard_normal(key))]).astype(np.float32)


@jax.jit
def run_fixed_step(params, x_T, ts_first, ts_second):
    """The deterministic fixed-step samplers (VP linear, a score model), one program: the first-order ones on
    `ts_first`, Heun and the DPM-Solver-2 forms on `ts_second`."""
    schedule = SCHEDULES["vp_linear"]
    model = gaussian_model(params, schedule)
    first = {name: getattr(samplers, name)(model, schedule, x_T, ts_first)
             for name in ("euler", "ddim", "dpm_solver_1")}
    return {**first, **{name: getattr(samplers, name)(model, schedule, x_T, ts_second)
                        for name in ("heun", "dpm_solver_2", "dpm_solver_pp_2s")}}


@jax.jit
def run_ancestral(params, key, ts, stream):
    """DDPM and DDIM with eta = 1 from the same x_T and the same per-step keys (VP linear); another `stream` draws
    other per-step noise."""
    schedule = SCHEDULES["vp_linear"]
    noise_key, step_key = jax.random.split(key)
    step_key = jax.random.fold_in(step_key, stream)
    x_T = samplers.initial_noise(schedule, noise_key, (NUM_STOCHASTIC, 2))
    model = gaussian_model(params, schedule, "x0")
    return samplers.ddpm(model, schedule, x_T, ts, step_key), samplers.ddim(model, schedule, x_T, ts, step_key, 1.0)


@jax.jit
def run_reverse_sde(params, key, ts):
    """(x_T, `euler_maruyama` samples, the same scheme through gvlab.sde.solve_sde_reference) for VP linear.

    The reference is forward Euler-Maruyama in tau = t_max - t, valid on a uniform grid `ts`, with the increments
    sqrt(dt) z of the sampler's own per-step keys.
    """
    schedule = SCHEDULES["vp_linear"]
    noise_key, step_key = jax.random.split(key)
    x_T = samplers.initial_noise(schedule, noise_key, (NUM_STOCHASTIC, 2))
    model = gaussian_model(params, schedule, "x0")
    ours = samplers.euler_maruyama(model, schedule, x_T, ts, step_key)
    dt = (schedule.t_max - schedule.t_min) / (ts.shape[0] - 1)
    keys = jax.random.split(step_key, ts.shape[0] - 1)
    increments = jnp.sqrt(dt) * jax.vmap(lambda k: jax.random.normal(k, x_T.shape))(keys)

    def drift(tau, y, args):
        t = schedule.t_max - tau
        return (schedule.diffusion_squared(t) * samplers.evaluate(model, "score", schedule, y, t)
                - schedule.drift_coefficient(t) * y)

    def diffusion(tau, y, args):
        return jnp.sqrt(schedule.diffusion_squared(schedule.t_max - tau)) * jnp.ones_like(y)

    reference = solve_sde_reference(drift, diffusion, x_T, increments, t0=0.0, dt=dt, save_every=ts.shape[0] - 1)
    return x_T, ours, reference.ys[-1]


@functools.partial(jax.jit, static_argnames=("kind",))
def run_adaptive(kind, params, x_T):
    schedule = SCHEDULES[kind]
    return samplers.adaptive_ode(gaussian_model(params, schedule, "velocity"), schedule, x_T, rtol=1e-6, atol=1e-6)


@functools.partial(jax.jit, static_argnames=("kind", "divergence"))
def run_likelihood(kind, divergence, params, x, key):
    schedule = SCHEDULES[kind]
    return likelihood.log_likelihood(gaussian_model(params, schedule, "eps"), schedule, x, divergence=divergence,
                                     key=key, rtol=1e-6, atol=1e-6)


def shifted(delta):
    return {**PARAMS, "mean": np.asarray(MEAN + np.asarray(delta), np.float32)}


def padded_grid(schedule, num_steps, length, spacing="uniform"):
    """A `num_steps` grid padded at the front with repeats of t_max to `length` steps: the zero-length steps are
    no-ops for every sampler here, so grids of one length (one compiled program) can run fewer steps."""
    ts = np.asarray(samplers.time_grid(schedule, num_steps, spacing))
    return np.concatenate([np.full((length - num_steps,), ts[0], ts.dtype), ts])


# ----------------------------------------------------------------------------- likelihood


POINTS = np.array([[0.8, -0.2], [1.5, -1.0], [0.2, 0.3]])  # the last one far in the tail (log p = -15)


def test_exact_likelihood_of_a_gaussian_matches_closed_form():
    kind = "vp_linear_small_t_min"
    schedule = SCHEDULES[kind]
    result = run_likelihood(kind, "exact", PARAMS, jnp.asarray(POINTS, jnp.float32), None)
    assert not np.any(result.failed) and np.all(result.nfe > 6)
    # The model's own density, prior N(0, sigma_T^2 I): log N(Phi(x); 0, sigma_T^2 I) + log |det dPhi/dx|.
    m, c = flow_map(schedule, schedule.t_min, schedule.t_max)
    x_T = POINTS @ m.T + c
    sigma_t = _coefficients(schedule, schedule.t_max)[1]
    model_density = log_normal(x_T, 0.0, sigma_t**2 * np.eye(2)) + np.log(np.linalg.det(m))
    np.testing.assert_allclose(result.x_T, x_T, atol=1e-4)
    np.testing.assert_allclose(result.log_prob, model_density, atol=2e-4)
    # With the exact p_T at the end point, it is the data's density (p_{t_min} = p_0 to 5e-4 at t_min = 1e-5).
    exact_prior = log_normal(np.asarray(result.x_T, np.float64), *marginal(schedule, schedule.t_max))
    data_density = log_normal(POINTS, MEAN, COV)
    np.testing.assert_allclose(exact_prior + result.divergence_integral, data_density, atol=1e-3)
    np.testing.assert_allclose(likelihood.bits_per_dim(result.log_prob, 2), -model_density / (2 * np.log(2)),
                               atol=2e-4)
    # Negative control: the score of another mean gives clearly different values (same compiled program).
    wrong = run_likelihood(kind, "exact", shifted([0.3, 0.0]), jnp.asarray(POINTS, jnp.float32), None)
    assert np.min(np.abs(np.asarray(wrong.log_prob) - model_density)) > 0.1


def test_hutchinson_likelihood_is_unbiased(key):
    """Rademacher probes, one per solve, 256 solves of one point: the mean is the exact value within its noise."""
    kind, repeats = "vp_linear_small_t_min", 256
    x = np.broadcast_to(np.asarray(POINTS[1], np.float32), (repeats, 2))
    estimates = np.asarray(run_likelihood(kind, "hutchinson", PARAMS, x, key).log_prob, np.float64)
    points = jnp.asarray(POINTS, jnp.float32)  # the previous test's program
    exact = float(run_likelihood(kind, "exact", PARAMS, points, None).log_prob[1])
    standard_error = estimates.std() / np.sqrt(repeats)
    assert estimates.std() > 0.1  # an estimate, not the exact trace
    assert abs(estimates.mean() - exact) < 4 * standard_error
    # Negative control: the same noise level rejects the likelihood of another model.
    wrong = float(run_likelihood(kind, "exact", shifted([0.3, 0.0]), points, None).log_prob[1])
    assert abs(estimates.mean() - wrong) > 4 * standard_error


# ----------------------------------------------------------------------------- deterministic samplers

N_FIRST, N_SECOND = 64, 32  # steps of the first- and second-order samplers (same grid lengths everywhere)


def grids(first=N_FIRST, second=N_SECOND, spacing="log_snr"):
    """Padded grids of the lengths N_FIRST and N_SECOND running `first` and `second` steps."""
    schedule = SCHEDULES["vp_linear"]
    return padded_grid(schedule, first, N_FIRST, spacing), padded_grid(schedule, second, N_SECOND, spacing)


def test_ddim_equals_dpm_solver_1(key):
    """DDIM (eta = 0) and DPM-Solver-1 are one exponential integrator written two ways (as Lu et al. 2022 note).

    Equal to float32 rounding, which both forms amplify by alpha_{t_1} / alpha_{t_max} on the first step: ~20 for
    VP linear (alpha(1) = 0.0066); ~100 for the cosine schedule (alpha(0.999) = 0.0016), where they differ by
    3.5e-5 (not tested here, to keep the compiled programs few).
    """
    out = run_fixed_step(PARAMS, initial_rows("vp_linear", key), *grids(10, spacing="uniform"))
    ddim, dpm, euler = (np.asarray(out[name]) for name in ("ddim", "dpm_solver_1", "euler"))
    assert np.max(np.abs(ddim - dpm)) < 1e-5
    assert np.max(np.abs(euler - ddim)) > 1e-2  # negative control: Euler on the same grid is another method


def test_ode_samplers_reach_the_data_law(key):
    schedule = SCHEDULES["vp_linear"]
    x_T = initial_rows("vp_linear", key)
    ideal_mean, ideal_cov = ideal_law(schedule)
    # The flow itself: its pushforward of N(0, sigma_T^2 I) is the data law up to the prior's neglected alpha_T m.
    assert w2(ideal_mean, ideal_cov, MEAN, COV) < 5e-3
    adaptive = run_adaptive("vp_linear", PARAMS, x_T)
    assert not bool(adaptive.failed) and 10 < int(adaptive.nfe) < 400
    assert w2(*exact_law(schedule, adaptive.x), ideal_mean, ideal_cov) < 1e-4
    tolerances = {"euler": 0.02, "ddim": 0.02, "dpm_solver_1": 0.02, "heun": 0.005, "dpm_solver_2": 0.005,
                  "dpm_solver_pp_2s": 0.005}
    outputs = run_fixed_step(PARAMS, x_T, *grids())
    for name, tolerance in tolerances.items():
        assert w2(*exact_law(schedule, outputs[name]), ideal_mean, ideal_cov) < tolerance, name
        # The samples themselves: moments of the 2000 draws within Monte Carlo error of the data's.
        draws = np.asarray(outputs[name][3:], np.float64)
        assert np.all(np.abs(draws.mean(0) - MEAN) < 4 * np.sqrt(np.diag(COV) / NUM_MC) + 0.01), name
        np.testing.assert_allclose(np.cov(draws.T), COV, atol=4 * np.sqrt(2 / NUM_MC) * 0.25 + 0.01)
    # Negative control: samplers for another mean land elsewhere.
    others = run_fixed_step(shifted([0.0, 0.5]), x_T, *grids())
    assert min(w2(*exact_law(schedule, out), ideal_mean, ideal_cov) for out in others.values()) > 0.3


def test_second_order_samplers_converge_faster(key):
    """Exact-law W2 errors on the log-SNR grid: halving the step divides Heun's and DPM-Solver-2's error by ~4 and
    Euler's and DDIM's by ~2, and at 32 NFE the second-order samplers are the more accurate.

    At 8 NFE this unimodal Gaussian does not rank them so (same grid; Euler 8 steps: W2 0.09; Heun 4: 0.14;
    DPM-Solver-2 4: 0.29): a 4-step grid crosses the data's scale in one step, before the asymptotic regime.
    """
    schedule = SCHEDULES["vp_linear"]
    x_T = initial_rows("vp_linear", key)
    ideal = ideal_law(schedule)

    def errors(first, second):
        return {name: w2(*exact_law(schedule, out), *ideal)
                for name, out in run_fixed_step(PARAMS, x_T, *grids(first, second)).items()}

    fine, coarse = errors(N_FIRST, N_SECOND), errors(N_FIRST // 2, N_SECOND // 2)
    ratios = {name: coarse[name] / fine[name] for name in fine}
    assert min(ratios[name] for name in ("heun", "dpm_solver_2", "dpm_solver_pp_2s")) > 3.0, ratios
    assert 1.5 < ratios["euler"] < 2.5 and 1.5 < ratios["ddim"] < 2.5, ratios  # negative control: first order
    # Equal budgets: Euler with 32 steps (32 NFE) against the second-order samplers with 16 (32 NFE).
    assert max(coarse[name] for name in ("heun", "dpm_solver_2", "dpm_solver_pp_2s")) < coarse["euler"], coarse


def test_heun_corrects_the_last_step_too():
    """Two Heun steps by hand: v(x, t) = t x on the grid 1 -> 0.5 -> 0 (a velocity model: no conversion).

    Step 1: x' = x - 0.5 x = 0.5 x, v' = 0.25 x, x_1 = x - 0.25 (x + 0.25 x) = 0.6875 x.
    Step 2: v = 0.34375 x, x' = 0.515625 x, v' = 0 (t = 0), x_2 = 0.6875 x - 0.25 * 0.34375 x = 0.6015625 x.
    An Euler last step (the old sampler) would give 0.6875 x - 0.5 * 0.34375 x = 0.515625 x (negative control).
    """
    model = samplers.Model(lambda x, t: t[:, None] * x, "velocity")
    x = np.array([[1.0, -2.0]], np.float32)
    out = np.asarray(samplers.heun(model, SCHEDULES["vp_linear"], x, np.array([1.0, 0.5, 0.0], np.float32)))
    np.testing.assert_allclose(out, 0.6015625 * x, rtol=1e-6)
    assert np.max(np.abs(out - 0.515625 * x)) > 0.08  # not the Euler last step
    assert samplers.num_function_evals("heun", 2) == 4


def test_dpm_solver_pp_is_exact_in_one_step_for_one_data_point():
    """With all data at one point m, x0_hat = m for every (x, t) and the ODE's solution is x_s = alpha_s m +
    (sigma_s / sigma_t) (x_t - alpha_t m): DPM-Solver++(2S)'s data-prediction update is exact in one step
    (its exponential integrator treats the linear part exactly; so is the eps form, eps_hat being constant along
    this path), where Euler is not (negative control)."""
    schedule, m = SCHEDULES["vp_cosine"], np.array([1.5, -0.5], np.float32)
    model = samplers.Model(lambda x, t: jnp.broadcast_to(jnp.asarray(m), x.shape), "x0")
    x_t = np.array([[0.3, 0.7], [-1.0, 2.0]], np.float32)
    ts = np.array([0.8, 0.2], np.float32)
    alpha, sigma = (np.asarray(f(ts)) for f in (schedule.alpha, schedule.sigma))
    exact = alpha[1] * m + sigma[1] / sigma[0] * (x_t - alpha[0] * m)
    np.testing.assert_allclose(samplers.dpm_solver_pp_2s(model, schedule, x_t, ts), exact, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(samplers.euler(model, schedule, x_t, ts)) - exact)) > 1e-2


def test_cosine_schedule_ends_where_dpm_solver_does_and_x0_clipping_bounds_the_prediction():
    """The cosine schedule's default t_max is DPM-Solver's T = 0.9946 (alpha = 0.0084, log-SNR / 2 = -4.78), not
    0.999 (alpha = 0.0016); `clip_x0` clips x0 = (x - sigma eps) / alpha to the data range."""
    schedule = Schedule("vp_cosine")
    assert schedule.t_max == 0.9946
    np.testing.assert_allclose(float(schedule.alpha(schedule.t_max)), 0.008416, rtol=1e-3)
    np.testing.assert_allclose(float(schedule.log_snr(schedule.t_max)) / 2, -4.778, atol=2e-3)
    assert float(Schedule("vp_cosine", t_max=0.999).alpha(0.999)) < 0.002  # the old end: 5x smaller alpha
    eps_model = samplers.Model(lambda x, t: x + 0.1, "eps")  # an eps error of 0.1 around the true eps ~ x
    clipped = samplers.clip_x0(eps_model, schedule, -2.5, 2.5)
    x, t = np.array([[1.0, -1.0]], np.float32), np.full((1,), schedule.t_max, np.float32)
    raw = np.asarray(samplers.evaluate(eps_model, "x0", schedule, x, t))
    assert np.max(np.abs(raw)) > 5.0  # the error magnified by 1 / alpha
    np.testing.assert_allclose(np.asarray(clipped.predict(x, t)), np.clip(raw, -2.5, 2.5), rtol=1e-6)
    assert clipped.prediction == "x0"


# ----------------------------------------------------------------------------- stochastic samplers

N_STOCHASTIC, NUM_STOCHASTIC = 1000, 2000


@pytest.mark.parametrize("name", ["ddpm", "euler_maruyama"])
def test_stochastic_samplers_reach_the_data_law(name, key):
    """Draws of p_{t_min}: mean and covariance within Monte Carlo error (ancestral sampling's O(1/N) variance
    deficit is ~1.5% at N = 1000, well inside the 4-sigma band of ~13%)."""
    schedule = SCHEDULES["vp_linear"]
    mean, cov = marginal(schedule, schedule.t_min)
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    band = 4 * np.sqrt(2 / NUM_STOCHASTIC)

    def moments(num_steps):
        ts = padded_grid(schedule, num_steps, N_STOCHASTIC)
        out = run_ancestral(PARAMS, key, ts, 0)[0] if name == "ddpm" else run_reverse_sde(PARAMS, key, ts)[1]
        draws = np.asarray(out, np.float64)
        return draws.mean(0), np.cov(draws.T)

    sample_mean, sample_cov = moments(N_STOCHASTIC)
    assert np.all(np.abs(sample_mean - mean) < 4 * np.sqrt(np.diag(cov) / NUM_STOCHASTIC) + 2e-3)
    assert np.all(np.abs(sample_cov - cov) / scale < band), (sample_cov - cov) / scale
    # Negative control: 10 steps (the same program, a padded grid) miss the covariance by more than the band.
    _, coarse_cov = moments(10)
    assert np.max(np.abs(coarse_cov - cov) / scale) > band


def test_ddpm_is_ddim_with_eta_one(key):
    ts = padded_grid(SCHEDULES["vp_linear"], 20, N_STOCHASTIC)
    ddpm, ddim = run_ancestral(PARAMS, key, ts, 0)
    np.testing.assert_allclose(ddim, ddpm, atol=1e-4)
    # Negative control: other noise, other samples.
    other, _ = run_ancestral(PARAMS, key, ts, 1)
    assert np.max(np.abs(np.asarray(other) - np.asarray(ddpm))) > 0.1


def test_reverse_sde_equals_the_sde_module_on_a_uniform_grid(key):
    x_T, ours, reference = run_reverse_sde(PARAMS, key, samplers.time_grid(SCHEDULES["vp_linear"], N_STOCHASTIC))
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    assert np.max(np.abs(np.asarray(ours) - np.asarray(x_T))) > 1.0  # negative control: it did move


# ----------------------------------------------------------------------------- guidance, dispatch, grids


def test_classifier_free_guidance_with_zero_weight_is_the_conditional_model(key):
    schedule = SCHEDULES["vp_linear"]
    means = jnp.array([[1.0, -0.5], [-1.0, 0.5], [0.0, 0.0]])  # class 2 is the null condition

    def predict(x, t, c):  # a velocity-predicting conditional model
        return gaussian_model({**PARAMS, "mean": means[c]}, schedule, "velocity").predict(x, t)

    @jax.jit
    def predictions(x, t):
        conditional = convert(predict(x, t, 0), "velocity", "eps", schedule, x, t)
        unconditional = convert(predict(x, t, 2), "velocity", "eps", schedule, x, t)
        guided = [samplers.guided(predict, "velocity", schedule, 0, 2, w).predict(x, t) for w in (0.0, 2.0)]
        return conditional, unconditional, guided

    assert samplers.guided(predict, "velocity", schedule, 0, 2, 0.0).prediction == "eps"
    x = np.asarray(_standard_normal(key))[:5]
    conditional, unconditional, (zero, two) = predictions(x, np.linspace(0.1, 0.9, 5, dtype=np.float32))
    np.testing.assert_allclose(zero, conditional, atol=1e-5)
    np.testing.assert_allclose(two, 3.0 * conditional - 2.0 * unconditional, atol=1e-4)
    # Negative control: a positive weight moves away from the conditional prediction.
    assert np.max(np.abs(np.asarray(two) - np.asarray(conditional))) > 0.1


def test_sample_dispatches_counts_evaluations_and_rejects_unknown_names(key):
    schedule = SCHEDULES["vp_linear"]
    model = gaussian_model(PARAMS, schedule)
    assert [samplers.num_function_evals(n, 8) for n in ("euler", "heun", "ddim", "dpm_solver_2", "dpm_solver_pp_2s",
                                                        "ddpm")] == [8, 16, 8, 16, 16, 8]
    with pytest.raises(ValueError, match="unknown sampler 'rk4'.*choose from"):
        samplers.sample("rk4", model, schedule, key, (4, 2), 8)
    with pytest.raises(ValueError, match="needs num_steps"):
        samplers.sample("euler", model, schedule, key, (4, 2))
    with pytest.raises(ValueError, match="finite lambda"):
        samplers.dpm_solver_2(model, Schedule("rectified_flow"), np.zeros((4, 2)), np.linspace(1.0, 0.1, 3))
    with pytest.raises(ValueError, match="unknown spacing"):
        samplers.time_grid(schedule, 8, "cubic")

    @jax.jit
    def dispatched_and_direct(key):
        result = samplers.sample("euler", model, schedule, key, (4, 2), 3, denoise=True)
        x_T = samplers.initial_noise(schedule, jax.random.split(key)[0], (4, 2))
        x = samplers.euler(model, schedule, x_T, samplers.time_grid(schedule, 3))
        return result, samplers.evaluate(model, "x0", schedule, x, schedule.t_min)

    result, direct = dispatched_and_direct(key)
    assert result.x.shape == (4, 2) and int(result.nfe) == 4 and not bool(result.failed)
    np.testing.assert_allclose(result.x, direct, atol=1e-5)  # the dispatcher is the samplers


def log_snr_numpy(kind, t):
    """2 lambda_t from the schedules' formulas, in float64 (an oracle independent of gvlab's jnp code)."""
    schedule = SCHEDULES[kind]
    if kind == "vp_linear":
        alpha2 = np.exp(-(schedule.beta_min * t + 0.5 * (schedule.beta_max - schedule.beta_min) * t**2))
    elif kind == "vp_cosine":
        s = schedule.cosine_offset
        alpha2 = (np.cos(0.5 * np.pi * (t + s) / (1 + s)) / np.cos(0.5 * np.pi * s / (1 + s))) ** 2
    elif kind == "ve":
        return -2 * np.log(schedule.sigma_min * (schedule.sigma_max / schedule.sigma_min) ** t)
    else:
        return 2 * np.log((1 - t) / t)
    return np.log(alpha2 / (1 - alpha2))


def test_log_snr_grid_inverts_lambda():
    kinds = ("vp_linear", "vp_cosine", "ve", "rectified_flow")
    ts = {kind: np.linspace(SCHEDULES[kind].t_min + 0.01, SCHEDULES[kind].t_max, 9) for kind in kinds}
    lambdas = {kind: np.float32(0.5 * log_snr_numpy(kind, ts[kind])) for kind in kinds}
    back = jax.jit(lambda lams: {kind: samplers.time_at_lambda(SCHEDULES[kind], lams[kind]) for kind in kinds})(
        lambdas)
    for kind in kinds:
        schedule = SCHEDULES[kind]
        np.testing.assert_allclose(back[kind], ts[kind], atol=5e-6, err_msg=kind)
        grid = np.asarray(samplers.time_grid(schedule, 8, "log_snr"), np.float64)
        assert grid[0] == np.float32(schedule.t_max) and grid[-1] == np.float32(schedule.t_min)
        steps = np.diff(0.5 * log_snr_numpy(kind, grid))
        np.testing.assert_allclose(steps, steps.mean(), rtol=1e-3, err_msg=kind)  # float32 end point
        # EDM's grid: sigma / alpha = e^{-lambda} equally spaced after the power 1 / 7 (Karras et al. 2022, Eq. 5).
        karras = np.asarray(samplers.time_grid(schedule, 8, "karras"), np.float64)
        roots = np.exp(-0.5 * log_snr_numpy(kind, karras) / 7.0)
        np.testing.assert_allclose(np.diff(roots), np.diff(roots).mean(), rtol=2e-3, err_msg=kind)
        assert not np.allclose(np.diff(np.exp(-0.5 * log_snr_numpy(kind, grid) / 7.0)), np.diff(roots).mean(),
                               rtol=2e-3)  # negative control: the log-SNR grid is not EDM'ss
        # Negative control: the uniform grid is not uniform in lambda (except for VE, where lambda is linear in t).
        uniform = np.diff(0.5 * log_snr_numpy(kind, np.asarray(samplers.time_grid(schedule, 8), np.float64)))
        assert (np.ptp(uniform) > 0.1 * abs(uniform.mean())) == (kind != "ve"), kind


def test_gradients_flow_through_a_sampler():
    """d(mean of DDIM samples)/dm by autodiff equals central differences (the sampler is affine in m here)."""
    schedule = SCHEDULES["vp_linear"]
    x_T = np.asarray(PROBE_ROWS, np.float32)
    ts = samplers.time_grid(schedule, 10)

    @jax.jit
    def mean_out(mean):
        return jnp.mean(samplers.ddim(gaussian_model({**PARAMS, "mean": mean}, schedule), schedule, x_T, ts), 0)

    jacobian = np.asarray(jax.jit(jax.jacfwd(mean_out))(PARAMS["mean"]))
    step = 0.1
    columns = [(np.asarray(mean_out(np.float32(MEAN + step * e))) - np.asarray(mean_out(np.float32(MEAN - step * e))))
               / (2 * step) for e in np.eye(2)]
    np.testing.assert_allclose(jacobian, np.stack(columns, 1), atol=1e-4)
    m, _ = flow_map(schedule, schedule.t_max, schedule.t_min)
    alpha_t, alpha_0 = _coefficients(schedule, schedule.t_max)[0], _coefficients(schedule, schedule.t_min)[0]
    np.testing.assert_allclose(jacobian, alpha_0 * np.eye(2) - alpha_t * m, atol=0.05)  # the exact flow's


def test_gaussian_oracle_error_is_small_and_sees_the_t_min_gap():
    """`likelihood.gaussian_oracle_error`: the experiment's check; at a large t_min, p_{t_min} is not p_0."""
    m, cov, x = (jnp.asarray(a, jnp.float32) for a in (MEAN, COV, POINTS))
    assert float(likelihood.gaussian_oracle_error(SCHEDULES["vp_linear_small_t_min"], m, cov, x)) < 1e-2
    assert float(likelihood.gaussian_oracle_error(Schedule("vp_linear", t_min=0.2), m, cov, x)) > 0.05
