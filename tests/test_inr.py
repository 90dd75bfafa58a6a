"""gvlab.inr: bilinear grid lookup against map_coordinates, the exact shape renderer, INR autoencoder gradients, the
latent-diffusion mixed prediction and the Frechet distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.ndimage import map_coordinates

from gvlab.diffusion.schedules import Schedule
from gvlab.inr import grids, latent, models, shapes
from gvlab.nn import TimeMLP


def test_bilinear_reproduces_grid_points_and_matches_map_coordinates(key):
    grid = jax.random.normal(key, (5, 7, 3))
    centres = grids.pixel_grid(7)[:5]  # a 5 x 7 grid's centres: x from the 7-wide axis, y from the 5-high axis
    centres = centres.at[..., 1].set(jnp.broadcast_to(((2 * jnp.arange(5) + 1) / 5 - 1)[:, None], (5, 7)))
    np.testing.assert_allclose(grids.bilinear(grid, centres), grid, atol=1e-5)  # oracle: the grid at its points
    coords = jax.random.uniform(jax.random.fold_in(key, 1), (64, 2), minval=-1.3, maxval=1.3)  # some outside: border
    u, v = ((coords[:, 0] + 1) * 7 - 1) / 2, ((coords[:, 1] + 1) * 5 - 1) / 2
    expected = jnp.stack([map_coordinates(grid[..., c], [v, u], order=1, mode="nearest") for c in range(3)], -1)
    np.testing.assert_allclose(grids.bilinear(grid, coords), expected, atol=1e-5)
    # linear between grid points: the midpoint of two horizontal neighbours is their mean
    mid = (centres[2, 3] + centres[2, 4]) / 2
    np.testing.assert_allclose(grids.bilinear(grid, mid), (grid[2, 3] + grid[2, 4]) / 2, atol=1e-6)
    # the product-grid form equals the pointwise lookup on the meshgrid (here a 3x render of the grid's window)
    xs, ys = jnp.linspace(-1.2, 1.2, 9), jnp.linspace(-0.9, 1.1, 6)
    mesh = jnp.stack(jnp.meshgrid(xs, ys), axis=-1)
    np.testing.assert_allclose(grids.bilinear_product(grid, xs, ys), grids.bilinear(grid, mesh), atol=1e-5)
    # negative control: swapping x and y (a transposed lookup) does not reproduce the grid
    square = jax.random.normal(key, (4, 4, 1))
    swapped = grids.bilinear(square, grids.pixel_grid(4)[..., ::-1])
    assert float(jnp.max(jnp.abs(swapped - square))) > 0.1
    # composes with jit, vmap and grad (in the coordinates)
    batched = jax.jit(jax.vmap(grids.bilinear, in_axes=(None, 0)))(grid, coords[:4])
    np.testing.assert_allclose(batched, grids.bilinear(grid, coords[:4]), atol=1e-6)
    g = jax.grad(lambda c: grids.bilinear(grid, c).sum())(jnp.array([0.1, -0.2]))
    assert g.shape == (2,) and bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError):
        grids.bilinear(grid[..., 0], coords)


def test_fourier_features():
    c = jnp.array([[0.5, -0.25]])
    f = grids.fourier_features(c, 2)
    assert f.shape == (1, 2 * 5)
    np.testing.assert_allclose(f[0, 2:4], jnp.sin(jnp.pi * jnp.array([0.5, 1.0])), atol=1e-6)  # sin(2^k pi x), x


def test_renderer_closed_form_and_resolutions(key):
    params = shapes.sample(key, 3)
    x16, x48, x64 = (shapes.render_images(params, r) for r in (16, 48, 64))
    assert x16.shape == (3, 16, 16) and float(x16.min()) >= 0.0 and float(x16.max()) <= 1.0
    # where pixel centres coincide (3x: centre i of 16 is centre 3i + 1 of 48) the renders agree exactly
    np.testing.assert_allclose(x48[:, 1::3, 1::3], x16, atol=1e-6)
    # negative control: at 4x no centres coincide, and the nearest 64-pixels differ where the image varies
    assert float(jnp.max(jnp.abs(x64[:, 1::4, 1::4] - x16))) > 1e-3
    # one grey-1 circle of radius 0.4 on a flat 0.5 background: 1 at the centre, 0.75 on the edge, 0.5 far away
    circle = {"centre": jnp.zeros((3, 2)), "axes": jnp.full((3, 2), 0.4), "angle": jnp.zeros(3),
              "grey": jnp.ones(3), "active": jnp.array([1.0, 0.0, 0.0]), "gradient": jnp.zeros(2)}
    values = shapes.render(circle, jnp.array([[0.0, 0.0], [0.4, 0.0], [0.0, 0.95]]))
    np.testing.assert_allclose(values, [1.0, 0.75, 0.5], atol=2e-3)


def test_autoencoders_gradients_reach_every_parameter(key):
    encoder = models.GridEncoder((2, 2), 2)
    fields = {"ddmi": models.GridField(models.HierarchicalGrids(3, 2, 4), models.ScaleModulatedMLP(4)),
              "baseline": models.FourierField(4, 2, 2)}
    params_shapes = shapes.sample(key, 2)
    batch = {"x": shapes.render_images(params_shapes, 8), "shape": params_shapes}
    for name, field in fields.items():
        model = models.INRAutoencoder(encoder, field)
        method = models.make_d2c_vae(model, crop_probability=0.5, target=shapes.render)
        params = method.init(key, batch)
        grads = jax.grad(lambda p: method.loss(p, batch, key, 0, args={"hierarchy": 1.0})[0])(params)
        dead = [jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
                if not float(jnp.max(jnp.abs(g))) > 0]
        assert not dead, f"{name}: no gradient reaches {dead}"
        z = models.encode_mean(model, params, batch["x"])
        assert models.render_latents(model, params, z, 32).shape == (2, 32, 32)  # any resolution
    with pytest.raises(ValueError):
        models.make_d2c_vae(model, crop_probability=0.5)  # crops need the exact renderer


def test_mixed_prediction_starts_at_the_standard_normal_eps(key):
    """sigmoid(-6) ~ 0.0025: at init eps_hat ~ sigma_t x_t, the exact eps of N(0, I) latents (LSGM)."""
    schedule = Schedule("vp_linear")
    method, module = latent.make_latent_diffusion(TimeMLP(out_features=3, hidden=(4,)), schedule)
    x = jax.random.normal(key, (5, 3))
    params = method.init(key, {"x": x})
    t = jnp.full((5,), 0.5)
    eps = module.apply(params, x, t)
    np.testing.assert_allclose(eps, schedule.sigma(t)[:, None] * x, atol=0.02 * float(jnp.abs(eps).max()) + 1e-3)


def test_frechet_distance_oracle_and_control(key):
    a = jax.random.normal(key, (200, 3))
    assert abs(float(latent.frechet_distance(a, a))) < 1e-3  # identical sets
    shift = jnp.array([[1.0, 2.0, 0.0]])
    np.testing.assert_allclose(latent.frechet_distance(a + shift, a), 5.0, rtol=1e-3)  # equal covariances: |dmu|^2
    assert float(latent.frechet_distance(2.0 * a, a)) > 0.5  # negative control: a different spread
    pca = latent.pca_features(a, 2)
    assert latent.project(pca, a).shape == (200, 2)
