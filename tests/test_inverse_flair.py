"""Helpers of the `inverse/flair` experiment: measurement masks, the RMS residual, diversity, and the -CRW variant.

Each check has a negative control that the same assertion rejects.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments import inverse_flair as flair_exp
from gvlab.diffusion.schedules import Schedule
from gvlab.inverse import solvers
from gvlab.inverse.operators import AveragePool, Inpainting, gaussian_noise


def test_masks_miss_the_centre_box_and_one_full_width_stripe(key):
    masks = np.asarray(flair_exp.box_stripe_masks(key, 64, (8, 8), box=4, stripe_rows=2))
    assert masks.shape == (64, 8, 8)
    assert not masks[:, 2:6, 2:6].any()  # the centre 4 x 4 is always missing
    starts = []
    for m in masks:
        missing_rows = [r for r in range(8) if not m[r].any()]  # full-width missing rows: the stripe
        runs = [r for r in missing_rows if r - 1 not in missing_rows]
        assert len(runs) == 1 and len(missing_rows) == 2, missing_rows
        starts.append(runs[0])
        outside = np.ones((8, 8), bool)
        outside[2:6, 2:6] = False
        outside[missing_rows] = False
        assert m[outside].all()  # nothing else is missing
    assert len(set(starts)) >= 4  # the stripe's row is random per mask
    # negative control: a box-only mask has no full-width missing row
    box_only = np.ones((8, 8), bool)
    box_only[2:6, 2:6] = False
    assert not [r for r in range(8) if not box_only[r].any()]


def test_rms_residual_is_sigma_y_at_the_truth(key):
    sigma_y = 0.05
    x_key, mask_key, noise_key = jax.random.split(key, 3)
    x = jax.random.uniform(x_key, (4000, 8, 8), minval=-1.0, maxval=1.0)
    op = Inpainting(flair_exp.box_stripe_masks(mask_key, 1, (8, 8))[0])
    y = jnp.where(op.mask, gaussian_noise(noise_key, x, sigma_y), 0.0)
    rms = lambda op, x, y: float(jnp.sqrt(jnp.mean(jnp.square(flair_exp.rms_residual(op, x, y)))))  # noqa: E731
    assert abs(rms(op, x, y) / sigma_y - 1.0) < 0.03  # E[RMS^2] = sigma_y^2 (E[RMS] is biased low for few pixels)
    # negative control: averaging over all 64 pixels (the zero-filled ones too) understates the residual
    naive = jnp.sqrt(jnp.mean(jnp.square(op.forward(x) - y)))
    assert abs(float(naive) / sigma_y - 1.0) > 0.1
    pool = AveragePool(4)
    y_sr = gaussian_noise(noise_key, pool.forward(x), sigma_y)
    assert abs(rms(pool, x, y_sr) / sigma_y - 1.0) < 0.03
    assert rms(pool, x + 0.1, y_sr) > 1.5 * sigma_y  # a wrong image is caught  # a wrong image is caught


def test_diversity_is_the_pixel_std_across_solutions():
    base = jnp.linspace(-1.0, 1.0, 64).reshape(1, 1, 8, 8)
    two = jnp.concatenate([base + 0.3, base - 0.3], axis=1)  # std 0.3 at every pixel
    np.testing.assert_allclose(float(flair_exp.diversity(two)), 0.3, rtol=1e-5)
    assert float(flair_exp.diversity(jnp.concatenate([base, base], axis=1))) == 0.0  # identical solutions: none


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
