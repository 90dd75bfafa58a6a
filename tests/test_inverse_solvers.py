"""Oracles of the inverse-problem solvers (gvlab.inverse.solvers): DPS, RED-Diff and FLAIR with an exact Gaussian prior.

A Gaussian prior x0 ~ N(m, C) on 4 x 4 images (C a squared-exponential kernel, length scale 1.5 pixels, plus
0.05 I) has an exact model at every noise level (`gaussian_prior_model`) and, for y = A x0 + N(0, sigma_y^2 I), the
exact posterior N(mean, cov) (`gvlab.inverse.gaussian.gaussian_posterior`): its mean is the MMSE bound, and
exact posterior samples score about 10 log10(2) = 3 dB below it (their mean squared error is twice the posterior
variance). The RED reading and the FLAIR form of the shared step are identities for any network, checked with a
random one. Each property has a negative control. Each test runs one jitted program, and one more draws both
problems. Tests without Adam run under strict dtype promotion (optax's Adam is not strict-clean: its bias
correction computes `float ** int32`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import inverse
from gvlab.diffusion.samplers import Model
from gvlab.diffusion.schedules import Schedule
from gvlab.inverse import solvers
from gvlab.inverse.gaussian import gaussian_posterior, sample_gaussian, sample_posterior
from gvlab.inverse.operators import dense_matrix

SHAPE = (4, 4)
D = 16
BATCH = 64
SIGMA_Y = 0.05
VP = Schedule("vp_linear")
RF = Schedule("rectified_flow")


@functools.cache
def _prior():
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    distance2 = np.sum((grid[:, None] - grid[None]) ** 2, axis=-1)
    cov = 0.25 * np.exp(-distance2 / (2 * 1.5**2)) + 0.05 * np.eye(D)
    mean = 0.3 * np.sin(np.arange(D) / 3.0).reshape(SHAPE)
    return jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)


def _measure(op, m, cov, key):
    """x0 ~ prior, y = A (x0 + n) for inpainting (no noise on the discarded pixels) or A x0 + n, the exact
    posterior mean, one exact posterior sample per example and A^+ y."""
    prior_key, noise_key, sample_key = jax.random.split(key, 3)
    x0 = sample_gaussian(prior_key, m.reshape(-1), cov, (BATCH,)).reshape(BATCH, *SHAPE)
    if isinstance(op, inverse.Inpainting):
        y = op.forward(x0 + SIGMA_Y * jax.random.normal(noise_key, x0.shape))
    else:
        clean = op.forward(x0)
        y = clean + SIGMA_Y * jax.random.normal(noise_key, clean.shape)
    post = gaussian_posterior(m.reshape(-1), cov, dense_matrix(op, SHAPE), y.reshape(BATCH, -1), SIGMA_Y)
    sample = sample_posterior(sample_key, post).reshape(BATCH, *SHAPE)
    return op, x0, y, post.mean.reshape(BATCH, *SHAPE), sample, op.pinv(y)


@jax.jit
def _measure_all(ops, m, cov, key):
    return {name: _measure(op, m, cov, jax.random.fold_in(key, i)) for i, (name, op) in enumerate(ops.items())}


@functools.cache
def _problems():
    """name -> (op, x0, y, exact posterior mean, one exact posterior sample per example, A^+ y), for a batch of
    prior draws: SR x2 (y is 2 x 2) and 50% random inpainting (8 of 16 pixels), one program for both."""
    mask = np.zeros(D, bool)
    mask[np.random.default_rng(5).permutation(D)[: D // 2]] = True
    ops = {"sr": inverse.AveragePool(2), "inpainting": inverse.Inpainting(jnp.asarray(mask.reshape(SHAPE)))}
    return _measure_all(ops, *_prior(), jax.random.key(1))


def _problem(name):
    return _problems()[name]


def _psnr(x, x0):
    """Mean PSNR over the batch in float64 numpy, data range 2 (images of scale ~[-1, 1])."""
    mse = np.mean(np.square(np.asarray(x, np.float64) - np.asarray(x0, np.float64)), axis=(-2, -1))
    return float(np.mean(10 * np.log10(4.0 / mse)))


def _rms(residual_B, measurements):
    return np.asarray(residual_B) / np.sqrt(measurements)


# ----------------------------------------------------------------------------- the shared step: exact identities


def _random_model(key, prediction):
    """A random nonlinear network: the identities below hold for any model, not only the exact one."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1, w2, b = (jax.random.normal(k1, (D, 32)) / 4, jax.random.normal(k2, (32, D)) / 6, jax.random.normal(k3, (32,)))

    def predict(x, t):
        h = jnp.tanh(x.reshape(x.shape[0], D) @ w1 + t[:, None] * b[None])
        return (h @ w2).reshape(x.shape)

    return Model(predict, prediction)


