"""LensNet-mini: the lensless simulator, Wiener oracles, SSIM against scikit-image, the network and its data."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from gvlab.data.patches import image_patches
from gvlab.errors import ConfigError
from gvlab.evals import evaluate_runs
from gvlab.inverse import lensless
from gvlab.inverse.metrics import psnr
from gvlab.inverse.operators import psf_to_origin
from gvlab.inverse.wiener import wiener_deconvolve
from gvlab.nn.lensnet import DepthwiseConv3x3, LensNet, upsample2, wiener_skip

SIZE = 16
EXACT = 1e-12  # the Wiener regulariser of the exact-inversion oracles (see `_float64_camera`)


@pytest.fixture(scope="module")
def camera():
    """A true PSF, its mis-calibrated version, and 4 test images with noiseless captures (gain 1)."""
    psf = lensless.coded_mask_psf(jax.random.key(0), (SIZE, SIZE))
    cal = lensless.miscalibrate(jax.random.key(1), psf)
    x = image_patches(jax.random.key(2), 4, "test", SIZE)
    y = lensless.measure(jax.random.key(3), x, psf, noise_std=0.0, gain_range=(1.0, 1.0))
    return psf, cal, x, y


def test_simulator_psfs_are_normalised_and_mismatch_zero_is_the_true_psf(camera):
    psf, cal, _, _ = camera
    assert abs(float(psf.sum()) - 1) < 1e-5 and float(psf.min()) >= 0 and float(cal.sum()) == pytest.approx(1, 1e-5)
    assert float(jnp.mean(psf > 1e-4 * psf.max())) > 0.5  # full support, not a few isolated points
    assert float(jnp.max(jnp.abs(lensless.miscalibrate(jax.random.key(1), psf, 0.0) - psf))) < 1e-7
    assert float(jnp.max(jnp.abs(cal - psf))) > 0.1 * float(psf.max())  # amount 1 is a real mismatch


def _float64_camera(psf, x):
    """Noiseless captures in float64, inverted with lambda = 1e-12 (`EXACT`): the coded mask's |K| spans ~5e-4 .. 1,
    so the brief's lambda = 1e-8 biases the weakest frequencies by lambda / |K|^2 ~ 5% (3.5e-4 max error measured,
    float32 and float64 alike), and float32 rounding of y is amplified ~2e3-fold by any exact inverse."""
    psf64, x64 = jnp.asarray(psf, jnp.float64), jnp.asarray(x, jnp.float64)
    return psf64, x64, lensless.measure(jax.random.key(3), x64, psf64, noise_std=0.0, gain_range=(1.0, 1.0))


def test_noiseless_capture_is_recovered_by_wiener_with_the_true_psf_only(camera):
    psf, cal, x, _ = camera
    with jax.enable_x64(True):
        psf64, x64, y64 = _float64_camera(psf, x)
        error = jnp.max(jnp.abs(wiener_deconvolve(y64, psf_to_origin(psf64), EXACT) - x64))
        wrong = jnp.max(jnp.abs(wiener_deconvolve(y64, psf_to_origin(jnp.asarray(cal, jnp.float64)), EXACT) - x64))
    assert float(error) < 1e-4
    assert float(wrong) > 1e-2  # negative control: the mis-calibrated PSF does not invert the camera


def test_feature_wiener_skip_inverts_a_centred_psf_per_channel(camera):
    """The network's skip filter (NHWC, centred PSF features) undoes the camera on every channel."""
    psf, _, x, _ = camera
    with jax.enable_x64(True):
        psf64, x64, y64 = _float64_camera(psf, x)
        features = jnp.stack([y64, 2 * y64], axis=-1)  # [B, H, W, 2]
        target = jnp.stack([x64, 2 * x64], axis=-1)
        kernel = jnp.stack([psf64, psf64], axis=-1)[None]
        error = jnp.max(jnp.abs(wiener_skip(features, kernel, jnp.float64(EXACT)) - target))
        shifted = jnp.stack([jnp.roll(psf64, 1, 0), psf64], axis=-1)[None]  # negative control: misregistered channel
        wrong = jnp.max(jnp.abs(wiener_skip(features, shifted, jnp.float64(EXACT)) - target))
    assert float(error) < 1e-4
    assert float(wrong) > 1e-2


