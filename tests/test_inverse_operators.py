"""Oracles of gvlab.inverse: adjoints by the dot-product test, autodiff and explicit matrices; the Gaussian posterior
by scalar formulas, Gaussian conditioning and Monte Carlo regression; Wiener filtering by exact inversion, by numpy's
FFT and as the posterior mean of a stationary Gaussian prior; PSNR by its definition, the RMS residual at sigma_y;
noisy measurements and the digit experiments' masks; per-measurement matrix operators (`gvlab.inverse.matrix`) by
the library operators they are built from, the dot-product test and an unchanged posterior under zero padding.

Images are 6 x 8 (not square, so a swapped H / W fails). Each test calls a few module-level jitted functions (the
same shapes reuse one program) and checks the results in float64 numpy, which keeps the file to a handful of
compilations. Every property has a negative control.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab import inverse
from gvlab.inverse import matrix, operators

pytestmark = pytest.mark.usefixtures("strict_dtypes")  # no silent float -> complex or float32 -> float64 promotion

SHAPE = (6, 8)
# Asymmetric (kernel != flipped kernel != kernel.T) with a dominant centre: |K| >= 1 - 0.65 > 0, no spectral zeros.
KERNEL = np.array([[0.0, 0.3, 0.1], [0.05, 1.0, 0.0], [0.0, 0.2, 0.0]], np.float32)
# A 2-tap box: K = 0.5 (1 + e^{-i w}) vanishes at the horizontal Nyquist frequency (W = 8 is even).
BOX_2TAP = np.array([[0.5, 0.5]], np.float32)
DELTA = np.zeros(SHAPE, np.float32)
DELTA[0, 0] = 1.0  # the identity PSF


NAMES = ["identity", "random_inpainting", "box_inpainting", "super_resolution", "convolution", "convolution_with_zeros"]


@functools.cache  # built on first use, not at collection
def _operators():
    return {
        "identity": inverse.Identity(),
        "random_inpainting": inverse.make_random_inpainting(jax.random.key(0), SHAPE, 0.5),
        "box_inpainting": inverse.make_box_inpainting(SHAPE, top=1, left=2, height=3, width=4),
        "super_resolution": inverse.AveragePool(2),
        "convolution": inverse.make_convolution(KERNEL, SHAPE),
        "convolution_with_zeros": inverse.make_convolution(BOX_2TAP, SHAPE),
    }


@jax.jit
def _apply(op, x, y):
    """Everything an operator computes, in one program per operator type (operators are pytree arguments)."""
    _, vjp = jax.vjp(op.forward, x)
    return {"forward": op.forward(x), "adjoint": op.adjoint(y), "vjp": vjp(y)[0], "gram": op.gram(x),
            "pinv": op.pinv(y), "dense": operators.dense_matrix(op, SHAPE)}


def _data(seed, op):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, *SHAPE)).astype(np.float32)  # a batch: operators act on the last two axes
    y = rng.normal(size=jax.eval_shape(op.forward, x).shape).astype(np.float32)
    return x, y


def _f64(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def _dot_test_gap(ax, y, x, aty):
    """|<A x, y> - <x, A^T y>| relative to the size of the terms."""
    lhs, rhs = np.sum(np.asarray(ax, np.float64) * y), np.sum(x * np.asarray(aty, np.float64))
    return abs(lhs - rhs) / (abs(lhs) + abs(rhs))


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_passes_the_dot_product_test_and_matches_autodiff(name):
    op = _operators()[name]
    x, y = _data(0, op)
    out = _f64(_apply(op, x, y))
    assert _dot_test_gap(out["forward"], y, x, out["adjoint"]) < 1e-6
    # The adjoint is the VJP of the forward map (A is linear), and gram is A^T A.
    np.testing.assert_allclose(out["adjoint"], out["vjp"], atol=1e-5)
    np.testing.assert_allclose(out["gram"], _f64(_apply(op, x, out["forward"].astype(np.float32)))["adjoint"],
                               atol=1e-5)


def test_wrong_adjoints_fail_the_dot_product_test():
    # Negative controls: the dot-product test above can fail.
    ops = _operators()
    conv = ops["convolution"]
    x, y = _data(1, conv)
    forward = _f64(_apply(conv, x, y))["forward"]
    convolved_y = _apply(conv, y, x)["forward"]  # convolution instead of correlation
    assert _dot_test_gap(forward, y, x, convolved_y) > 1e-2
    transposed_y = _apply(inverse.make_convolution(KERNEL.T, SHAPE), y, x)["forward"]  # matrix-transposed kernel
    assert _dot_test_gap(forward, y, x, transposed_y) > 1e-2
    # ... while the convolution by the flipped kernel, psf[-n], is the adjoint (correlation = conj in Fourier).
    flipped_y = _apply(inverse.make_convolution(KERNEL[::-1, ::-1].copy(), SHAPE), y, x)["forward"]
    np.testing.assert_allclose(flipped_y, _apply(conv, x, y)["adjoint"], atol=1e-5)
    pool = ops["super_resolution"]
    x, y = _data(1, pool)
    out = _f64(_apply(pool, x, y))
    assert _dot_test_gap(out["forward"], y, x, out["pinv"]) > 0.5  # nearest upsampling without the 1 / f^2


@pytest.mark.parametrize("name", NAMES)
def test_dense_matrix_reproduces_the_operator_and_its_pseudo_inverse(name):
    op = _operators()[name]
    x, y = _data(2, op)
    out = _f64(_apply(op, x, y))
    a = out["dense"]
    np.testing.assert_allclose(x.reshape(3, -1) @ a.T, out["forward"].reshape(3, -1), atol=1e-5)
    np.testing.assert_allclose(y.reshape(3, -1) @ a, out["adjoint"].reshape(3, -1), atol=1e-5)
    # The Moore-Penrose inverse (numpy's rcond = the relative cut-off of Convolution.pinv's default).
    np.testing.assert_allclose(y.reshape(3, -1) @ np.linalg.pinv(a, rcond=1e-4).T, out["pinv"].reshape(3, -1),
                               atol=1e-4)


def test_dense_matrices_are_not_trivially_symmetric():
    # Negative control for the test above: A^T and A^+ differ from A where they should, so matching them is no
    # tautology (the convolution's matrix is not symmetric; pooling's is not square; its A^+ is not A^T).
    ops = _operators()
    conv = _f64(_apply(ops["convolution"], *_data(3, ops["convolution"])))["dense"]
    assert np.max(np.abs(conv - conv.T)) > 0.1
    pool = _f64(_apply(ops["super_resolution"], *_data(3, ops["super_resolution"])))["dense"]
    assert pool.shape == (12, 48)
    np.testing.assert_allclose(pool @ pool.T, np.eye(12) / 4, atol=1e-6)
    # The spectral zero makes the 2-tap blur singular, which the pseudo-inverse must truncate.
    zeros = _f64(_apply(ops["convolution_with_zeros"], *_data(3, ops["convolution_with_zeros"])))["dense"]
    assert np.linalg.matrix_rank(zeros) < 48


def test_inpainting_masks():
    mask = np.asarray(inverse.make_random_inpainting(jax.random.key(0), SHAPE, 0.3).mask)
    assert mask.shape == SHAPE and mask.sum() == round(0.3 * 48)  # exactly that many kept pixels
    other = np.asarray(inverse.make_random_inpainting(jax.random.key(1), SHAPE, 0.3).mask)
    assert np.any(mask != other)  # another key, another mask
    box = np.asarray(inverse.make_box_inpainting(SHAPE, top=1, left=2, height=3, width=4).mask)
    assert (~box).sum() == 12 and not box[1:4, 2:6].any() and box[0].all()


@jax.jit
def _stacked_forward_and_psf_grad(psfs, x, y):
    stacked = jax.vmap(lambda op, v: op.forward(v))(inverse.Convolution(psfs), x)
    grad = jax.grad(lambda op: jnp.sum(op.forward(x[0]) * y[0]))(inverse.Convolution(psfs[0]))
    return stacked, grad.psf


def test_operators_vmap_over_psfs_and_differentiate_wrt_them():
    ops = _operators()
    psfs = np.stack([np.asarray(ops["convolution"].psf), np.asarray(ops["convolution_with_zeros"].psf)])
    x, y = _data(4, ops["convolution"])
    stacked, grad_psf = _stacked_forward_and_psf_grad(psfs, x[:2], y[:2])
    # vmap over a stack of PSFs (the pytree's data leaf) equals a loop.
    for i, name in enumerate(["convolution", "convolution_with_zeros"]):
        np.testing.assert_allclose(stacked[i], _apply(ops[name], x, y)["forward"][i], atol=1e-6)
    # d<h (*) x, y>/dh is the correlation of y with x: the adjoint of the convolution *by x*.
    by_x = inverse.Convolution(jnp.asarray(x[0]))
    np.testing.assert_allclose(grad_psf, _apply(by_x, y, y)["adjoint"][0], atol=1e-5)
    assert not np.allclose(grad_psf, _apply(by_x, y, y)["forward"][0], atol=1e-2)  # negative control



LAYOUT = r"expects images of layout \[\.\.\., H, W\] \(channels first, e.g. \[B, C, H, W\]\) with \(H, W\) = \(6, 8\)"


@pytest.mark.parametrize("name", ["random_inpainting", "convolution", "super_resolution"])
def test_operators_reject_a_channels_last_image(name):
    """An operator that knows its image size raises on `[..., H, W, C]`, also under jit, vmap and grad (the check
    reads static shapes); the same data channels-first still works (negative control). Shapes only: no compile."""
    op = _operators()[name]
    if name == "super_resolution":
        # Without the image size the pooling is silently done over (W, C): the reason for `image_shape`.
        assert jax.eval_shape(op.forward, jnp.zeros((3, *SHAPE, 4))).shape == (3, 6, 4, 2)
        op = inverse.AveragePool(2, image_shape=SHAPE)
    last, first = jnp.zeros((3, *SHAPE, 4)), jnp.zeros((3, 4, *SHAPE))
    y_shape = (3, 4, 3, 4) if name == "super_resolution" else first.shape
    for apply, out_shape in [(op.forward, y_shape), (op.gram, first.shape), (jax.jit(op.forward), y_shape),
                             (jax.vmap(op.forward), y_shape),  # vmap's body sees one image [6, 8, 4]
                             (jax.grad(lambda v: jnp.sum(op.forward(v))), first.shape)]:
        with pytest.raises(ValueError, match=LAYOUT + r", got shape \((3, )?6, 8, 4\)"):
            jax.eval_shape(apply, last)
        assert jax.eval_shape(apply, first).shape == out_shape
    y_first = jnp.zeros(jax.eval_shape(op.forward, first).shape)  # [3, 4, h, w]
    y_last = jnp.moveaxis(y_first, 1, -1)  # [3, h, w, 4]
    if name != "super_resolution":  # (h, w) = (H, W): the adjoint checks the same layout
        with pytest.raises(ValueError, match=LAYOUT):
            jax.eval_shape(op.adjoint, y_last)
    else:
        with pytest.raises(ValueError, match=r"AveragePool expects measurements of layout \[\.\.\., H, W\].*"
                                             r"\(H, W\) = \(3, 4\), got shape \(3, 3, 4, 4\)"):
            jax.eval_shape(op.pinv, y_last)
        with pytest.raises(ValueError, match="multiples of the pooling factor 2"):
            inverse.AveragePool(2, image_shape=(5, 8))
    for back in (op.adjoint, op.pinv):
        assert jax.eval_shape(back, y_first).shape == first.shape
    # The layout check changes no numbers: one channel of a channels-first batch is the single-channel result.
    x = jnp.asarray(_data(5, op)[0])  # [3, H, W]
    stacked = jnp.stack([x, 2 * x], axis=1)  # [3, 2, H, W]
    np.testing.assert_allclose(op.forward(stacked)[:, 1], 2 * op.forward(x), rtol=1e-6, atol=1e-6)

def test_gaussian_noise_has_the_requested_scale(key):
    y = np.ones((100, *SHAPE), np.float32)
    noisy = np.asarray(jax.jit(inverse.gaussian_noise)(key, y, 0.3))
    assert noisy.shape == y.shape and noisy.dtype == np.float32
    assert abs(np.mean(noisy) - 1.0) < 0.01 and abs(np.std(noisy) - 0.3) < 0.01


# ------------------------------------------------------------------------------------------------------------
# The exact Gaussian-prior posterior

_posterior = jax.jit(inverse.gaussian_posterior)


def _random_prior(seed, d):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(d, d))
    cov = root @ root.T / d + 0.1 * np.eye(d)
    return rng.normal(size=d), cov


def _posterior64(mu, cov, a, y, noise):
    return _f64(_posterior(*(np.asarray(v, np.float32) for v in (mu, cov, a, y)), noise))


def test_gaussian_posterior_diagonal_closed_form():
    # Sigma = diag(s^2), A = I: independent scalar problems, mean = (s^2 y + sigma^2 mu) / (s^2 + sigma^2).
    rng = np.random.default_rng(5)
    mu, s2, y, noise = rng.normal(size=16), rng.uniform(0.5, 2.0, size=16), rng.normal(size=16), 0.7
    post = _posterior64(mu, np.diag(s2), np.eye(16), y, noise)
    np.testing.assert_allclose(post.mean, (s2 * y + noise**2 * mu) / (s2 + noise**2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post.cov, np.diag(s2 * noise**2 / (s2 + noise**2)), atol=1e-6)
    np.testing.assert_allclose(post.gain, np.diag(s2 / (s2 + noise**2)), atol=1e-6)


def test_gaussian_posterior_limits():
    mu, cov = _random_prior(1, 16)
    y = np.random.default_rng(6).normal(size=16) * 2.0
    # sigma_y -> inf: the measurement is ignored and the posterior is the prior.
    vague = _posterior64(mu, cov, np.eye(16), y, 1e4)
    np.testing.assert_allclose(vague.mean, mu, atol=1e-5)
    np.testing.assert_allclose(vague.cov, cov, atol=1e-5)
    # A = I, sigma_y -> 0: the least-squares solution x = y, with no uncertainty left.
    exact = _posterior64(mu, cov, np.eye(16), y, 1e-3)
    np.testing.assert_allclose(exact.mean, y, atol=1e-3)
    assert np.max(np.abs(exact.cov)) < 1e-5
    # Negative control: at a finite noise level the mean is shrunk towards the prior, away from y and from mu.
    noisy = _posterior64(mu, cov, np.eye(16), y, 1.0)
    assert np.max(np.abs(noisy.mean - y)) > 0.3 and np.max(np.abs(noisy.mean - mu)) > 0.3


def test_noiseless_inpainting_posterior_is_gaussian_conditioning():
    # sigma_y -> 0 with A = diag(m): the kept pixels are y's; the missing ones are E[x_u | x_k = y_k]
    # = mu_u + Sigma_uk Sigma_kk^-1 (y_k - mu_k), the textbook conditional of a Gaussian.
    mu, cov = _random_prior(2, 16)
    k = np.random.default_rng(7).permutation(16) < 8
    a = np.diag(k.astype(np.float64))
    y = a @ np.random.default_rng(8).normal(size=16)
    mean = _posterior64(mu, cov, a, y, 1e-3).mean
    expected = mu[~k] + cov[np.ix_(~k, k)] @ np.linalg.solve(cov[np.ix_(k, k)], y[k] - mu[k])
    np.testing.assert_allclose(mean[k], y[k], atol=1e-4)
    np.testing.assert_allclose(mean[~k], expected, atol=1e-3)
    # Negative control: the prior mean (no conditioning) is far from it.
    assert np.max(np.abs(mu[~k] - expected)) > 0.1


def _covariance_standard_error(cov, n):
    """Standard errors of a sample covariance's entries from n Gaussian samples: sqrt((c_ii c_jj + c_ij^2) / n)."""
    return np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)


