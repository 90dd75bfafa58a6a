"""gvlab.defenses and gvlab.nn.spectral against exact answers: the power iteration against numpy's SVD (value and
gradient), the spectrally normalised encoder's Lipschitz bound, the L-level quantiser's levels and its
straight-through gradient, feature squeezing's levels, and the LSQ method's power-iteration state carried through
`fit` in `TrainState.extra`. Each oracle has a negative control."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import DataSource, Spec, TrainConfig, fit
from gvlab.defenses import lsq, make_classifier, quantise, quantise_straight_through, squeeze_bits
from gvlab.nn import spectral


def _matrix(key, n, m, gap):
    """W = U diag(s) V^T [n, m] with s_1 = 2, s_2 = 2 / gap (gap > 1 sets the convergence rate)."""
    u_key, v_key = jax.random.split(key)
    u, _ = np.linalg.qr(np.asarray(jax.random.normal(u_key, (n, n))))
    v, _ = np.linalg.qr(np.asarray(jax.random.normal(v_key, (m, m))))
    k = min(n, m)
    s = np.concatenate([[2.0], np.linspace(2.0 / gap, 0.1, k - 1)])
    return (u[:, :k] * s) @ v[:, :k].T


def test_power_iteration_converges_to_the_largest_singular_value(key):
    for n, m in ((12, 20), (20, 6)):
        w = _matrix(key, n, m, gap=1.5)
        top = np.linalg.svd(w, compute_uv=False)[0]
        u0 = jax.random.normal(jax.random.fold_in(key, n), (m,))
        sigma, u = spectral.power_iteration(jnp.asarray(w, jnp.float32), u0, num_iters=60)
        np.testing.assert_allclose(sigma, top, rtol=1e-5)
        # Iterating from the returned u continues the same sequence: 30 + 30 = 60 iterations.
        half, u_half = spectral.power_iteration(jnp.asarray(w, jnp.float32), u0, num_iters=30)
        again, _ = spectral.power_iteration(jnp.asarray(w, jnp.float32), u_half, num_iters=30)
        np.testing.assert_allclose(again, sigma, rtol=1e-6)
        # Negative control: one iteration from a random start is a strict underestimate, far from converged.
        one, _ = spectral.power_iteration(jnp.asarray(w, jnp.float32), u0, num_iters=1)
        assert one < top * (1 - 1e-3)
    with pytest.raises(ValueError, match="num_iters"):
        spectral.power_iteration(jnp.ones((3, 2)), jnp.ones(2), num_iters=0)


def test_sigma_gradient_is_the_outer_product_of_the_top_singular_vectors(key):
    # d sigma_1 / dW = u_1 v_1^T (W = U S V^T): the gradient Miyato et al.'s Eq. 12 rests on.
    w = _matrix(key, 10, 7, gap=2.0)
    left, _, right_t = np.linalg.svd(w)
    u0 = jax.random.normal(key, (7,))
    grad = jax.grad(lambda k: spectral.power_iteration(k, u0, 60)[0])(jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(grad, np.outer(left[:, 0], right_t[0]), atol=1e-5)
    # Negative control: the second singular pair's outer product is another matrix.
    assert not np.allclose(grad, np.outer(left[:, 1], right_t[1]), atol=1e-2)


def test_normalised_kernels_have_unit_spectral_norm_and_other_leaves_are_untouched(key):
    params = {"params": {"dense_0": {"kernel": 3.0 * jax.random.normal(key, (8, 5)), "bias": jnp.ones(5)},
                         "dense_1": {"kernel": jax.random.normal(jax.random.fold_in(key, 1), (5, 4)),
                                     "bias": jnp.zeros(4)}}}
    exact, none, sigmas = spectral.normalise(params)
    assert none is None
    vectors = spectral.init_vectors(key, params)
    assert jax.tree.map(jnp.shape, vectors) == {"params": {"dense_0": {"kernel": (5,)}, "dense_1": {"kernel": (4,)}}}
    iterated, new_vectors, _ = spectral.normalise(params, vectors, num_iters=100)
    for name in ("dense_0", "dense_1"):
        w = np.asarray(params["params"][name]["kernel"])
        np.testing.assert_allclose(sigmas["params"][name]["kernel"], np.linalg.svd(w, compute_uv=False)[0],
                                   rtol=1e-5)
        for normalised in (exact, iterated):
            np.testing.assert_allclose(np.linalg.svd(normalised["params"][name]["kernel"], compute_uv=False)[0],
                                       1.0, rtol=1e-4)
            np.testing.assert_array_equal(normalised["params"][name]["bias"], params["params"][name]["bias"])
    # Negative control: the raw first kernel is far from unit norm (so the check above can fail).
    assert np.linalg.svd(params["params"]["dense_0"]["kernel"], compute_uv=False)[0] > 2.0
    assert not np.allclose(new_vectors["params"]["dense_0"]["kernel"], vectors["params"]["dense_0"]["kernel"])


def test_spectrally_normalised_encoder_mean_is_k_lipschitz(key):
    cfg = lsq.Config(latent_dim=3, hidden=(16, 16), lipschitz=2.0)
    model = lsq.make_model(cfg, (6,))
    params = model.init(key, {"x": jnp.zeros((1, 6))})
    params = jax.tree.map(lambda p: 5.0 * p, params)  # large raw weights: the bound comes from the normalisation
    x = jax.random.normal(jax.random.fold_in(key, 1), (256, 6))
    x2 = x + 0.05 * jax.random.normal(jax.random.fold_in(key, 2), (256, 6))

    def ratios(c):
        m = lsq.make_model(c, (6,))

        @jax.jit
        def ratio(params):
            mu = lambda v: m.encode(params, None, v)[0].loc  # noqa: E731  (None: exact singular values)
            return jnp.linalg.norm(mu(x) - mu(x2), axis=1) / jnp.linalg.norm(x - x2, axis=1)

        return ratio(params)

    assert float(jnp.max(ratios(cfg))) <= cfg.lipschitz * (1 + 1e-4)
    # Negative control: without spectral normalisation the same weights break the bound.
    plain = lsq.Config(latent_dim=3, hidden=(16, 16), lipschitz=2.0, spectral_norm=False)
    assert float(jnp.max(ratios(plain))) > cfg.lipschitz


@pytest.mark.parametrize("levels", [2, 3, 5])
def test_quantiser_snaps_to_the_nearest_of_l_uniform_levels(key, levels):
    grid = np.linspace(-1.0, 1.0, levels)  # -1, -1 + Delta, ..., 1
    z = jax.random.uniform(key, (4000,), minval=-1.5, maxval=1.5)
    q = np.asarray(quantise(z, levels))
    distance = np.abs(q[:, None] - grid[None, :])
    assert np.all(distance.min(axis=1) < 1e-6), "every output is one of the L levels"
    # The nearest level of clip(z, -1, 1) (ties aside), and |Q(z) - z| <= Delta / 2 inside [-1, 1].
    nearest = grid[np.argmin(np.abs(np.clip(np.asarray(z), -1, 1)[:, None] - grid[None, :]), axis=1)]
    np.testing.assert_allclose(q, nearest, atol=1e-6)
    inside = np.abs(np.asarray(z)) <= 1
    assert np.all(np.abs(q - np.asarray(z))[inside] <= (1.0 / (levels - 1)) + 1e-6)
    assert set(np.round(q, 5)) == set(np.round(grid, 5))  # every level is reached
    np.testing.assert_array_equal(quantise(jnp.asarray(q), levels), q)  # idempotent
    # Negative control: another L gives other levels.
    assert not np.allclose(quantise(z, levels + 1), q)


def test_straight_through_is_q_forward_and_the_identity_backward(key):
    z = jax.random.uniform(key, (6, 4), minval=-1.0, maxval=1.0)
    c = jax.random.normal(jax.random.fold_in(key, 1), (6, 4))
    np.testing.assert_array_equal(quantise_straight_through(z, 5), quantise(z, 5))
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * quantise_straight_through(v, 5)))(z), c)
    # Negative control: the plain quantiser has zero gradient almost everywhere.
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * quantise(v, 5)))(z), jnp.zeros_like(z))
    # Traced levels (members of a fit) equal the Python values.
    vmapped = jax.vmap(lambda lv: quantise(z, lv))(jnp.array([3.0, 5.0]))
    np.testing.assert_array_equal(vmapped[0], quantise(z, 3))
    np.testing.assert_array_equal(vmapped[1], quantise(z, 5))
    with pytest.raises(ValueError, match="levels"):
        quantise(z, 1)


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_feature_squeezing_keeps_exactly_two_to_the_bits_levels(key, bits):
    top = 2**bits - 1
    x = jax.random.uniform(key, (5000,))
    s = np.asarray(squeeze_bits(x, bits))
    np.testing.assert_allclose(s * top, np.round(s * top), atol=1e-5)  # on the grid k / (2^b - 1)
    assert len(np.unique(np.round(s * top))) == top + 1
    np.testing.assert_allclose(s, np.round(np.asarray(x) * top) / top, atol=1e-6)
    exact = jnp.arange(top + 1, dtype=jnp.float32) / top
    np.testing.assert_allclose(squeeze_bits(exact, bits), exact, atol=1e-7)  # the levels are fixed points
    # Negative control: a finer bit depth keeps values the coarser one moves.
    assert not np.allclose(squeeze_bits(x, bits + 1), s)


def test_lsq_fit_carries_the_power_iteration_vectors_in_the_state_slot(key):
    cfg = lsq.Config(latent_dim=2, hidden=(16,), levels=3, beta=0.01)
    x = jax.random.uniform(key, (32, 4, 4))
    data = DataSource(arrays={"x": x}, batch=lambda arrays, key, step: arrays)
    spec = Spec(lsq.make(cfg, (4, 4)), optax.adam(1e-2), data, args={"levels": jnp.array([0.0, 3.0])})
    result = fit(spec, TrainConfig(steps=40, batch_size=32, log_every=20), progress=False)
    model = lsq.make_model(cfg, (4, 4))
    for r in range(2):
        params = result.params_of(r)
        vectors = jax.tree.map(lambda a: a[r], result.state.extra)["encoder"]
        kernel = params["encoder"]["params"]["dense_0"]["kernel"]
        sigma, _ = spectral.power_iteration(kernel, vectors["params"]["dense_0"]["kernel"], 1)
        # 40 steps of one iteration each have followed the moving kernel to its top singular value.
        np.testing.assert_allclose(sigma, np.linalg.svd(kernel, compute_uv=False)[0], rtol=1e-3)
        out = model.filter(params, {"encoder": vectors}, x, [0.0, 3.0][r])
        assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Negative control: the initial vectors (a fresh draw) are not converged.
    fresh = spectral.init_vectors(key, result.params_of(0)["encoder"])
    kernel = result.params_of(0)["encoder"]["params"]["dense_0"]["kernel"]
    start, _ = spectral.power_iteration(kernel, fresh["params"]["dense_0"]["kernel"], 1)
    assert start < np.linalg.svd(kernel, compute_uv=False)[0] * (1 - 1e-3)
    # The quantised member's filter output comes from at most 3^2 latent codes; the continuous one's does not.
    q, _ = model.encode(result.params_of(1), None, x)
    assert len({tuple(v) for v in np.round(np.asarray(quantise(q.loc, 3)), 4)}) <= 9
    assert float(result.history.last("lsq/quant_gap")[0]) == 0.0 < float(result.history.last("lsq/quant_gap")[1])


def test_classifier_and_bad_settings():
    method, predict = make_classifier((8,), 3)
    params = method.init(jax.random.key(0), {"x": jnp.zeros((1, 2, 2)), "y": jnp.zeros(1, jnp.int32)})
    assert predict(params, jnp.zeros((5, 2, 2))).shape == (5, 3)
    with pytest.raises(ValueError, match="num_classes"):
        make_classifier((8,), 1)
    with pytest.raises(ValueError, match="levels"):
        lsq.Config(levels=1)