def test_ssim_is_one_on_identical_images_and_matches_skimage(camera):
    _, _, x, _ = camera
    other = jnp.clip(x + 0.1 * jax.random.normal(jax.random.key(4), x.shape), 0, 1)
    assert np.allclose(np.asarray(lensless.ssim(x, x)), 1.0, atol=1e-6)
    ours = np.asarray(lensless.ssim(other, x))
    reference = [structural_similarity(np.asarray(other[i]), np.asarray(x[i]), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0) for i in range(len(x))]
    assert np.max(np.abs(ours - np.array(reference))) < 1e-4
    # Negative control: the same check rejects SSIM with skimage's default 7x7 uniform window.
    uniform = [structural_similarity(np.asarray(other[i]), np.asarray(x[i]), data_range=1.0) for i in range(len(x))]
    assert np.max(np.abs(ours - np.array(uniform))) > 1e-3
    with pytest.raises(ConfigError):
        lensless.ssim(x[:, :8, :8], x[:, :8, :8])


def test_reconstruction_loss_is_zero_at_the_truth(camera):
    _, _, x, y = camera
    value, terms = lensless.reconstruction_loss(x, x)
    assert abs(float(value)) < 1e-6 and float(terms["ssim"]) == pytest.approx(1.0, abs=1e-6)
    assert float(lensless.reconstruction_loss(jnp.clip(y, 0, 1), x)[0]) > 0.05


def test_depthwise_conv_equals_grouped_conv_and_upsampling_aligns_corners():
    x = jax.random.normal(jax.random.key(5), (2, 6, 5, 3))
    ours = DepthwiseConv3x3()
    params = ours.init(jax.random.key(6), x)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    grouped = nn.Conv(3, (3, 3), padding="SAME", feature_group_count=3)
    reference = grouped.apply({"params": {"kernel": kernel[:, :, None, :], "bias": bias}}, x)
    assert float(jnp.max(jnp.abs(ours.apply(params, x) - reference))) < 1e-5
    flipped = grouped.apply({"params": {"kernel": kernel[::-1, ::-1, None, :], "bias": bias}}, x)
    assert float(jnp.max(jnp.abs(ours.apply(params, x) - flipped))) > 1e-2  # negative control: convolution
    ramp = jnp.broadcast_to(jnp.arange(4.0)[None, :, None, None] + 10 * jnp.arange(3.0)[None, None, :, None],
                            (1, 4, 3, 1))
    up = upsample2(ramp)[0, :, :, 0]
    rows, cols = np.linspace(0, 3, 8), np.linspace(0, 2, 6)  # aligned corners: a linear ramp stays exact
    assert np.allclose(np.asarray(up), rows[:, None] + 10 * cols[None, :], atol=1e-5)
    half_pixel = jax.image.resize(ramp, (1, 8, 6, 1), "linear")[0, :, :, 0]  # negative control
    assert not np.allclose(np.asarray(half_pixel), rows[:, None] + 10 * cols[None, :], atol=1e-2)


