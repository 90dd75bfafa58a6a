"""The MA-fBM SDE: simulated covariance equals the closed form, BM fallback, solvers agree, H is learnable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.models import fractional_sde
from gvlab.types import Method
from gvlab.sde import fractional
from gvlab.sde.mafbm import brownian_coefficients, sample_paths, solve_fractional
from gvlab.sde.solve import brownian_increments

STEPS, HORIZON = 400, 1.0
DT = HORIZON / STEPS


def _simulate(key, gammas, omegas, kind, num_paths=4000, save_every=40, solver="diffrax"):
    return np.asarray(sample_paths(key, gammas, omegas, num_paths=num_paths, kind=kind, num_steps=STEPS, dt=DT,
                                   save_every=save_every, solver=solver), np.float64)


@pytest.mark.parametrize("kind", ["type1", "type2"])
def test_simulated_covariance_matches_the_closed_form(kind, key):
    hurst = jnp.asarray(0.3, jnp.float32)
    gammas = fractional.gamma_grid(5, 20.0)
    omegas = fractional.optimal_coefficients(hurst, gammas, HORIZON, kind)
    paths = _simulate(key, gammas, omegas, kind)
    ts = jnp.linspace(0.1, 1.0, 10)
    closed = np.asarray(fractional.mafbm_covariance(ts, hurst, gammas, omegas, kind), np.float64)
    empirical = np.cov(paths, rowvar=False)
    error = np.linalg.norm(empirical - closed) / np.linalg.norm(closed)
    assert error < 0.05, error  # Monte Carlo (4000 paths) plus Euler (gamma_max dt = 0.05)
    # Negative control: the closed form with other coefficients is far from the simulation.
    wrong = np.asarray(fractional.mafbm_covariance(ts, hurst, gammas, 0.5 * omegas, kind), np.float64)
    assert np.linalg.norm(empirical - wrong) / np.linalg.norm(wrong) > 0.3


def test_brownian_fallback_is_brownian_motion(key):
    gammas, omegas = brownian_coefficients()
    paths = _simulate(key, gammas, omegas, "type2")
    ts = np.linspace(0.1, 1.0, 10)
    np.testing.assert_allclose(paths.var(0), ts, rtol=0.1)  # Var W_t = t
    np.testing.assert_allclose(np.cov(paths, rowvar=False)[2, 7], ts[2], rtol=0.15)  # Cov = min(s, t)


def test_diffrax_and_scan_give_the_same_paths(key):
    gammas = fractional.gamma_grid(5, 20.0)
    omegas = fractional.optimal_coefficients(jnp.asarray(0.7, jnp.float32), gammas, HORIZON, "type1")
    a = _simulate(key, gammas, omegas, "type1", num_paths=8, solver="diffrax")
    b = _simulate(key, gammas, omegas, "type1", num_paths=8, solver="scan")
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_posterior_starts_at_the_prior_and_hurst_gets_a_gradient(key):
    cfg = fractional_sde.Config(dim=2, num_terms=3, hidden=(8,), learn_hurst=True, learn_scale=True, hurst=0.4,
                                omega_horizon=1.0)
    model = fractional_sde.make_model(cfg)
    params = model.init(key)
    context = jnp.zeros((50, 0))
    post = model.sample(params, key, jnp.zeros((2,)), context, 50, 0.02)
    prior = model.sample(params, key, jnp.zeros((2,)), context, 50, 0.02, posterior=False)
    np.testing.assert_allclose(post.ys, prior.ys, atol=1e-6)  # zero-initialised control
    assert float(post.kl[-1]) == 0.0
    np.testing.assert_allclose(float(model.coefficients(params).hurst), 0.4, rtol=1e-6)

    def objective(p):
        path = model.sample(p, key, jnp.zeros((2,)), context, 50, 0.02)
        return jnp.sum(path.ys[-1, :, 0] ** 2) + path.kl[-1]

    grads = jax.grad(objective)(params)
    assert np.isfinite(float(grads["hurst_logit"])) and float(grads["hurst_logit"]) != 0.0
    assert float(grads["log_scale"]) != 0.0
    # Negative control: with learn_hurst off, H is a constant.
    frozen = fractional_sde.make_model(fractional_sde.Config(dim=2, num_terms=3, hidden=(8,), hurst=0.4))
    assert float(jax.grad(lambda p: jnp.sum(frozen.sample(p, key, jnp.zeros((2,)), context, 50, 0.02).ys[-1]))(
        frozen.init(key))["hurst_logit"]) == 0.0


def test_make_is_a_method_whose_loss_is_the_negative_elbo_per_observation(key):
    cfg = fractional_sde.Config(dim=1, num_terms=3, hidden=(8,), hurst=0.4, omega_horizon=1.0, context_dim=2)
    for exact in (False, True):
        obs_cfg = fractional_sde.Observations(horizon=1.0, num_steps=12, noise=0.2, exact_step=exact)
        method = fractional_sde.make(cfg, obs_cfg)
        assert isinstance(method, Method)
        obs = jax.random.normal(key, (4, 3, 1))
        context = jax.vmap(lambda o: fractional_sde.control_context(o, 4))(obs)
        batch = {"obs": obs, "context": context}
        params = method.init(key, batch)
        loss, terms = jax.jit(method.loss)(params, batch, key, jnp.zeros((), jnp.int32))
        elbo = fractional_sde.make_path_elbo(fractional_sde.make_model(cfg), obs_cfg)
        log_lik, kl, _ = jax.vmap(elbo, in_axes=(None, 0, 0, 0))(params, obs, context, jax.random.split(key, 4))
        np.testing.assert_allclose(loss, -np.mean(log_lik - kl) / 3, rtol=1e-5)
        np.testing.assert_allclose(terms["elbo/recon"], np.mean(log_lik), rtol=1e-5)
        np.testing.assert_allclose(terms["fbm/hurst"], 0.4, rtol=1e-5)
        assert float(terms["elbo/kl"]) == 0.0  # zero-initialised control: the posterior starts at the prior
    # The plain step's likelihood reads X at the observation times: a far-off observation costs more.
    far = {"obs": obs + 10.0, "context": context}
    assert float(jax.jit(method.loss)(params, far, key, jnp.zeros((), jnp.int32))[0]) > float(loss) + 10


def test_control_context_reads_the_next_targets_and_the_time_left():
    targets = jnp.asarray([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    context = np.asarray(fractional_sde.control_context(targets, 2, count=2))
    expected = np.asarray([[1, 10, 2, 20, 1.0], [1, 10, 2, 20, 0.5], [2, 20, 3, 30, 1.0], [2, 20, 3, 30, 0.5],
                           [3, 30, 3, 30, 1.0], [3, 30, 3, 30, 0.5]])  # past the last target, it is repeated
    np.testing.assert_array_equal(context, expected)


def test_sample_paths_are_the_per_key_solves(key):
    gammas = fractional.gamma_grid(3, 10.0)
    omegas = fractional.optimal_coefficients(jnp.asarray(0.3, jnp.float32), gammas, HORIZON, "type1")
    paths = sample_paths(key, gammas, omegas, num_paths=3, kind="type1", num_steps=20, dt=0.05, save_every=5)
    assert paths.shape == (3, 4)  # t = 0.25, 0.5, 0.75, 1
    y0_key, noise_key = jax.random.split(jax.random.split(key, 3)[1])
    one = solve_fractional(y0_key, jnp.zeros((1,)), brownian_increments(noise_key, 20, 0.05, (1,)), gammas=gammas,
                           omegas=omegas, kind="type1", drift=lambda t, x, p: jnp.zeros_like(x),
                           diffusion=lambda t, x, p: jnp.ones_like(x), dt=0.05, save_every=5)
    np.testing.assert_allclose(paths[1], one.ys[1:, 0, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(paths[0], paths[1])


def _conditional_dw_mean(z, n, obs, noise, transition, coupling, num_steps, per_obs, dt, next_only=False):
    """E[dW_n | z_n = z, o] / dt by direct Gaussian conditioning on the observations after step n (float64)."""
    unit = np.eye(transition.shape[0])[0]
    obs_steps = [(i + 1) * per_obs for i in range(len(obs)) if (i + 1) * per_obs > n]
    if next_only:
        obs_steps = obs_steps[:1]
    index = [s // per_obs - 1 for s in obs_steps]
    power = lambda k: np.linalg.matrix_power(transition, k)
    # o_j - e^T F^(s_j - n) z = sum_{m = n}^{s_j - 1} e^T F^(s_j - m - 1) g dW_m + noise
    loadings = np.asarray([[unit @ power(s - m - 1) @ coupling if m < s else 0.0 for m in range(n, num_steps)]
                           for s in obs_steps])
    residual = np.asarray([obs[i] - unit @ power(s - n) @ z for i, s in zip(index, obs_steps)])
    cov_obs = dt * loadings @ loadings.T + noise**2 * np.eye(len(obs_steps))
    return float(dt * loadings[:, 0] @ np.linalg.solve(cov_obs, residual)) / dt


def test_smoothing_control_is_the_exact_conditional_mean_of_the_next_increment(key):
    from gvlab.sde.mafbm import smoothing_control

    gammas = fractional.gamma_grid(2, 5.0)
    omegas = jnp.asarray([0.8, -0.3])
    scale, theta, noise, per_obs, num_obs, dt = 0.7, 0.3, 0.2, 2, 3, 0.1
    num_steps = per_obs * num_obs
    obs = jax.random.normal(key, (num_obs, 1))
    control = smoothing_control(obs, noise, gammas=gammas, omegas=omegas, scale=jnp.asarray(scale), theta=theta,
                                num_steps=num_steps, dt=dt)
    g, w = np.asarray(gammas, np.float64), np.asarray(omegas, np.float64)
    drift = np.zeros((3, 3))
    drift[0, 0], drift[0, 1:], drift[1:, 1:] = -theta, -scale * w * g, -np.diag(g)
    transition, coupling = np.eye(3) + dt * drift, np.concatenate([[scale * w.sum()], np.ones(2)])
    z = np.asarray([0.3, -0.5, 0.2])
    for n in range(num_steps):
        ours = float(control.offset[n, 0] + control.gain[n, 0] @ z)
        exact = _conditional_dw_mean(z, n, np.asarray(obs[:, 0], np.float64), noise, transition, coupling,
                                     num_steps, per_obs, dt)
        np.testing.assert_allclose(ours, exact, rtol=1e-4, atol=1e-4)
    # Negative control: conditioning on the next observation only (the old context) gives another control.
    next_only = _conditional_dw_mean(z, 0, np.asarray(obs[:, 0], np.float64), noise, transition, coupling,
                                     num_steps, per_obs, dt, next_only=True)
    assert abs(next_only - float(control.offset[0, 0] + control.gain[0, 0] @ z)) > 1e-2


def _discretised_log_likelihood(obs, noise, transition, coupling, initial_cov, per_obs, dt):
    """log N(o; 0, Cov(X at the observation steps) + sigma^2 I) of the Euler-discretised linear system (float64)."""
    cov, marginals = initial_cov, []
    for n in range(per_obs * len(obs)):
        cov = transition @ cov @ transition.T + dt * np.outer(coupling, coupling)
        if (n + 1) % per_obs == 0:
            marginals.append(cov)
    size = len(obs)
    joint = np.zeros((size, size))
    for i in range(size):
        for j in range(i, size):
            joint[i, j] = joint[j, i] = (np.linalg.matrix_power(transition, (j - i) * per_obs) @ marginals[i])[0, 0]
    joint += noise**2 * np.eye(size)
    return float(-0.5 * (obs @ np.linalg.solve(joint, obs) + np.linalg.slogdet(2 * np.pi * joint)[1]))


@pytest.mark.parametrize("kind", ["type1", "type2"])
def test_smoothed_posterior_bound_is_tight_and_the_plain_prior_is_not(kind, key):
    from gvlab.sde.mafbm import linear_system, solve_fractional_smoothed, stationary_cholesky

    gammas = fractional.gamma_grid(3, 5.0)
    omegas = fractional.optimal_coefficients(jnp.asarray(0.7), gammas, 1.0, kind)
    scale, noise, per_obs, num_obs, dt = jnp.asarray(1.3), 0.1, 3, 4, 1.0 / 12
    obs = jnp.asarray([[0.3], [0.9], [0.6], [1.4]])

    @jax.jit
    def bound(k):
        y0_key, noise_key = jax.random.split(k)
        sol = solve_fractional_smoothed(y0_key, jnp.zeros((1,)), brownian_increments(noise_key, 12, dt, (1,)), obs,
                                        noise, gammas=gammas, omegas=omegas, kind=kind, scale=scale, theta=0.0, dt=dt)
        return sol.log_lik - sol.kl, sol.zs

    values, zs = jax.vmap(bound)(jax.random.split(key, 4000))
    values = np.asarray(values, np.float64)
    transition, coupling = (np.asarray(a, np.float64) for a in linear_system(gammas, omegas, scale, 0.0, dt))
    initial = np.zeros((4, 4))
    if kind == "type1":
        chol = np.asarray(stationary_cholesky(gammas), np.float64)
        initial[1:, 1:] = chol @ chol.T
    exact = _discretised_log_likelihood(np.asarray(obs[:, 0], np.float64), noise, transition, coupling, initial,
                                        per_obs, dt)
    assert zs.shape == (4000, num_obs, 1, 4)
    assert abs(values.mean() - exact) < 4 * values.std() / np.sqrt(values.size) + 1e-3, (values.mean(), exact)
    # Negative control: the prior as the posterior (no smoothing) is a much looser bound.
    _, noise_key = jax.random.split(key)
    path = solve_fractional(key, jnp.zeros((1,)), brownian_increments(noise_key, 12, dt, (1,)), gammas=gammas,
                            omegas=omegas, kind=kind, drift=lambda t, x, p: jnp.zeros_like(x),
                            diffusion=lambda t, x, p: jnp.full_like(x, 1.3), dt=dt)
    prior_bound = float(jnp.sum(-0.5 * (jnp.log(2 * jnp.pi * noise**2)
                                       + jnp.square(obs[:, 0] - path.ys[per_obs::per_obs, 0, 0]) / noise**2)))
    assert prior_bound < exact - 5.0
