"""gvlab.inr: bilinear grid lookup against map_coordinates, the exact shape renderer, renders that agree across
resolutions, INR autoencoder gradients, the latent-diffusion mixed prediction and the Frechet distance. Tiny sizes,
each check one compiled program where it can (the file runs in a few seconds on 2 cores)."""

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
    grid = np.asarray(jax.random.normal(key, (5, 7, 3)))
    coords = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (64, 2), minval=-1.3, maxval=1.3))  # border
    xs, ys = np.linspace(-1.2, 1.2, 9, dtype=np.float32), np.linspace(-0.9, 1.1, 6, dtype=np.float32)
    centres = np.stack(np.meshgrid((2 * np.arange(7) + 1) / 7 - 1, (2 * np.arange(5) + 1) / 5 - 1), -1)

    @jax.jit
    def checks(grid, coords):
        u, v = ((coords[:, 0] + 1) * 7 - 1) / 2, ((coords[:, 1] + 1) * 5 - 1) / 2
        expected = jnp.stack([map_coordinates(grid[..., c], [v, u], order=1, mode="nearest") for c in range(3)], -1)
        mesh = jnp.stack(jnp.meshgrid(xs, ys), axis=-1)
        batched = (jnp.stack([grid, 2 * grid]), (jnp.stack([xs, xs]), jnp.stack([ys, ys])))
        return {"at_centres": grids.bilinear(grid, centres.astype(np.float32)),
                "points": grids.bilinear(grid, coords), "map_coordinates": expected,
                "product": grids.bilinear_product(grid, xs, ys), "mesh": grids.bilinear(grid, mesh),
                "lookup_product": grids.lookup(*batched), "lookup_points": grids.lookup(batched[0], grids.points(batched[1])),
                "swapped": grids.bilinear(grid[:4, :4], grids.pixel_grid(4)[..., ::-1]),
                "grad": jax.grad(lambda c: grids.bilinear(grid, c).sum())(jnp.array([0.1, -0.2])),
                "midpoint": grids.bilinear(grid, (centres[2, 3] + centres[2, 4]).astype(np.float32) / 2)}

    out = checks(grid, coords)
    np.testing.assert_allclose(out["at_centres"], grid, atol=1e-5)  # oracle: the grid at its points
    np.testing.assert_allclose(out["points"], out["map_coordinates"], atol=1e-5)  # oracle: scipy-style order 1
    np.testing.assert_allclose(out["product"], out["mesh"], atol=1e-5)  # the gather-free form, same function
    np.testing.assert_allclose(out["lookup_product"], out["lookup_points"], atol=1e-5)
    np.testing.assert_allclose(out["lookup_product"][1], 2 * out["mesh"].reshape(-1, 3), atol=1e-5)  # per-grid
    # linear between grid points: the midpoint of two horizontal neighbours is their mean
    np.testing.assert_allclose(out["midpoint"], (grid[2, 3] + grid[2, 4]) / 2, atol=1e-5)
    # negative control: swapping x and y (a transposed lookup) does not reproduce the grid
    assert float(np.max(np.abs(out["swapped"] - grid[:4, :4]))) > 0.1
    assert out["grad"].shape == (2,) and bool(np.all(np.isfinite(out["grad"])))
    with pytest.raises(ValueError):
        grids.bilinear(grid[..., 0], coords)


def test_fourier_features_and_resize():
    f = grids.fourier_features(jnp.array([[0.5, -0.25]]), 2)
    assert f.shape == (1, 2 * 5)
    np.testing.assert_allclose(f[0, 2:4], np.sin(np.pi * np.array([0.5, 1.0])), atol=1e-6)  # sin(2^k pi x), x
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4) ** 2
    up = np.asarray(grids.resize(image, 12))
    np.testing.assert_allclose(up[:, 1::3, 1::3], image, rtol=1e-5)  # odd factor: exact at coinciding centres
    assert float(np.max(np.abs(up[:, ::3, ::3] - image))) > 0.5  # negative control: off-centre pixels differ


