"""gvlab.ib: the regression IB objective (CS-IB, VIB, MSE), its data and evaluation, against closed forms.

Oracles: every CS term is exactly 0 (and the MSE too) when the targets are the network's own predictions; the VIB
rate equals 1/2 sum(mu^2 + sigma^2 - log sigma^2 - 1) by hand; the synthetic noise floor equals a Monte Carlo
estimate; PGD on a linear regressor reaches the closed-form worst case (|r| + eps ||w||_1)^2; the normalised CS-QMI
of a variable with itself is 1. Negative controls: shifted targets give a positive divergence and MSE = shift^2;
the deterministic encoder's variance head gets exactly no gradient; an independent t has ~0 information; the CS
loss's minimiser ignores one-sided outliers that pull the MSE minimiser (the correntropy-like robustness).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.ib import data as ib_data
from gvlab.ib import evaluation, regression
from gvlab.losses import cs_conditional_divergence

CFG = regression.Config(hidden=(8,), bottleneck=3, decoder_hidden=(8,))
# One compiled program per function instead of one per primitive (eager dispatch compiles every op).
TERMS = jax.jit(lambda params, x, y, key, noise, sigma: regression.objective_terms(CFG, params, x, y, key, noise,
                                                                                   sigma))


PREDICT = jax.jit(lambda params, x: regression.predict(CFG, params, x))


def _setup(n: int = 16, d: int = 3):
    x = jax.random.normal(jax.random.key(0), (n, d))
    params = jax.jit(lambda key, x: regression.init(CFG, key, x))(jax.random.key(1), x)
    return x, params


def test_every_term_vanishes_when_the_targets_are_the_networks_predictions():
    x, params = _setup()
    y = PREDICT(params, x)
    terms = TERMS(params, x, y, jax.random.key(2), 0.0, 1.0)
    for name in ("mse", "cs", "cs_code"):
        assert abs(float(terms[name])) < 1e-5, (name, terms[name])
    loss = regression.weighted_loss(terms, regression.variant_args("cs_ib", 0.0))
    assert abs(float(loss)) < 1e-5
    # negative control: targets shifted by 0.5 give MSE = 0.25 exactly and a positive CS divergence
    shifted = TERMS(params, x, y + 0.5, jax.random.key(2), 0.0, 1.0)
    np.testing.assert_allclose(float(shifted["mse"]), 0.25, rtol=1e-5)
    assert float(shifted["cs"]) > 1e-3 and float(shifted["cs_code"]) > 1e-3


def test_vib_rate_matches_the_closed_form():
    mean = jnp.array([[0.5, -1.0], [0.0, 2.0]])
    log_var = jnp.array([[0.0, np.log(4.0)], [np.log(0.25), 0.0]])
    var = np.exp(np.asarray(log_var))
    by_hand = 0.5 * (np.asarray(mean) ** 2 + var - np.asarray(log_var) - 1).sum(-1).mean()
    np.testing.assert_allclose(float(regression.gaussian_kl(mean, log_var)), by_hand, rtol=1e-6)
    assert float(regression.gaussian_kl(jnp.zeros((3, 2)), jnp.zeros((3, 2)))) == 0.0


@pytest.mark.parametrize("variant", ["vib", "cs_ib"])
def test_gradients_reach_every_parameter_that_the_variant_uses(variant):
    x, params = _setup()
    y = jnp.sin(x[:, 0])
    args = {k: jnp.asarray(v) for k, v in regression.variant_args(variant, 1e-2).items()}

    def loss(p, args):
        return regression.weighted_loss(regression.objective_terms(CFG, p, x, y, jax.random.key(3), args["noise"],
                                                                   args["sigma"]), args)

    grads = jax.jit(jax.grad(loss))(params, args)  # one program for both variants (args are traced)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        head = path[0].key
        if variant == "cs_ib" and head == "log_var":
            # deterministic t (the official training loop's `training=False`): the variance head is unused
            assert float(jnp.abs(g).max()) == 0.0, path
        else:
            assert float(jnp.abs(g).max()) > 0.0, path


def test_method_keeps_the_parameters_with_the_best_validation_rmse():
    x, params = _setup()
    method = regression.make(CFG)
    step_loss = jax.jit(method.loss)
    batch = {"x": x, "y": x[:, 0], "val_x": x, "val_y": x[:, 1]}
    args = {k: jnp.asarray(v) for k, v in regression.variant_args("mse").items()}
    extra = method.init_extra(jax.random.key(0), batch, params)
    _, terms, extra = step_loss(params, batch, jax.random.key(4), jnp.asarray(7), args=args, extra=extra)
    assert int(extra["step"]) == 7 and np.isfinite(float(extra["val_rmse"]))
    assert set(terms) >= {"ib/mse", "ib/cs", "ib/qmi", "ib/kl", "select/val_rmse"}
    worse = jax.tree.map(lambda a: a + 1.0, params)  # a stored best below any reachable RMSE is kept
    extra = dict(extra, val_rmse=jnp.asarray(0.0))
    _, _, kept = step_loss(worse, batch, jax.random.key(4), jnp.asarray(8), args=args, extra=extra)
    assert int(kept["step"]) == 7
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(kept["params"]), jax.tree.leaves(params)))


def test_variants_and_bad_input():
    stacked = regression.stack_args([("mse", 0.0), ("vib", 1e-3), ("cs_ib", 1e-2, 0.5), ("cs_ib_code", 0.1)])
    np.testing.assert_allclose(stacked["kl"], [0, 1e-3, 0, 0])
    np.testing.assert_allclose(stacked["qmi"], [0, 0, 1e-2, 0.1])
    np.testing.assert_allclose(stacked["sigma"], [1, 1, 0.5, 1])
    np.testing.assert_allclose(stacked["noise"], [0, 1, 0, 0])
    with pytest.raises(ValueError, match="unknown variant"):
        regression.variant_args("hsic")
    with pytest.raises(ValueError, match="sigma"):
        regression.variant_args("cs_ib", 0.0, 0.0)
    with pytest.raises(ValueError):
        regression.Config(bottleneck=0)


def test_noise_floor_is_the_bayes_predictors_rmse():
    draw = ib_data.heavy_tailed(jax.random.key(5), 200_000)
    mc = float(jnp.sqrt(jnp.mean(jnp.square(draw["y"] - draw["f"]))))
    assert ib_data.noise_floor_rmse() == pytest.approx(np.sqrt(0.208))
    assert mc == pytest.approx(ib_data.noise_floor_rmse(), rel=0.01)  # MC std of the RMSE ~0.4% here


def test_diabetes_splits_are_disjoint_and_standardised_on_train():
    s = ib_data.diabetes_splits(0, 2)
    assert s["train_x"].shape == (2, 265, 10) and s["val_x"].shape == (2, 88, 10) and s["test_y"].shape == (2, 89)
    np.testing.assert_allclose(s["train_x"].mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(s["train_y"].std(1), 1, rtol=1e-5)
    rows = np.concatenate([s["train_x"][0], s["val_x"][0], s["test_x"][0]])
    assert len(np.unique(rows.round(5), axis=0)) == 442  # every example once
    assert not np.allclose(s["train_y"][0], s["train_y"][1])  # replicates differ


def test_pgd_reaches_the_linear_regressors_closed_form_worst_case():
    w = jnp.array([1.5, -0.5, 2.0])
    x = jax.random.normal(jax.random.key(6), (32, 3))
    # residuals far from 0 (|r| > eps ||w||_1): the random start cannot cross to the other corner, a local maximum
    y = x @ w + 3.0 + 0.3 * jax.random.normal(jax.random.key(7), (32,))
    eps = jnp.array([0.0, 0.1, 0.3])
    adv = evaluation.adversarial_rmse(lambda v: v @ w, x, y, jax.random.key(8), eps, num_steps=10)
    residual = np.abs(np.asarray(x @ w - y))
    exact = [np.sqrt(np.mean((residual + e * np.abs(np.asarray(w)).sum()) ** 2)) for e in np.asarray(eps)]
    np.testing.assert_allclose(np.asarray(adv), exact, rtol=1e-5)


def test_information_plane_identity_and_independence():
    x = jax.random.normal(jax.random.key(9), (200, 2))
    plane = jax.jit(evaluation.information_plane)
    same = plane(x, x, x[:, 0])
    assert float(same["i_xt"]) == pytest.approx(1.0, abs=1e-5)
    noise = jax.random.normal(jax.random.key(10), (200, 2))
    independent = plane(x, noise, x[:, 0])
    close = plane(x, x + 0.1 * noise, x[:, 0])
    # finite-sample bias of the independent case is ~0.05 at N = 200; a near-copy keeps most of the information
    assert float(independent["i_xt"]) < 0.1 < 0.5 < float(close["i_xt"])


def test_cs_loss_ignores_one_sided_outliers_that_pull_the_mse():
    # Constant prediction c for every x (all x equal: K = all ones): the CS term's minimiser is the kernel mode of y
    # (correntropy), so 10% outliers at +5 barely move it, while the MSE minimiser (the mean) moves by 0.5.
    n = 200
    y = jnp.where(jnp.arange(n) < 180, 0.1 * jax.random.normal(jax.random.key(11), (n,)), 5.0)
    x = jnp.zeros((n, 1))
    grid = jnp.linspace(-1.0, 2.0, 151)
    cs = jax.jit(jax.vmap(lambda c: cs_conditional_divergence(x, y, jnp.full((n,), c), 0.5)))(grid)
    c_cs, c_mse = float(grid[jnp.argmin(cs)]), float(jnp.mean(y))
    assert abs(c_cs) < 0.05 and abs(c_mse - 0.5) < 0.05