TIMES = np.array([0.05, 0.3, 0.7, 0.95], np.float32)
FLAIR_WEIGHT = 0.4


@jax.jit
def _identities(key, times):
    """Both forms of each step at every time of `times` (vmapped: one program), from one random mu and eps."""
    mu_key, eps_key, vp_key, rf_key = jax.random.split(key, 4)
    mu = jax.random.normal(mu_key, (3, *SHAPE))
    eps = jax.random.normal(eps_key, (3, *SHAPE))
    vp_model, rf_model = _random_model(vp_key, "eps"), _random_model(rf_key, "velocity")

    def at(t):
        # FLAIR's official form (`var_post_samp.py`, lambda_func "v"): lambda_R (v_hat - (eps - mu)) at
        # x_t = (1 - t) mu + t eps.
        v = rf_model.predict((1 - t) * mu + t * eps, jnp.full((3,), t))
        return {"snr": solvers.red_reading(vp_model, VP, mu, eps, t, 0.25, "snr"),
                "constant": solvers.red_reading(vp_model, VP, mu, eps, t, 0.25, "constant"),
                "ratio": VP.alpha(t) / VP.sigma(t),
                "flair": FLAIR_WEIGHT * (v - (eps - mu)),
                "shared": solvers.regularised_step(rf_model, RF, mu, eps, t, FLAIR_WEIGHT / t).gradient,
                # RED-Diff's form with lambda = lambda_R / t, on the same network.
                "red_as_flair": solvers.red_reading(rf_model, RF, mu, eps, t, FLAIR_WEIGHT / t, "snr").eps_form,
                "no_scale": solvers.regularised_step(rf_model, RF, mu, eps, t, FLAIR_WEIGHT).gradient}

    return jax.vmap(at)(times)


@pytest.mark.usefixtures("strict_dtypes")
def test_red_reading_and_flair_form_are_the_shared_step(key):
    out = jax.tree.map(np.asarray, _identities(key, TIMES))
    for i, t in enumerate(TIMES):
        snr, const = jax.tree.map(lambda v: v[i], (out["snr"], out["constant"]))
        scale = np.max(np.abs(snr.denoiser_form))
        # w_t (eps_hat - eps) = lambda (mu - x0_hat) with w_t = lambda sigma_t / alpha_t, exactly.
        np.testing.assert_allclose(snr.eps_form, snr.denoiser_form, atol=2e-5 * scale)
        # Negative control: the constant weighting differs by alpha_t / sigma_t (0.011 to 5.7 at these times).
        np.testing.assert_allclose(const.eps_form, snr.eps_form * out["ratio"][i], rtol=2e-4, atol=1e-6)
        assert np.max(np.abs(const.eps_form - const.denoiser_form)) > 0.04 * scale
        # FLAIR's step is the shared step with weight lambda_R / t, and RED-Diff's with lambda = lambda_R / t.
        flair = out["flair"][i]
        tolerance = 2e-4 * np.max(np.abs(flair))
        np.testing.assert_allclose(out["shared"][i], flair, atol=tolerance)
        np.testing.assert_allclose(out["red_as_flair"][i], flair, atol=tolerance)
        # Negative control: without FLAIR's 1 / t it is another step.
        np.testing.assert_allclose(out["no_scale"][i], t * flair, atol=tolerance)
        assert np.max(np.abs(out["no_scale"][i] - flair)) > 0.04 * np.max(np.abs(flair))


