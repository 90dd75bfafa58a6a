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