def test_gaussian_posterior_matches_monte_carlo(key):
    # Joint samples (x, y): the least-squares regression of x on y is E[x | y] = mu + K (y - A mu) exactly (jointly
    # Gaussian), and its residual covariance is the posterior covariance, so both are estimated without the formula.
    # Tolerances are 5 standard errors of the estimates (ordinary least-squares formulas).
    mu, cov = _random_prior(4, 48)
    a = _f64(_apply(inverse.AveragePool(2), *_data(0, inverse.AveragePool(2))))["dense"]  # [12, 48]: 6x8 -> 3x4
    noise, n = 0.5, 50_000
    rng = np.random.default_rng(9)
    x = rng.multivariate_normal(mu, cov, size=n)
    y = x @ a.T + noise * rng.normal(size=(n, 12))
    design = np.concatenate([np.ones((n, 1)), y], axis=1)
    inv_gram = np.linalg.inv(design.T @ design)  # 13 x 13 and well conditioned: the normal equations are fine
    coef = inv_gram @ (design.T @ x)
    residual = x - design @ coef
    residual_var = np.mean(residual**2, axis=0)  # [48]
    post = _posterior64(mu, cov, a, y[:3], noise)
    gain_se = np.sqrt(np.outer(residual_var, np.diag(inv_gram)[1:]))  # [48, 12]
    assert np.all(np.abs(coef[1:].T - post.gain) < 5 * gain_se)
    mean_se = np.sqrt(np.einsum("bi,ij,bj->b", design[:3], inv_gram, design[:3])[:, None] * residual_var[None])
    assert np.all(np.abs(design[:3] @ coef - post.mean) < 5 * mean_se)
    assert np.all(np.abs(residual.T @ residual / n - post.cov) < 5 * _covariance_standard_error(post.cov, n))
    # Negative control: the gain for another noise level is far outside that tolerance.
    assert np.max(np.abs(coef[1:].T - _posterior64(mu, cov, a, y[:3], 2 * noise).gain) / gain_se) > 20
    # The sampler draws from the posterior: its moments match (and differ from the prior's).
    sample = jax.jit(inverse.sample_posterior, static_argnums=2)
    one = _posterior(*(np.asarray(v, np.float32) for v in (mu, cov, a, y[:3])), noise)
    samples = np.asarray(sample(key, one._replace(mean=one.mean[1]), (n,)), np.float64)  # [n, 48]: y[1]'s posterior
    assert np.all(np.abs(samples.mean(0) - post.mean[1]) < 5 * np.sqrt(np.diag(post.cov) / n))
    sample_cov = np.cov(samples, rowvar=False)
    cov_se = _covariance_standard_error(post.cov, n)
    assert np.all(np.abs(sample_cov - post.cov) < 5 * cov_se)
    assert np.max(np.abs(sample_cov - cov) / cov_se) > 20