@jax.jit
def _reduction(m, cov, op, y, key):
    """FLAIR without DTA, HDC and CRW (one joint SGD step per t) against RED-Diff with SGD, the same grid and
    keys, w(t) = c / alpha_t (so its step weight is c / t) and data weight 2 (FLAIR's sum loss)."""
    model = solvers.gaussian_prior_model(m, cov, RF, "velocity")
    c, n = 0.3, 12
    flair = functools.partial(solvers.flair, model, RF, op, y, SIGMA_Y, key, n, regulariser_weight=c, crw=False,
                              data_consistency="joint")
    red = solvers.red_diff(model, RF, op, y, SIGMA_Y, key, n, regulariser_weight=1.0, weighting=lambda t: c / (1 - t),
                           data_weight=2.0, times=solvers.flair_times(n), optimizer=optax.sgd(1.0))
    return {"red": red, "flair": flair(dta=False), "flair_dta": flair(dta=True)}


def test_red_diff_and_flair_reduce_to_each_other(key):
    op, _, y, _, _, _ = _problem("sr")
    out = _reduction(*_prior(), op, y, key)
    red, flair, flair_dta = out["red"], out["flair"], out["flair_dta"]
    np.testing.assert_allclose(red.x, flair.x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(red.residual, flair.residual, rtol=1e-4, atol=1e-4)
    # Negative control: DTA's noise changes the trajectory.
    assert float(jnp.max(jnp.abs(flair_dta.x - flair.x))) > 0.05


# ----------------------------------------------------------------------------- against the exact posterior


@jax.jit
def _red_diff(m, cov, op, y, key):
    model = solvers.gaussian_prior_model(m, cov, VP, "eps")
    return {n: solvers.red_diff(model, VP, op, y, SIGMA_Y, key, n) for n in (50, 300)}  # the official defaults


def test_red_diff_approaches_the_posterior_mean(key):
    op, x0, y, oracle, _, pinv = _problem("sr")
    psnr = {n: _psnr(out.x, x0) for n, out in _red_diff(*_prior(), op, y, key).items()}
    best, pinv = _psnr(oracle, x0), _psnr(pinv, x0)
    assert best - pinv > 1.0  # the prior matters: a data-consistent guess is far from the oracle
    # RED-Diff (lambda 0.25, Adam lr 0.1, descending SNR-weighted steps) closes on the MMSE bound as steps grow.
    assert best - 0.5 <= psnr[300] <= best + 0.1, (psnr, best)
    assert psnr[50] < psnr[300] - 0.3, psnr


@jax.jit
def _dps(m, cov, op, y, key, step_sizes):
    model = solvers.gaussian_prior_model(m, cov, VP, "eps")
    return jax.vmap(lambda zeta: solvers.dps(model, VP, op, y, SIGMA_Y, key, 100, step_size=zeta))(step_sizes)


@pytest.mark.usefixtures("strict_dtypes")
def test_dps_scores_like_exact_posterior_samples(key):
    op, x0, y, oracle, sample, _ = _problem("sr")
    out = _dps(*_prior(), op, y, key, jnp.array([0.5, 0.0]))
    guided, unguided = _psnr(out.x[0], x0), _psnr(out.x[1], x0)
    best, exact_sample = _psnr(oracle, x0), _psnr(sample, x0)
    assert np.isfinite(guided) and guided <= best + 0.2
    assert guided >= exact_sample - 1.0, (guided, exact_sample)
    assert int(out.nfe[0]) == 100 and int(out.backprops[0]) == 100
    # Negative control: without the likelihood step it draws from the prior, far below.
    assert unguided < exact_sample - 3.0, (unguided, exact_sample)


@jax.jit
def _flair(m, cov, op, y, key, data_x0):
    model = solvers.gaussian_prior_model(m, cov, RF, "velocity")
    curve = solvers.model_error_curve(model, RF, key, data_x0)
    run = functools.partial(solvers.flair, model, RF, op, y, SIGMA_Y, key, 50, error_curve=curve)
    return {"curve": curve, "gradient": run(data_learning_rate=0.5), "projection": run(data_consistency="projection"),
            "joint": run(data_consistency="joint")}


@pytest.mark.usefixtures("strict_dtypes")
def test_flair_hard_data_consistency_fits_the_measurements(key):
    op, x0, y, oracle, sample, _ = _problem("inpainting")
    m, cov = _prior()
    data_x0 = sample_gaussian(jax.random.key(9), m.reshape(-1), cov, (512,)).reshape(512, *SHAPE)
    out = _flair(m, cov, op, y, key, data_x0)
    # CRW's error curve of the exact model is its irreducible loss: e(t) = mean_i c_i / (alpha^2 c_i + sigma^2).
    t = np.clip(np.linspace(1.0, 0.0, 100), RF.t_min, RF.t_max)
    c = np.linalg.eigvalsh(np.asarray(cov, np.float64))
    exact = np.mean(c[None] / ((1 - t[:, None]) ** 2 * c[None] + t[:, None] ** 2), axis=1)
    np.testing.assert_allclose(out["curve"], exact, rtol=0.08)
    measurements = 8  # observed pixels
    hdc = _rms(out["gradient"].residual[-1], measurements)
    assert np.max(hdc) <= 1.5 * SIGMA_Y, np.max(hdc) / SIGMA_Y
    assert np.max(_rms(out["projection"].residual[-1], measurements)) <= 1e-3 * SIGMA_Y
    # Negative control: the coupled step (no HDC) leaves a residual of several sigma_y.
    assert np.mean(_rms(out["joint"].residual[-1], measurements)) > 2.0 * SIGMA_Y
    # FLAIR keeps DTA's stochasticity: it scores like a posterior sample, not the mean.
    for name in ("gradient", "projection"):
        assert _psnr(sample, x0) - 1.0 <= _psnr(out[name].x, x0) <= _psnr(oracle, x0) + 0.1


@jax.jit
def _least_squares(m, cov, op, y, key, init, weight):
    model = solvers.gaussian_prior_model(m, cov, VP, "eps")
    return solvers.red_diff(model, VP, op, y, SIGMA_Y, key, 200, regulariser_weight=weight, init=init)


def test_red_diff_without_regulariser_is_least_squares(key):
    op, x0, y, _, _, pinv = _problem("inpainting")
    mask = np.asarray(op.mask)
    # From A^+ y the data gradient vanishes: lambda = 0 returns A^+ y exactly.
    np.testing.assert_array_equal(_least_squares(*_prior(), op, y, key, pinv, 0.0).x, pinv)
    # From anywhere, the measured pixels converge to y and the others keep their start (zero gradient).
    init = jax.random.normal(jax.random.key(4), x0.shape)
    x = np.asarray(_least_squares(*_prior(), op, y, key, init, 0.0).x)
    np.testing.assert_allclose(x[:, mask], np.asarray(y)[:, mask], atol=0.1 * SIGMA_Y)
    np.testing.assert_array_equal(x[:, ~mask], np.asarray(init)[:, ~mask])
    # Negative control: the regulariser fills in the missing pixels.
    x = np.asarray(_least_squares(*_prior(), op, y, key, init, 0.25).x)
    assert np.mean(np.abs(x[:, ~mask] - np.asarray(init)[:, ~mask])) > 0.3