def test_renderer_closed_form_and_resolutions(key):
    params = shapes.sample(key, 3)
    renders = jax.jit(lambda p: [jax.vmap(shapes.render, (0, None))(p, grids.pixel_grid(r)) for r in (16, 48, 64)])
    x16, x48, x64 = (np.asarray(x) for x in renders(params))
    np.testing.assert_array_equal(x16, shapes.render_images(params, 16))
    assert x16.shape == (3, 16, 16) and float(x16.min()) >= 0.0 and float(x16.max()) <= 1.0
    # where pixel centres coincide (3x: centre i of 16 is centre 3i + 1 of 48) the renders agree exactly
    np.testing.assert_allclose(x48[:, 1::3, 1::3], x16, atol=1e-6)
    # negative control: at 4x no centres coincide, and the nearest 64-pixels differ where the image varies
    assert float(np.max(np.abs(x64[:, 1::4, 1::4] - x16))) > 1e-3
    # one grey-1 circle of radius 0.4 on a flat 0.5 background: 1 at the centre, 0.75 on the edge, 0.5 far away
    circle = {"centre": jnp.zeros((3, 2)), "axes": jnp.full((3, 2), 0.4), "angle": jnp.zeros(3),
              "grey": jnp.ones(3), "active": jnp.array([1.0, 0.0, 0.0]), "gradient": jnp.zeros(2)}
    values = jax.jit(shapes.render)(circle, jnp.array([[0.0, 0.0], [0.4, 0.0], [0.0, 0.95]]))
    np.testing.assert_allclose(values, [1.0, 0.75, 0.5], atol=2e-3)


@pytest.mark.parametrize("field", ["ddmi", "baseline"])
def test_autoencoder_gradients_reach_every_parameter_and_renders_agree_across_resolutions(key, field):
    encoder = models.GridEncoder((2, 2), 2)
    fields = {"ddmi": models.GridField(models.HierarchicalGrids(2, 2, 2), models.ScaleModulatedMLP(4)),
              "baseline": models.FourierField(4, 2, 2)}
    model = models.INRAutoencoder(encoder, fields[field])
    params_shapes = shapes.sample(key, 2)
    batch = {"x": shapes.render_images(params_shapes, 8), "shape": params_shapes}
    method = models.make_d2c_vae(model, crop_probability=0.5, target=shapes.render)

    @jax.jit  # init, gradient and renders in one program
    def checks(key):
        params = method.init(key, batch)
        grads = jax.grad(lambda p: method.loss(p, batch, key, 0, args={"hierarchy": 1.0})[0])(params)
        z = models.encode_mean(model, params, batch["x"])
        renders = [models.render_latents(model, params, z, r, 0.5) for r in (8, 24)]
        return grads, renders

    grads, (x8, x24) = checks(key)
    dead = [jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
            if not float(jnp.max(jnp.abs(g))) > 0]
    assert not dead, f"{field}: no gradient reaches {dead}"
    assert x8.shape == (2, 8, 8) and x24.shape == (2, 24, 24)  # any resolution
    # the field is one continuous function: at coinciding pixel centres (3x) the renders agree to rounding ...
    same = float(jnp.max(jnp.abs(x24[:, 1::3, 1::3] - x8)))
    other = float(jnp.max(jnp.abs(x24[:, ::3, ::3] - x8)))  # ... and 1/3 pixel away they differ (control; the
    assert same <= 1e-6 * float(jnp.max(jnp.abs(x8))) and other > 10 * same + 1e-7  # untrained field is smooth)
    with pytest.raises(ValueError):
        models.make_d2c_vae(model, crop_probability=0.5)  # crops need the exact renderer


def test_mixed_prediction_starts_at_the_standard_normal_eps(key):
    """sigmoid(-6) ~ 0.0025: at init eps_hat ~ sigma_t x_t, the exact eps of N(0, I) latents (LSGM)."""
    schedule = Schedule("vp_linear")
    method, module = latent.make_latent_diffusion(TimeMLP(out_features=3, hidden=(4,)), schedule)
    x = jax.random.normal(key, (5, 3))
    t = jnp.full((5,), 0.5)
    eps, plain = jax.jit(lambda k: (module.apply(method.init(k, {"x": x}), x, t), schedule.sigma(t)[:, None] * x))(key)
    np.testing.assert_allclose(eps, plain, atol=0.02 * float(jnp.abs(eps).max()) + 1e-3)
    assert float(jnp.max(jnp.abs(eps - x))) > 0.05  # control: not the identity


def test_frechet_distance_oracle_and_control(key):
    a = jax.random.normal(key, (200, 3))
    assert abs(float(latent.frechet_distance(a, a))) < 1e-3  # identical sets
    shift = jnp.array([[1.0, 2.0, 0.0]])
    np.testing.assert_allclose(latent.frechet_distance(a + shift, a), 5.0, rtol=1e-3)  # equal covariances: |dmu|^2
    assert float(latent.frechet_distance(2.0 * a, a)) > 0.5  # negative control: a different spread
    pca = latent.pca_features(a, 2)
    assert latent.project(pca, a).shape == (200, 2)
    np.testing.assert_allclose(latent.pca_frechet_distance(pca, a + shift, a),
                               latent.frechet_distance(latent.project(pca, a + shift), latent.project(pca, a)),
                               rtol=1e-4)