# ------------------------------------------------------------------------------------------------------------
# Wiener deconvolution

_wiener = jax.jit(inverse.wiener_deconvolve)


def _rmse(a, b):
    return np.sqrt(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64)), axis=(-2, -1)))


def test_noiseless_wiener_inverts_a_psf_without_spectral_zeros():
    ops = _operators()
    x = np.random.default_rng(10).uniform(size=(3, *SHAPE)).astype(np.float32)
    conv, box = ops["convolution"], ops["convolution_with_zeros"]
    recovered = _wiener(_apply(conv, x, x)["forward"], conv.psf, 1e-8)
    assert np.max(np.abs(np.asarray(recovered) - x)) < 1e-4
    # Negative controls: a PSF with a spectral zero loses that frequency for good ...
    lost = _wiener(_apply(box, x, x)["forward"], box.psf, 1e-8)
    assert np.min(_rmse(lost, x)) > 0.03
    # ... and a large regulariser blurs (shrinks every frequency by |K|^2 / (|K|^2 + lambda)).
    blurred = _wiener(_apply(conv, x, x)["forward"], conv.psf, 1.0)
    assert np.min(_rmse(blurred, x)) > 0.05


def test_wiener_with_the_exact_psf_beats_a_miscalibrated_one():
    rng = np.random.default_rng(11)
    x = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
    psf = np.square(rng.uniform(size=SHAPE)) + 2.0 * DELTA
    psf = (psf / psf.sum()).astype(np.float32)
    y = _apply(inverse.Convolution(psf), x, x)["forward"] + 0.01 * rng.normal(size=x.shape).astype(np.float32)
    # LensNet's mini-experiment mismatch: the PSF shifted by one pixel plus 15% of an independent pattern.
    calibrated = np.roll(psf, (1, 1), axis=(0, 1)) + 0.15 * rng.uniform(size=SHAPE) / 48
    calibrated = (calibrated / calibrated.sum()).astype(np.float32)
    psnr = jax.jit(inverse.psnr)
    exact = np.asarray(psnr(_wiener(y, psf, 1e-3), x))
    wrong = np.asarray(psnr(_wiener(y, calibrated, 1e-3), x))
    assert np.min(exact - wrong) > 5.0


