"""The helpers of `inverse/red_diff` (experiments/inverse/red_diff.py): the solves evaluator and the validation rule
that picks DPS's step. The per-measurement matrix operators that put every task into one solver batch are library
code (`gvlab.inverse.matrix`), tested in tests/test_inverse_operators.py.

Oracles: the evaluator's "oracle" job is the exact posterior mean of each measurement with its own operator, and its
solvers return `samples` distinct solutions per measurement; the rule picks the highest validation PSNR. Negative
controls: another measurement's operator, and the opposite rule, must fail the same checks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gvlab_experiments.inverse import red_diff as red
from gvlab.evals import evaluate_runs
from gvlab.inverse.gaussian import fit_gaussian, gaussian_posterior
from gvlab.inverse.matrix import measure_tasks


def test_solves_evaluator_gives_the_exact_oracle_and_distinct_solutions(key):
    cfg = dataclasses.replace(red.Config(), samples=2, num_steps=3)
    x0 = np.asarray(jax.random.uniform(key, (12, 8, 8), minval=-1.0, maxval=1.0))
    mean, cov = fit_gaussian(x0, 0.1)
    ops, y = measure_tasks(jnp.asarray(x0[:2]), key, tasks=("inpainting", "sr2"), sigma_y=cfg.sigma_y,
                           keep_fraction=0.5, box=4)
    jobs = (("sweep", "dps_sweep", "test"), ("red_diff", "red_diff", "test"), ("oracle", "oracle", "test"))
    prior = {"mean": mean[None], "cov": cov[None], "dps_weight": jnp.asarray([[0.1, 1.0]])}
    out = evaluate_runs(red._bind(red.solves, jobs=jobs, cfg=cfg), prior, {"test": (ops, y)}, key)
    assert out["sweep"].shape == (1, 2, 4, 2, 8, 8) and out["red_diff"].shape == out["oracle"].shape == (1, 4, 2, 8, 8)
    assert np.all(np.isfinite(out["sweep"])) and np.all(np.isfinite(out["red_diff"]))
    assert not np.allclose(out["red_diff"][0, :, 0], out["red_diff"][0, :, 1])  # each solution its own noise
    assert not np.allclose(out["sweep"][0, 0], out["sweep"][0, 1])  # each zeta' its own solve
    a, y_flat = np.asarray(ops.matrix), np.asarray(y).reshape(4, -1)
    for n in range(4):
        exact = gaussian_posterior(mean.reshape(-1), cov, a[n], y_flat[n], cfg.sigma_y).mean
        np.testing.assert_allclose(out["oracle"][0, n, 1].reshape(-1), exact, atol=1e-4)
    other = gaussian_posterior(mean.reshape(-1), cov, a[3], y_flat[0], cfg.sigma_y).mean  # the wrong operator
    assert np.max(np.abs(out["oracle"][0, 0, 0].reshape(-1) - other)) > 1e-2


def test_dps_step_is_chosen_on_validation_psnr_per_task():
    x0 = np.zeros((2, 8, 8))
    tasks, weights = ("inpainting", "sr2"), (0.05, 0.1, 0.3)
    error = np.array([[0.3, 0.1], [0.1, 0.2], [0.2, 0.4]])  # [Z, T]: best zeta' index 1 for inpainting, 0 for SR
    sweep = np.broadcast_to(error[:, :, None, None, None, None], (3, 2, 2, 1, 8, 8)).reshape(3, 4, 1, 8, 8)
    scores, index = red.dps_choice(sweep.astype(np.float32), x0, tasks)
    chosen = np.asarray(weights)[index]
    np.testing.assert_allclose(scores, 10 * np.log10(4 / error**2), rtol=1e-5)
    np.testing.assert_array_equal(chosen, [0.1, 0.05])
    # The rule is the maximum PSNR (minimum error), not the minimum: the opposite rule picks other steps.
    assert not np.array_equal(np.asarray(weights)[np.argmin(scores, axis=0)], chosen)
    # With a run axis (one choice per prior), each run chooses for itself.
    runs = np.stack([sweep, sweep[::-1]]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(weights)[red.dps_choice(runs, x0, tasks)[1]], [[0.1, 0.05], [0.1, 0.3]])


def test_v_loss_method_is_the_snr_plus_one_weighted_x0_loss(key):
    """Oracles: the loss is (1 + SNR) ||x0_hat - x0||^2, i.e. the unit x0 loss plus the eps loss of the same x0
    output on the same draw, and on the VP path Salimans & Ho's v-loss ||v_hat - v||^2, v = alpha eps - sigma x0.
    Negative control: the unit x0 loss alone is not it."""
    from gvlab.diffusion import losses
    from gvlab.diffusion.parameterisation import convert
    from gvlab.diffusion.schedules import Schedule
    from gvlab.inverse.priors import v_loss_method
    from gvlab.nn import TimeMLP

    schedule, net = Schedule("vp_linear"), TimeMLP(out_features=4, hidden=(8,))
    batch = {"x": jax.random.normal(jax.random.fold_in(key, 1), (64, 4))}
    method = v_loss_method(net, schedule)
    params = method.init(key, batch)
    loss_key = jax.random.fold_in(key, 2)
    value = float(method.loss(params, batch, loss_key, 0)[0])
    parts = [float(losses.make_method(net, p, schedule, output="x0").loss(params, batch, loss_key, 0)[0])
             for p in ("x0", "eps")]
    np.testing.assert_allclose(value, sum(parts), rtol=1e-5)
    t, eps, x_t = losses.noised(batch["x"], loss_key, schedule)
    x0_hat = net.apply(params, x_t, t)
    eps_hat = convert(x0_hat, "x0", "eps", schedule, x_t, t)
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    v_loss = jnp.mean(jnp.sum(jnp.square((alpha * eps_hat - sigma * x0_hat) - (alpha * eps - sigma * batch["x"])), -1))
    np.testing.assert_allclose(value, float(v_loss), rtol=1e-4)
    assert abs(value - parts[0]) > 0.1 * value  # negative control: the SNR term matters


def test_mlp_model_flattens_images_row_major(key):
    """Oracle: the Model's prediction on images [B, H, W] is the TimeMLP applied to the row-major flat rows, reshaped
    back, with the kind it was given. Negative control: column-major flattening (transposed images) differs."""
    from gvlab.inverse.priors import mlp_model
    from gvlab.nn import TimeMLP

    x, t = jax.random.normal(key, (3, 4, 4)), jnp.full((3,), 0.5)
    net = TimeMLP(out_features=16, hidden=(8,))
    params = net.init(key, x.reshape(3, 16), t)
    model = mlp_model(params, (8,), "x0", image_shape=(4, 4))
    assert model.prediction == "x0"
    out = model.predict(x, t)
    np.testing.assert_allclose(out, net.apply(params, x.reshape(3, 16), t).reshape(3, 4, 4), rtol=1e-6)
    transposed = net.apply(params, jnp.swapaxes(x, 1, 2).reshape(3, 16), t).reshape(3, 4, 4)
    assert float(jnp.max(jnp.abs(out - transposed))) > 1e-3
