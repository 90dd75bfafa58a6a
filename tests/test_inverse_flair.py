"""Helpers of the `inverse/flair` experiment: its measurements and the -CRW variant (a flat error curve). The masks,
`noisy_measurement` and the RMS residual are library functions, tested in tests/test_inverse_operators.py.

Each check has a negative control that the same assertion rejects.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gvlab_experiments.inverse import flair as flair_exp
from gvlab.diffusion.schedules import Schedule
from gvlab.inverse import solvers
from gvlab.inverse.operators import Inpainting


def test_measurements_are_zero_filled_masks_and_pooled_digits(key):
    x0 = jax.random.uniform(key, (16, 8, 8), minval=-1.0, maxval=1.0)
    masks, y = flair_exp.measure("inpainting", x0, key, 0.01, 2)
    masks, y = np.asarray(masks), np.asarray(y)
    assert masks.shape == y.shape == (16, 8, 8) and not masks[:, 2:6, 2:6].any()
    assert len({m.tobytes() for m in masks}) > 1  # the stripe differs per digit
    assert not y[~masks].any() and 0.005 < np.std((y - np.asarray(x0))[masks]) < 0.015
    masks_sr, y_sr = flair_exp.measure("sr4", x0, key, 0.01, 2)
    assert np.asarray(masks_sr).all() and y_sr.shape == (16, 2, 2)
    pooled = np.asarray(x0).reshape(16, 2, 4, 2, 4).mean(axis=(2, 4))
    assert np.max(np.abs(np.asarray(y_sr) - pooled)) < 0.06
    assert np.max(np.abs(np.asarray(y_sr) - np.asarray(x0)[:, ::4, ::4])) > 0.1  # negative control: subsampling


def test_flat_error_curve_is_the_no_crw_ablation(key):
    """FLAIR with a flat e(t) equals crw=False with lambda_R = w_D = regulariser_weight; a calibrated curve does not."""
    schedule = Schedule("rectified_flow")
    model = solvers.gaussian_prior_model(jnp.zeros((4, 4)), 0.5 * jnp.eye(16), schedule, "velocity")
    op = Inpainting(jnp.arange(16).reshape(4, 4) % 3 != 0)
    y = op.forward(jax.random.normal(key, (2, 4, 4)))
    run = functools.partial(solvers.flair, model, schedule, op, y, 0.01, key, 6, data_learning_rate=0.5, data_steps=4)
    with_curve = jax.jit(lambda curve: run(error_curve=curve).x)
    flat = with_curve(jnp.ones(20))
    ablation = jax.jit(lambda: run(crw=False, likelihood_weight=0.5).x)()
    np.testing.assert_allclose(flat, ablation, rtol=1e-5, atol=1e-6)
    shaped = with_curve(jnp.linspace(0.2, 2.0, 20))  # negative control
    assert float(jnp.max(jnp.abs(shaped - ablation))) > 1e-3


def test_step_cap_limits_the_regulariser_step_to_the_denoiser(key):
    """Oracle: with the cap, a step lr lambda_R / t above 1 equals the uncapped step with lambda_R = t / lr (a step
    of exactly 1, to D(x_t, t)), and a step below 1 is untouched. Negative control: the uncapped large step."""
    schedule = Schedule("rectified_flow")
    model = solvers.gaussian_prior_model(jnp.zeros((4, 4)), 0.5 * jnp.eye(16), schedule, "velocity")
    op = Inpainting(jnp.arange(16).reshape(4, 4) % 3 != 0)
    y = op.forward(jax.random.normal(key, (2, 4, 4)))
    run = jax.jit(lambda lam, cap: solvers.flair(model, schedule, op, y, 0.01, key, 3, regulariser_weight=lam,
                                                   crw=False, data_learning_rate=0.5, data_steps=2,
                                                   times=jnp.full(3, 0.4), max_step=cap).x)
    one = run(0.4, 1e9)  # lr lambda / t = 1 exactly, cap inactive
    np.testing.assert_allclose(run(20.0, 1.0), one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(0.2, 1.0), run(0.2, 1e9), rtol=1e-6, atol=1e-7)  # below the cap: unchanged
    assert float(jnp.max(jnp.abs(run(20.0, 1e9) - one))) > 1e-2  # negative control
