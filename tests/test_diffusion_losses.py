"""Oracles of the Gaussian-path core (schedules, losses, the diffusion Method) and the time-conditioned MLP.

Schedules against their closed forms and finite differences; the regression losses against their known minimisers:
least squares on a linear score for Gaussian data recovers the analytic score, and at the analytic Gaussian-mixture
fields each loss sits exactly E w ||delta||^2 below its value at a prediction shifted by delta (Pythagoras: the
minimiser is a conditional expectation). Each test runs one jitted program; inputs that are not under test come
from numpy (a jax.random call site costs a compile).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab.data import gaussian_mixture as gm
from gvlab.diffusion import losses
from gvlab.diffusion.parameterisation import convert
from gvlab.diffusion.schedules import KINDS, Schedule
from gvlab.nn import TimeMLP

SCHEDULES = {kind: Schedule(kind) for kind in KINDS}
GMM = gm.eight_gaussians()


def _normal(seed, *shape, loc=0.0, scale=1.0):
    """Normal test inputs from numpy (a jax.random call site outside the code under test costs a compile)."""
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, size=shape), jnp.float32)


def _gmm_data(seed, n):
    """n points of the 8-Gaussian mixture, the modes in turn."""
    return _normal(seed, n, 2, loc=np.asarray(GMM.means)[np.arange(n) % 8], scale=0.1)


@functools.lru_cache(maxsize=None)
def _schedule_values():
    """Every schedule's coefficients on a time grid, with five-point finite differences (error O(h^4)) of
    log alpha and sigma^2, and the ELBO weight on a quadrature grid: one compiled program."""
    h = 1e-2

    def derivative(fn, t):
        return (-fn(t + 2 * h) + 8 * fn(t + h) - 8 * fn(t - h) + fn(t - 2 * h)) / (12 * h)

    @jax.jit
    def program():
        out = {}
        for kind, s in SCHEDULES.items():
            t = jnp.linspace(0.05, 0.9, 86)
            # Geometric in the distance to either end: VP's weight grows like 1/t at 0, the cosine's like
            # 1/(1 - t) at 1.
            t_weight = jnp.concatenate([jnp.geomspace(s.t_min, 0.5, 2000),
                                        s.t_max - jnp.geomspace(s.t_max - 0.5, 1e-6, 2000), jnp.array([s.t_max])])
            out[kind] = {
                "t": t, "alpha": s.alpha(t), "sigma": s.sigma(t), "alpha_dot": s.alpha_dot(t),
                "sigma_dot": s.sigma_dot(t), "log_snr": s.log_snr(jnp.linspace(s.t_min, s.t_max, 1000)),
                "f": s.drift_coefficient(t), "g2": s.diffusion_squared(t),
                "fd_log_alpha": derivative(lambda u: jnp.log(s.alpha(u)), t),
                "fd_sigma2": derivative(lambda u: s.sigma(u) ** 2, t),
                "ends": jnp.stack([s.alpha(jnp.array([0.0, 1.0])), s.sigma(jnp.array([0.0, 1.0]))]),
                "t_weight": t_weight, "elbo_weight": losses.time_weight("elbo", s, t_weight),
                "log_snr_ends": s.log_snr(jnp.array([s.t_min, s.t_max])),
            }
        return out

    return jax.device_get(program())


def test_schedule_endpoints_and_monotone_log_snr():
    v = _schedule_values()
    for kind in ("vp_linear", "vp_cosine"):
        (alpha0, _), (sigma0, _) = v[kind]["ends"]
        assert abs(alpha0 - 1.0) < 1e-6 and sigma0 < 1e-3
        np.testing.assert_allclose(v[kind]["alpha"] ** 2 + v[kind]["sigma"] ** 2, 1.0, atol=1e-6)
    # VP linear: alpha_1 = exp(-(beta_min + beta_max) / 4); cosine: alpha_1 = 0 (hence t_max < 1).
    alpha1 = np.exp(-(0.1 + 20.0) / 4)
    np.testing.assert_allclose(v["vp_linear"]["ends"][:, 1], [alpha1, np.sqrt(1 - alpha1**2)], rtol=1e-5)
    assert abs(v["vp_cosine"]["ends"][0, 1]) < 1e-6 and SCHEDULES["vp_cosine"].t_max < 1.0
    np.testing.assert_allclose(v["rectified_flow"]["ends"], [[1.0, 0.0], [0.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(v["ve"]["ends"], [[1.0, 1.0], [0.01, 10.0]], rtol=1e-5)
    for kind in KINDS:
        assert np.all(np.diff(v[kind]["log_snr"]) < 0), kind
        assert np.all(v[kind]["g2"] > 0), kind
    # Negative control: the rectified-flow path run backwards has an increasing log SNR.
    assert np.all(np.diff(v["rectified_flow"]["log_snr"][::-1]) > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_derivatives_drift_and_diffusion_match_finite_differences(kind):
    """alpha_dot, sigma_dot, f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (Lai et al. 2025)."""
    v = _schedule_values()[kind]
    np.testing.assert_allclose(v["f"], v["fd_log_alpha"], rtol=2e-3, atol=2e-4)
    g2_fd = v["fd_sigma2"] - 2 * v["fd_log_alpha"] * v["sigma"] ** 2
    np.testing.assert_allclose(v["g2"], g2_fd, rtol=2e-3, atol=2e-4)
    # The jvp derivatives themselves: f = alpha_dot / alpha, d sigma^2 / dt = 2 sigma sigma_dot.
    np.testing.assert_allclose(v["alpha_dot"] / v["alpha"], v["fd_log_alpha"], rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(2 * v["sigma"] * v["sigma_dot"], v["fd_sigma2"], rtol=2e-3, atol=2e-4)
    # Negative control: dropping the drift term (the VE formula g^2 = d sigma^2 / dt) is wrong wherever f != 0.
    if kind != "ve":
        assert np.max(np.abs(v["fd_sigma2"] - v["g2"]) / np.abs(v["g2"])) > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_elbo_weight_integrates_to_half_the_log_snr_range(kind):
    """E_t w(t) = (log SNR(t_min) - log SNR(t_max)) / 2 for w = -(t_max - t_min) / 2 d/dt log SNR (one jvp)."""
    v = _schedule_values()[kind]
    s = SCHEDULES[kind]
    if kind == "rectified_flow":  # log SNR(1) = -inf: the ELBO weight has an infinite integral on [t_min, 1]
        assert not np.isfinite(v["log_snr_ends"][1])
        return
    mean_weight = np.trapezoid(v["elbo_weight"], v["t_weight"]) / (s.t_max - s.t_min)
    want = 0.5 * (v["log_snr_ends"][0] - v["log_snr_ends"][1])
    np.testing.assert_allclose(mean_weight, want, rtol=1e-3)
    # Negative control: the unit weighting's mean (1) is not that number.
    assert abs(want - 1.0) > 0.5


def test_marginal_moments_match_monte_carlo():
    """x_t = alpha_t x0 + sigma_t eps has mean alpha_t m and std (alpha_t^2 s^2 + sigma_t^2)^(1/2) for x0 ~ N(m, s^2)."""
    n, times = 20000, np.array([0.1, 0.5, 0.9])
    m, s = np.array([1.0, -2.0]), 0.5
    x0 = _normal(0, 3 * n, 2, loc=m, scale=s)
    eps = _normal(1, 3 * n, 2)
    t = jnp.asarray(np.repeat(times, n), jnp.float32)  # one time per example

    @jax.jit
    def program(x0, eps, t):
        return {kind: (sched.marginal(x0, t, eps), sched.alpha(times), sched.sigma(times))
                for kind, sched in SCHEDULES.items()}

    for kind, (x_t, alpha, sigma) in jax.device_get(program(x0, eps, t)).items():
        x_t = x_t.reshape(3, n, 2)
        mean, std = alpha[:, None] * m[None], np.sqrt(alpha**2 * s**2 + sigma**2)[:, None]
        tol_mean, tol_std = 5 * std / np.sqrt(n), 5 * std / np.sqrt(2 * n)
        assert np.all(np.abs(x_t.mean(1) - mean) < tol_mean), kind
        assert np.all(np.abs(x_t.std(1) - std) < tol_std), kind
        # Negative control: the moments of another time (0.9 vs 0.1) are far outside the tolerance.
        assert np.any(np.abs(x_t.mean(1)[0] - mean[2]) > 10 * tol_mean[0]) or \
            np.any(np.abs(x_t.std(1)[0] - std[2]) > 10 * tol_std[0]), kind


def test_dsm_minimiser_is_the_analytic_score_for_gaussian_data(key):
    """For x0 ~ N(m, s^2 I), the minimiser of E||s_hat(x_t) + eps / sigma_t||^2 over linear s_hat(x) = x A + b at
    a fixed t is the true score -(x - alpha m) / v, v = alpha^2 s^2 + sigma^2 (Vincent 2011): A = -I / v,
    b = alpha m / v. The loss is quadratic in (A, b), so one Newton step from 0 lands on its sample minimiser."""
    n, m, s, t0 = 20000, np.array([1.0, -2.0]), 0.5, 0.3
    x0 = _normal(3, n, 2, loc=m, scale=s)

    def newton(schedule, x0, key):
        def objective(theta):
            a, b = theta[:4].reshape(2, 2), theta[4:]
            predict = lambda x_t, t: x_t @ a + b[None]  # noqa: E731
            return jnp.mean(losses.score_matching_loss(predict, x0, key, schedule, "unit", t=t0))

        theta = jnp.zeros(6)
        times = jnp.array([t0, t0 + 0.2])
        return (theta - jnp.linalg.solve(jax.hessian(objective)(theta), jax.grad(objective)(theta)),
                schedule.alpha(times), schedule.sigma(times))

    kinds = ("vp_linear", "rectified_flow")
    results = jax.device_get(jax.jit(lambda x0, key: [newton(SCHEDULES[k], x0, key) for k in kinds])(x0, key))
    for theta, alphas, sigmas in results:
        a, b = theta[:4].reshape(2, 2), theta[4:]

        def analytic(i):
            alpha, sigma = float(alphas[i]), float(sigmas[i])
            v = alpha**2 * s**2 + sigma**2
            return -np.eye(2) / v, alpha * np.asarray(m) / v, alpha, sigma, v

        a_star, b_star, alpha, sigma, v = analytic(0)
        # Standard errors of least squares: residual std (alpha s / (sigma sqrt v)) over sqrt(n) regressor std.
        resid = alpha * s / (sigma * np.sqrt(v))
        tol_a = 6 * resid / np.sqrt(n * v)
        tol_b = 6 * resid * np.sqrt(1 + np.sum(np.square(alpha * np.asarray(m))) / v) / np.sqrt(n)
        np.testing.assert_allclose(a, a_star, atol=tol_a)
        np.testing.assert_allclose(b, b_star, atol=tol_b)
        # Negative control: the score at another noise level is not the minimiser.
        a_other, b_other, *_ = analytic(1)
        assert np.max(np.abs(a - a_other)) > 3 * tol_a or np.max(np.abs(b - b_other)) > 3 * tol_b


# (view, schedule, weighting, the analytic optimum of that view)
CASES = [
    ("eps", "vp_cosine", "unit", gm.eps_star),
    ("eps", "vp_linear", "elbo", gm.eps_star),
    ("score", "ve", "sigma2", gm.score),
    ("velocity", "rectified_flow", "unit", gm.velocity_star),
    ("x0", "vp_linear", "unit", gm.x0_star),
]


@functools.lru_cache(maxsize=None)
def _losses_at_the_optimum():
    """Per-example losses at the analytic optimum and at optimum + delta, with common random numbers."""
    n = 4096
    x0 = _gmm_data(4, n)
    delta = jnp.array([0.3, -0.2])

    @jax.jit
    def program(x0, key):
        out = []
        for prediction, kind, weighting, optimum in CASES:
            schedule = SCHEDULES[kind]
            best = lambda x, t: optimum(GMM, schedule, x, t)  # noqa: E731
            loss = functools.partial(losses.matching_loss, prediction, x0=x0, key=key, schedule=schedule,
                                     weighting=weighting)
            t, _, _ = losses.noised(x0, key, schedule)
            out.append((loss(best), loss(lambda x, t: best(x, t) + delta[None]),
                        losses.time_weight(weighting, schedule, t)))
        return out

    return jax.device_get(program(x0, jax.random.key(5))), float(jnp.sum(delta**2))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_each_loss_is_minimised_by_the_analytic_field(case):
    """L(opt + delta) - L(opt) = E w(t) ||delta||^2: the cross term vanishes because opt = E[target | x_t]."""
    results, delta_sq = _losses_at_the_optimum()
    at_optimum, perturbed, weight = results[case]
    gap = perturbed - at_optimum
    assert np.all(np.isfinite(at_optimum))
    assert gap.mean() > 0  # the negative control: a perturbed prediction is worse
    np.testing.assert_allclose(gap.mean(), weight.mean() * delta_sq, atol=5 * gap.std() / np.sqrt(gap.size))


def test_the_four_loss_functions_agree_with_matching_loss(key):
    # The public wrappers are matching_loss with their view and default weighting, and DSM with the sigma^2
    # weighting is exactly the eps loss of the converted prediction: sigma^2 ||-eps_hat / sigma + eps / sigma||^2.
    x0 = _normal(6, 64, 2)
    s = SCHEDULES["vp_cosine"]
    eps_hat = lambda x, t: jnp.tanh(x) * t[:, None]  # noqa: E731
    as_score = lambda x, t: convert(eps_hat(x, t), "eps", "score", s, x, t)  # noqa: E731

    @jax.jit
    def program(x0, key):
        return {"eps": losses.eps_matching_loss(eps_hat, x0, key, s),
                "dsm": losses.score_matching_loss(as_score, x0, key, s),
                "dsm_unit": losses.score_matching_loss(as_score, x0, key, s, weighting="unit"),
                "flow": losses.flow_matching_loss(eps_hat, x0, key, s),
                "flow_generic": losses.matching_loss("velocity", eps_hat, x0, key, s)}

    out = jax.device_get(program(x0, key))
    np.testing.assert_allclose(out["dsm"], out["eps"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out["flow"], out["flow_generic"])
    # Negative control: without the sigma^2 weight the DSM loss is another number.
    assert np.max(np.abs(out["dsm_unit"] - out["eps"]) / out["eps"]) > 0.1
    with pytest.raises(ValueError, match="weighting"):
        losses.time_weight("snr", s, jnp.ones(3))


# One small class-conditional network, initialised once, serves the method and network tests below.
NET = TimeMLP(out_features=2, hidden=(32, 32), num_frequencies=8, num_classes=4)


def _labelled_batch(n=256):
    return {"x": _gmm_data(7, n), "c": jnp.asarray(np.arange(n) % 8 // 2, jnp.int32)}


@functools.lru_cache(maxsize=None)
def _net_params():
    method = losses.make_method(NET, "velocity", SCHEDULES["rectified_flow"], num_classes=4)
    return jax.jit(method.init)(jax.random.key(0), _labelled_batch())


def test_class_conditional_method_trains_and_reaches_every_parameter(key):
    method = losses.make_method(NET, "velocity", SCHEDULES["rectified_flow"], num_classes=4, label_dropout=0.25)
    batch = _labelled_batch(128)
    tx = optax.adam(3e-3)

    @jax.jit
    def run(params, key):
        def step(carry, i):
            p, opt_state = carry
            (_, metrics), g = jax.value_and_grad(method.loss, has_aux=True)(p, batch, jax.random.fold_in(key, i), i)
            updates, opt_state = tx.update(g, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), (metrics, g)

        _, (history, grads) = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(200))
        return history, jax.tree.map(lambda g: g[0], grads)  # the gradients at the initial parameters

    history, grads = jax.device_get(run(_net_params(), key))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
    assert set(history) == {"diffusion/loss", "diffusion/mse", "diffusion/eps_mse", "diffusion/label_dropped"}
    np.testing.assert_array_equal(history["diffusion/loss"], history["diffusion/mse"])  # unit weighting
    assert abs(history["diffusion/label_dropped"].mean() - 0.25) < 0.02
    loss = history["diffusion/loss"]
    assert loss[-20:].mean() < 0.8 * loss[:20].mean()
    # Same key, same numbers; another key, other numbers.
    np.testing.assert_array_equal(jax.device_get(run(_net_params(), key))[0]["diffusion/loss"], loss)
    other = jax.device_get(run(_net_params(), jax.random.fold_in(key, 1)))[0]["diffusion/loss"]
    assert not np.allclose(other, loss)


def test_method_conversion_and_argument_checks(key):
    # An eps network trained by DSM (sigma^2 weighting) has exactly the eps method's loss.
    batch = _labelled_batch(64)
    s = SCHEDULES["vp_linear"]
    eps_method = losses.make_method(NET, "eps", s, num_classes=4, label_dropout=0.25)
    dsm_method = losses.make_method(NET, "score", s, output="eps", num_classes=4, label_dropout=0.25)

    @jax.jit
    def program(params, key):
        return [m.loss(params, batch, key, jnp.array(0)) for m in (eps_method, dsm_method)]

    (eps_value, eps_metrics), (dsm_value, dsm_metrics) = jax.device_get(program(_net_params(), key))
    np.testing.assert_allclose(dsm_value, eps_value, rtol=1e-4)
    np.testing.assert_allclose(dsm_metrics["diffusion/eps_mse"], eps_metrics["diffusion/eps_mse"], rtol=1e-6)
    # Negative control: without the weight (the unweighted score error, diffusion/mse) it is another number.
    assert abs(dsm_metrics["diffusion/mse"] / eps_value - 1.0) > 0.1
    with pytest.raises(ValueError, match="label_dropout"):
        losses.make_method(NET, "eps", s, label_dropout=0.1)
    with pytest.raises(ValueError, match="unknown prediction"):
        losses.make_method(NET, "noise", s)
    with pytest.raises(KeyError, match="labels"):
        losses.make_method(NET, "eps", s, num_classes=4).init(key, {"x": batch["x"]})


def test_time_mlp_conditioning():
    params = _net_params()
    assert params["params"]["class_embedding"]["embedding"].shape == (5, 32)  # 4 classes + the null class
    x = _normal(9, 6, 2)
    c = jnp.array([0, 1, 2, 3, 0, 1], jnp.int32)

    @jax.jit
    def program(params, x, c):
        return {"vector_t": NET.apply(params, x, jnp.full((6,), 0.4), c), "scalar_t": NET.apply(params, x, 0.4, c),
                "none": NET.apply(params, x, 0.4), "null": NET.apply(params, x, 0.4, jnp.full((6,), 4, jnp.int32)),
                "other_t": NET.apply(params, x, 0.6, c)}

    out = jax.device_get(program(params, x, c))
    assert out["vector_t"].shape == (6, 2)
    np.testing.assert_array_equal(out["scalar_t"], out["vector_t"])
    np.testing.assert_array_equal(out["none"], out["null"])  # no label = the null class
    # Negative controls: the label and the time both change the output.
    assert np.min(np.max(np.abs(out["null"] - out["vector_t"]), axis=-1)) > 1e-4
    assert np.min(np.max(np.abs(out["other_t"] - out["vector_t"]), axis=-1)) > 1e-4
    with pytest.raises(ValueError, match="unconditional"):
        TimeMLP(out_features=2, hidden=(4,)).init(jax.random.key(0), x, 0.5, c)
    with pytest.raises(ValueError, match="flat"):
        NET.init(jax.random.key(0), x[None], 0.5, c)