def test_wiener_is_the_posterior_mean_of_a_stationary_gaussian_prior():
    # A circulant prior covariance Sigma (stationary, power spectrum P) and a circular blur share the Fourier
    # basis, so Sigma A^T (A Sigma A^T + sigma^2 I)^-1 y is the Wiener filter with lambda(w) = sigma^2 / P(w).
    fy = 2 * np.pi * np.fft.fftfreq(SHAPE[0])[:, None]
    fx = 2 * np.pi * np.fft.fftfreq(SHAPE[1])[None, :]
    power = 1.0 / (0.1 + fy**2 + fx**2)  # symmetric in w -> -w, so the autocovariance is real and even
    autocov = np.real(np.fft.ifft2(power)).astype(np.float32)
    conv = _operators()["convolution"]
    probe, _ = _data(12, conv)
    prior_cov = _f64(_apply(inverse.Convolution(autocov), probe, probe))["dense"]  # circulant: Sigma x = c (*) x
    blur = _f64(_apply(conv, probe, probe))["dense"]
    noise = 0.1
    rng = np.random.default_rng(12)
    x = np.real(np.fft.ifft2(np.sqrt(power) * np.fft.fft2(rng.normal(size=SHAPE)))).reshape(-1)  # a prior draw
    y = (blur @ x + noise * rng.normal(size=48)).astype(np.float32)
    post = _posterior64(np.zeros(48), 0.5 * (prior_cov + prior_cov.T), blur, y, noise)
    nsr = (noise**2 / power[:, : SHAPE[1] // 2 + 1]).astype(np.float32)
    wiener = np.asarray(_wiener(y.reshape(SHAPE), conv.psf, nsr)).reshape(-1)
    np.testing.assert_allclose(wiener, post.mean, atol=2e-4)
    # Negative control: a flat regulariser (no prior spectrum) is another estimate.
    flat = np.asarray(_wiener(y.reshape(SHAPE), conv.psf, np.full_like(nsr, noise**2))).reshape(-1)
    assert np.max(np.abs(flat - post.mean)) > 1e-2


def _feature_loss(psf, theta, features):
    return jnp.mean(jnp.square(inverse.feature_wiener(features, psf, jax.nn.softplus(theta)) - 1.0))


def test_feature_wiener_is_channelwise_and_differentiable():
    rng = np.random.default_rng(13)
    features = rng.normal(size=(2, 3, *SHAPE)).astype(np.float32)
    psf = (rng.uniform(size=(2, 3, *SHAPE)) + 2.0 * DELTA).astype(np.float32)
    delta = np.array([0.01, 0.1, 1.0], np.float32)
    filt = jax.jit(inverse.feature_wiener)
    out = np.asarray(filt(features, psf, delta))
    # numpy's FFT, channel by channel: conj(K_c) F_c / (|K_c|^2 + delta_c).
    k, f = np.fft.rfft2(psf.astype(np.float64)), np.fft.rfft2(features.astype(np.float64))
    expected = np.fft.irfft2(np.conj(k) * f / (np.abs(k) ** 2 + delta[:, None, None]), s=SHAPE)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # One [H, W] PSF is shared by every channel.
    np.testing.assert_allclose(filt(features, psf[0, 0], delta), filt(features, np.broadcast_to(psf[0, 0], psf.shape),
                                                                      delta), atol=1e-6)
    # Negative control: each channel's delta acts on that channel only.
    changed = np.asarray(filt(features, psf, np.array([0.01, 5.0, 1.0], np.float32)))
    assert np.max(np.abs(changed[:, 1] - out[:, 1])) > 1e-2
    np.testing.assert_allclose(changed[:, [0, 2]], out[:, [0, 2]], atol=1e-6)
    # Gradients reach the PSF and a positive learnable delta = softplus(theta); the delta one matches a central
    # difference.
    theta = np.log(np.expm1(delta))
    loss = jax.jit(_feature_loss)
    grad_psf, grad_theta = jax.jit(jax.grad(_feature_loss, argnums=(0, 1)))(psf, theta, features)
    assert np.all(np.isfinite(grad_psf)) and np.max(np.abs(grad_psf)) > 0
    direction, eps = np.array([1.0, -1.0, 0.5], np.float32), 1e-2
    numeric = (float(loss(psf, theta + eps * direction, features)) - float(loss(psf, theta - eps * direction,
                                                                                features))) / (2 * eps)
    analytic = float(np.dot(grad_theta, direction))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2)
    assert abs(analytic) > 1e-4
    # A PSF with an exact spectral zero (zero mean: K(0) = 0) still has a finite gradient.
    zero_mean = psf - psf.mean(axis=(-2, -1), keepdims=True)
    grad_zero_mean, _ = jax.jit(jax.grad(_feature_loss, argnums=(0, 1)))(zero_mean, theta, features)
    assert np.all(np.isfinite(grad_zero_mean))


# ------------------------------------------------------------------------------------------------------------
# PSNR

_psnr = jax.jit(inverse.psnr, static_argnames="axis")


def test_psnr_matches_its_definition():
    rng = np.random.default_rng(14)
    x = rng.uniform(size=SHAPE).astype(np.float32)
    other = rng.uniform(size=SHAPE).astype(np.float32)
    batch = np.stack([x + 0.1, x + 0.01, x, other])
    reference = np.broadcast_to(x, batch.shape)
    mse = np.mean((other.astype(np.float64) - x) ** 2)
    # MSE = 0.01 and 1e-4 at range 1; identical images give +inf; any pair matches 10 log10(range^2 / MSE).
    np.testing.assert_allclose(_psnr(batch, reference, 1.0), [20.0, 40.0, np.inf, 10 * np.log10(1 / mse)], rtol=1e-4)
    np.testing.assert_allclose(_psnr(batch, reference, 2.0) - _psnr(batch, reference, 1.0),
                               [20 * np.log10(2.0)] * 2 + [np.nan, 20 * np.log10(2.0)], rtol=1e-4)
    # Flattened vectors: the axis is the caller's. Batches give one value per image, not a pooled one (negative
    # control: pooling the first two MSEs would give 10 log10(1 / 0.00505) = 23.0 dB for both).
    np.testing.assert_allclose(_psnr(batch.reshape(4, -1), reference.reshape(4, -1), 1.0, axis=-1)[:2], [20.0, 40.0],
                               rtol=1e-4)
    # The gradient at identical images is zero, not NaN.
    np.testing.assert_allclose(jax.jit(jax.grad(inverse.psnr))(x, x), 0.0)


def test_rms_residual_is_sigma_y_at_the_truth(key):
    sigma_y = 0.05
    x_key, mask_key, noise_key = jax.random.split(key, 3)
    x = jax.random.uniform(x_key, (4000, 8, 8), minval=-1.0, maxval=1.0)
    op = inverse.Inpainting(operators.box_stripe_masks(mask_key, 1, (8, 8), 4, 2)[0])
    y = operators.noisy_measurement(op, x, noise_key, sigma_y)
    rms = jax.jit(lambda op, x, y: jnp.sqrt(jnp.mean(jnp.square(inverse.rms_residual(op, x, y)))))
    assert abs(float(rms(op, x, y)) / sigma_y - 1.0) < 0.03  # E[RMS^2] = sigma_y^2 (E[RMS] is biased low)
    # Negative control: averaging over all 64 pixels (the zero-filled ones too) understates the residual.
    naive = jnp.sqrt(jnp.mean(jnp.square(op.forward(x) - y)))
    assert abs(float(naive) / sigma_y - 1.0) > 0.1
    pool = inverse.AveragePool(4)
    y_sr = operators.noisy_measurement(pool, x, noise_key, sigma_y)
    assert abs(float(rms(pool, x, y_sr)) / sigma_y - 1.0) < 0.03
    assert float(rms(pool, x + 0.1, y_sr)) > 1.5 * sigma_y  # a wrong image is caught


# ------------------------------------------------------------------------------------------------------------
# Masks and measurements of the digit experiments; per-measurement matrix operators (gvlab.inverse.matrix)


def test_box_stripe_masks_miss_the_centre_box_and_one_full_width_stripe(key):
    masks = np.asarray(operators.box_stripe_masks(key, 64, (8, 8), box=4, stripe_rows=2))
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
    # Negative control: a box-only mask has no full-width missing row.
    box_only = np.ones((8, 8), bool)
    box_only[2:6, 2:6] = False
    assert not [r for r in range(8) if not box_only[r].any()]


def test_noisy_measurement_puts_noise_on_measured_entries_only(key):
    x = np.asarray(jax.random.uniform(key, (500, *SHAPE)), np.float32)
    mask = np.asarray(inverse.make_random_inpainting(jax.random.key(3), SHAPE, 0.5).mask)
    y = np.asarray(operators.noisy_measurement(inverse.Inpainting(jnp.asarray(mask)), x, key, 0.1))
    assert not y[:, ~mask].any()  # zero-filled, like A x
    assert abs(np.std(y[:, mask] - x[:, mask]) - 0.1) < 0.005
    y_sr = np.asarray(operators.noisy_measurement(inverse.AveragePool(2), x, key, 0.1))
    assert y_sr.shape == (500, 3, 4)
    pooled = x.reshape(500, 3, 2, 4, 2).mean(axis=(2, 4))
    assert abs(np.std(y_sr - pooled) - 0.1) < 0.005
    assert abs(np.std(y_sr - x[:, ::2, ::2]) - 0.1) > 0.02  # negative control: the wrong A x


N_MEASURED, S_ROWS = 3, 2


@jax.jit
def _matrix_case(key):
    x_key, op_key, y_key, m_key = jax.random.split(key, 4)
    x0 = jax.random.uniform(x_key, (N_MEASURED, *SHAPE), minval=-1.0, maxval=1.0)
    ops, y = matrix.measure_tasks(x0, op_key, tasks=("inpainting", "sr2", "box"), sigma_y=0.05, keep_fraction=0.5,
                                  box=2)
    masks = jax.vmap(lambda k: inverse.make_random_inpainting(k, SHAPE, 0.5).mask)(jax.random.split(m_key, N_MEASURED))
    sr_a = operators.dense_matrix(inverse.AveragePool(2), SHAPE)  # [12, 48]
    cov = jnp.eye(48) * 0.3 + 0.1
    n = N_MEASURED
    padded = inverse.gaussian_posterior(jnp.zeros(48), cov, ops.matrix[n], y[n].reshape(-1), 0.05).mean
    exact = inverse.gaussian_posterior(jnp.zeros(48), cov, sr_a, y[n].reshape(-1)[:12], 0.05).mean
    return x0, ops, y, masks, sr_a, padded, exact, jax.random.normal(y_key, (2, n * S_ROWS, *SHAPE))


def test_matrix_operators_act_as_the_library_operators(key):
    n, s = N_MEASURED, S_ROWS
    x0, ops, y, masks, sr_a, padded, exact, noise = _matrix_case(key)
    x0, y, masks, sr_a, (x_rows, y_rows) = (np.asarray(v) for v in (x0, y, masks, sr_a, noise))
    a, p = np.asarray(ops.matrix), np.asarray(ops.pinv_matrix)
    assert a.shape == p.shape == (3 * n, 48, 48)
    # Rows 0..n-1 random inpainting (A = A^+ = diag(mask), 24 of 48 pixels observed), n..2n-1 SR x2 (A zero-padded
    # to 48 rows), 2n..3n-1 the centre 2 x 2 box (rows 2-3, columns 3-4 of the 6 x 8 image missing).
    for i in range(n):
        observed = np.diag(a[i])
        assert observed.sum() == 24 and np.array_equal(a[i], np.diag(observed)) and np.array_equal(p[i], a[i])
        np.testing.assert_allclose(a[n + i][:12], sr_a, atol=1e-7)
        assert not a[n + i][12:].any() and not p[n + i][:, 12:].any()
        np.testing.assert_allclose(p[n + i][:, :12], 4.0 * sr_a.T, atol=1e-6)  # nearest upsampling
        box = np.diag(a[2 * n + i]).reshape(SHAPE)
        assert (box == 0).sum() == 4 and not box[2:4, 3:5].any()
        # y = A x0 + noise on the measured entries only: the padding and the unobserved pixels stay 0.
        assert not y[n + i].reshape(-1)[12:].any() and not y[i].reshape(-1)[observed == 0].any()
        assert 0.01 < np.std(y[n + i].reshape(-1)[:12] - sr_a @ x0[i].reshape(-1)) < 0.15
    # Masks drawn from another key are other masks: the check above is not vacuous (negative control).
    assert not np.array_equal(np.diag(a[0]).reshape(SHAPE).astype(bool), masks[0])

    # A solver batch: row i S + s belongs to operator i; the adjoint passes the dot-product test.
    sr = matrix.MatrixOperators(ops.matrix[n:2 * n], ops.pinv_matrix[n:2 * n])
    forward = np.asarray(sr.forward(jnp.asarray(x_rows)))
    expected = np.einsum("nij,nsj->nsi", a[n:2 * n], x_rows.reshape(n, s, 48)).reshape(forward.shape)
    np.testing.assert_allclose(forward, expected, atol=1e-5)
    assert _dot_test_gap(forward, y_rows, x_rows, np.asarray(sr.adjoint(jnp.asarray(y_rows)))) < 1e-5
    np.testing.assert_allclose(sr.gram(jnp.asarray(x_rows)), sr.adjoint(sr.forward(jnp.asarray(x_rows))), atol=1e-6)
    # Negative control: with the measurements' order reversed, rows meet the wrong operators.
    shuffled = matrix.MatrixOperators(ops.matrix[:n][::-1], ops.pinv_matrix[:n][::-1])
    inpaint = matrix.MatrixOperators(ops.matrix[:n], ops.pinv_matrix[:n])
    assert not np.allclose(shuffled.forward(jnp.asarray(x_rows)), inpaint.forward(jnp.asarray(x_rows)))

    # Zero padding leaves the exact posterior unchanged.
    np.testing.assert_allclose(padded, exact, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Scores of several solutions per measurement, solve timing, the fitted Gaussian prior


def test_psnr_and_accuracy_per_solution_average_over_measurements():
    from gvlab.probe import LogisticProbe

    reference = np.zeros((2, *SHAPE), np.float32)  # N = 2 measurements
    errors = np.array([[0.1, 0.01], [0.1, 0.1]], np.float32)  # [N, S]: solution 1 is better on measurement 0 only
    x = np.broadcast_to(errors[:, :, None, None], (2, 2, *SHAPE))
    psnr = inverse.metrics.psnr_per_solution(np.stack([x, x + 0.0]), reference, data_range=1.0)  # a leading run axis
    np.testing.assert_allclose(psnr, [[20.0, 30.0]] * 2, rtol=1e-5)  # (20 + 20) / 2 and (40 + 20) / 2
    assert not np.allclose(psnr[0], inverse.psnr(x, reference[:, None]).mean(-1))  # not the mean over solutions
    # A probe that reads the sign of the first pixel: class 1 if positive.
    d = SHAPE[0] * SHAPE[1]
    weights = np.zeros((d, 2), np.float32)
    weights[0] = [-1.0, 1.0]
    probe = LogisticProbe(jnp.asarray(weights), jnp.zeros(2), jnp.zeros(d), jnp.ones(d))
    images = np.zeros((3, 2, *SHAPE), np.float32)  # [N, S, H, W]
    images[:, 0, 0, 0] = [1.0, -1.0, 1.0]  # solution 0 predicts classes 1, 0, 1
    images[:, 1, 0, 0] = [-1.0, -1.0, -1.0]  # solution 1 predicts 0, 0, 0
    np.testing.assert_allclose(inverse.metrics.accuracy_per_solution(probe, images, np.array([1, 0, 0])),
                               [2 / 3, 2 / 3])
    np.testing.assert_allclose(inverse.metrics.accuracy_per_solution(probe, images, np.array([1, 0, 1])), [1.0, 1 / 3])


def test_wall_times_times_each_call_after_one_untimed_call():
    counts = {"a": 0, "b": 0}

    def call(name):
        counts[name] += 1
        return jnp.zeros(())

    times = inverse.metrics.wall_times({"a": lambda: call("a"), "b": lambda: call("b")}, repeats=3)
    assert counts == {"a": 4, "b": 4} and set(times) == {"a", "b"}
    assert all(t.shape == (3,) and np.all(t >= 0) for t in times.values())


def test_fit_gaussian_is_the_sample_mean_and_covariance():
    x = np.random.default_rng(5).normal(size=(50, 2, 3))
    mean, cov = inverse.fit_gaussian(x, jitter=0.5)
    assert mean.shape == (2, 3) and cov.shape == (6, 6) and mean.dtype == cov.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(x.reshape(50, 6), rowvar=False) + 0.5 * np.eye(6), rtol=1e-5, atol=1e-6)
    assert not np.allclose(cov, np.cov(x.reshape(50, 6), rowvar=False), atol=0.1)  # the jitter is added