def test_lensnet_output_gradients_and_learned_equals_fixed_fed_its_own_psf(camera):
    psf, _, _, y = camera
    learned, fixed = LensNet((4, 8)), LensNet((4, 8), psf="fixed")
    y = y[..., None]
    params = jax.jit(learned.init)(jax.random.key(7), y)
    inner = params["params"]
    assert inner["psf"].shape == (SIZE, SIZE, 1) and float(inner["psf_scale"]) == pytest.approx(1e-3)
    assert np.allclose(np.exp(np.asarray(inner["log_delta"])), 0.01)

    @jax.jit
    def probe(params, y):
        def loss(p):
            out = learned.apply(p, y)
            return jnp.mean(jnp.square(out - 0.5)), out
        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
        without_psf = {"params": {k: v for k, v in params["params"].items() if k != "psf"}}
        as_fixed = fixed.apply(without_psf, y, params["params"]["psf"][..., 0])
        with_true = fixed.apply(without_psf, y, psf / jnp.linalg.norm(psf))
        return out, grads, as_fixed, with_true

    out, grads, as_fixed, with_true = probe(params, y + 0.3)
    assert out.shape == y.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for name in ("psf", "psf_scale", "log_delta"):
        assert float(jnp.max(jnp.abs(grads["params"][name]))) > 0, name
    # The experiment's vmapped formulation is this model: equal up to float32 rounding (two compiled programs need
    # not round alike; 2.5e-7 measured), while another PSF changes the output by far more (negative control).
    assert float(jnp.max(jnp.abs(as_fixed - out))) < 1e-5
    assert float(jnp.max(jnp.abs(with_true - out))) > 1e-3

    plain = jax.eval_shape(LensNet((4, 8), physics=False).init, jax.random.key(0), y)
    names = {str(k.key) for path, _ in jax.tree_util.tree_leaves_with_path(plain) for k in path if hasattr(k, "key")}
    assert not names & {"psf", "psf_scale", "log_delta"} and not any(n.startswith("psf_enc") for n in names)
    assert any(n.startswith("psf_enc") for n in inner)
    with pytest.raises(ConfigError):
        LensNet((4, 8, 16, 32)).init(jax.random.key(0), y[:, :12, :12])  # 12 is not divisible by 8
    with pytest.raises(ConfigError):
        fixed.init(jax.random.key(0), y)  # psf="fixed" without a PSF


def test_patches_are_deterministic_in_range_and_split():
    a = image_patches(jax.random.key(8), 6, "train", SIZE)
    b = image_patches(jax.random.key(8), 6, "train", SIZE)
    c = image_patches(jax.random.key(9), 6, "train", SIZE)
    t = image_patches(jax.random.key(8), 6, "test", SIZE)
    assert a.shape == (6, SIZE, SIZE) and a.dtype == jnp.float32
    assert bool(jnp.all(a == b)) and not bool(jnp.all(a == c)) and not bool(jnp.all(a == t))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and float(a.std()) > 0.05
    for bad in (12, 4, 128):
        with pytest.raises(ConfigError):
            image_patches(jax.random.key(0), 4, "train", bad)
    with pytest.raises(ConfigError):
        image_patches(jax.random.key(0), 4, "validation", SIZE)


class _Gain:
    """A stand-in reconstruction network (NHWC in and out, a per-run gain, the fixed PSF added): the evaluator's
    plumbing without compiling a LensNet (the smoke run of inverse/lensnet applies the real one)."""

    @staticmethod
    def apply(params, y, psf):
        return jnp.clip(params["gain"] * y + psf[None, :, :, None], 0, 1)


def test_scores_wiener_baseline_and_the_per_run_network_evaluator(camera):
    psf, cal, x, y = camera
    other = jnp.clip(x + 0.05 * jax.random.normal(jax.random.key(10), x.shape), 0, 1)
    scores = jax.jit(lensless.mean_scores)(other, x)
    assert float(scores["psnr"]) == pytest.approx(float(jnp.mean(psnr(other, x))), rel=1e-5)
    assert float(scores["ssim"]) == pytest.approx(float(jnp.mean(lensless.ssim(other, x))), rel=1e-5)
    true, wrong = (lensless.wiener_baseline((y, x), (y, x), h, shown=2) for h in (psf, cal))
    assert true["shown"].shape == (2, SIZE, SIZE) and float(true["regulariser"]) > 0
    assert float(true["psnr"]) > float(wrong["psnr"]) + 3  # negative control: the mis-calibrated PSF

    runs = {"gain": jnp.array([1.0, 2.0])}
    data = {"y": y, "x": x, "psf": jnp.zeros((SIZE, SIZE))}
    out = evaluate_runs(lensless.make_evaluator(_Gain(), shown=3), runs, data)
    assert out["psnr"].shape == (2,) and out["shown"].shape == (2, 3, SIZE, SIZE)
    for r, gain in enumerate((1.0, 2.0)):
        x_hat = np.clip(gain * np.asarray(y), 0, 1)
        np.testing.assert_allclose(out["shown"][r], x_hat[:3], atol=1e-6)
        assert float(out["psnr"][r]) == pytest.approx(float(jnp.mean(psnr(jnp.asarray(x_hat), x))), abs=1e-4)
    assert out["psnr"][0] != out["psnr"][1]  # each run its own parameters
