"""A simulated lensless camera, a mis-calibrated PSF, SSIM in JAX, and the tuned classical Wiener baseline (LensNet).

Bai et al. 2025 (LensNet, IJCAI) reconstruct x from a lensless capture y = h (*) x + n. Their PSFs are measured
(DiffuserCam / PhlatCam) and their data real; this module simulates a stand-in:

* `coded_mask_psf`: a random coded mask / caustic: 40 point sources of brightness U(0.5, 1) blurred by a Gaussian
  of sigma 0.7 px, plus a faint pattern of random lines, spread over the whole image (distances wrap around, as
  the convolution does) and normalised to sum 1. PSF images are *centred* (as a captured PSF is); the camera
  convolves with `psf_to_origin` of them.
* `measure`: y = g (h (*) x) + n, circular FFT convolution, per-image gain g ~ U(0.9, 1.1), n ~ N(0, 0.01^2).
* `miscalibrate`: the PSF a careless calibration gives, h_cal = normalise(shift(h, a s) + a f p) with s = (1, 1)
  pixels, f = 0.15 and p an independent pattern: `amount` a = 0 gives h itself, a = 1 the default mismatch.
* `ssim`: the structural similarity of Wang et al. 2004 (Eq. 13) with an 11-tap Gaussian window (sigma 1.5) and
  K1 = 0.01, K2 = 0.03, averaged over the positions where the window fits inside the image: equal to
  `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`
  (tested to 1e-4), which filters with reflection and then crops the 5-pixel border that reflection touched.
* `reconstruction_loss`: LensNet's objective without its LPIPS term (`train.py`: MSE + 0.2 (1 - SSIM) + 0.2
  LPIPS; LPIPS needs pretrained AlexNet weights, unavailable offline).
* Evaluation: `mean_scores` (mean PSNR and SSIM of a set), `wiener_baseline` (the tuned classical Wiener method)
  and `make_evaluator` (a network's per-run evaluator for `run.evaluate`).

    >>> x = jnp.linspace(0.0, 1.0, 256).reshape(16, 16)
    >>> round(float(ssim(x, x)), 6)
    1.0
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.errors import ConfigError
from gvlab.inverse.metrics import psnr
from gvlab.inverse.operators import Convolution, psf_to_origin
from gvlab.inverse.wiener import wiener_deconvolve


def _normalise(psf: Array) -> Array:
    return psf / jnp.sum(psf, axis=(-2, -1), keepdims=True)


def _wrapped(delta: Array, period: int) -> Array:
    """Signed distance on a circle of `period` pixels (so blobs and lines wrap like the circular convolution)."""
    return (delta + period / 2) % period - period / 2


@functools.partial(jax.jit, static_argnames=("shape", "num_points", "num_lines"))
def coded_mask_psf(key: PRNGKeyArray, shape: tuple[int, int] = (32, 32), num_points: int = 40,
                   blur_sigma: float = 0.7, num_lines: int = 4, line_strength: float = 0.1) -> Float[Array, "H W"]:
    """A random full-support coded-mask PSF, centred, non-negative, summing to 1 (module docstring).

    Args:
        key: randomness of the points, their brightness and the lines.
        shape: `(H, W)`.
        num_points: point sources, uniform over the image.
        blur_sigma: Gaussian blur of each point, in pixels.
        num_lines: random lines (position and angle uniform) of the faint pattern.
        line_strength: peak height of a line relative to a point source of brightness 1.
    """
    h, w = shape
    point_key, bright_key, line_key, angle_key = jax.random.split(key, 4)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    points = jax.random.uniform(point_key, (num_points, 2)) * jnp.array([[h, w]], jnp.float32)
    brightness = jax.random.uniform(bright_key, (num_points,), minval=0.5, maxval=1.0)
    dr = _wrapped(rows[None] - points[:, 0, None, None], h)
    dc = _wrapped(cols[None] - points[:, 1, None, None], w)
    blobs = jnp.sum(brightness[:, None, None] * jnp.exp(-(dr**2 + dc**2) / (2 * blur_sigma**2)), axis=0)
    anchors = jax.random.uniform(line_key, (num_lines, 2)) * jnp.array([[h, w]], jnp.float32)
    angles = jax.random.uniform(angle_key, (num_lines,), maxval=jnp.pi)
    # Distance to each line through its anchor: |(p - a) . n| with n the unit normal (wrapped offsets).
    lr = _wrapped(rows[None] - anchors[:, 0, None, None], h)
    lc = _wrapped(cols[None] - anchors[:, 1, None, None], w)
    distance = lr * jnp.cos(angles)[:, None, None] - lc * jnp.sin(angles)[:, None, None]
    lines = line_strength * jnp.sum(jnp.exp(-distance**2 / (2 * blur_sigma**2)), axis=0)
    return _normalise(blobs + lines)


@functools.partial(jax.jit, static_argnames=("shift",))
def miscalibrate(key: PRNGKeyArray, psf: Float[Array, "H W"], amount: float | Float[Array, ""] = 1.0,
                 shift: tuple[float, float] = (1.0, 1.0), pattern_fraction: float = 0.15) -> Float[Array, "H W"]:
    """h_cal = normalise(shift(h, a s) + a f p), p = `coded_mask_psf(key)` an independent pattern.

    The shift is applied in Fourier (a phase ramp), so a s = (1, 1) equals `jnp.roll(h, (1, 1))` to rounding and
    a = 0 returns h (renormalised) exactly; non-integer shifts interpolate.

    Args:
        key: randomness of the spurious pattern p.
        psf: the true centred PSF `[H, W]`, summing to 1.
        amount: a >= 0, the mismatch dial (0: perfect calibration, 1: a one-pixel roll plus a 15% pattern).
        shift: s, pixels (rows, columns) of the misregistration at a = 1.
        pattern_fraction: f, weight of the spurious pattern at a = 1.
    """
    h, w = psf.shape
    freq_rows = jnp.fft.fftfreq(h)[:, None]
    freq_cols = jnp.fft.rfftfreq(w)[None, :]
    phase = -2 * jnp.pi * amount * (shift[0] * freq_rows + shift[1] * freq_cols)
    ramp = jax.lax.complex(jnp.cos(phase), jnp.sin(phase))
    shifted = jnp.fft.irfft2(jnp.fft.rfft2(psf) * ramp, s=(h, w)).astype(psf.dtype)
    pattern = coded_mask_psf(key, (h, w))
    return _normalise(shifted + amount * pattern_fraction * pattern)


def measure(key: PRNGKeyArray, x: Float[Array, "*batch H W"], psf: Float[Array, "H W"], noise_std: float = 0.01,
            gain_range: tuple[float, float] = (0.9, 1.1)) -> Float[Array, "*batch H W"]:
    """y = g irfft2(rfft2(psf_to_origin(h)) rfft2(x)) + n: one lensless capture per image (module docstring).

    Args:
        key: randomness of the gains g ~ U(gain_range), one per image, and the noise n ~ N(0, noise_std^2).
        x: images `[..., H, W]`.
        psf: the centred PSF `[H, W]`.
    """
    gain_key, noise_key = jax.random.split(key)
    blurred = Convolution(psf_to_origin(psf)).forward(x)
    gain = jax.random.uniform(gain_key, x.shape[:-2] + (1, 1), x.dtype, *gain_range)
    return gain * blurred + noise_std * jax.random.normal(noise_key, x.shape, x.dtype)


@functools.cache
def _gaussian_band(size: int, radius: int, sigma: float) -> np.ndarray:
    """`[size - 2 radius, size]` matrix of the normalised 1-D Gaussian window at every fully inside position."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    band = np.zeros((size - 2 * radius, size), np.float32)
    for i in range(size - 2 * radius):
        band[i, i: i + 2 * radius + 1] = taps
    return band


def ssim(x: Float[Array, "*batch H W"], reference: Float[Array, "*batch H W"], data_range: float = 1.0,
         sigma: float = 1.5, radius: int = 5, k1: float = 0.01, k2: float = 0.03) -> Float[Array, "*batch"]:
    """Mean SSIM per image (Wang et al. 2004, Eq. 13) with a Gaussian window, over the window's interior positions.

    S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)), C_i = (K_i L)^2, with
    local moments from the separable `2 radius + 1`-tap Gaussian (population covariances), averaged over the
    `(H - 2 radius) x (W - 2 radius)` positions where the window lies inside the image (skimage's reduction).

    Raises:
        ConfigError: an image smaller than the window.
    """
    h, w = x.shape[-2:]
    if min(h, w) <= 2 * radius:
        raise ConfigError(f"SSIM needs images larger than its {2 * radius + 1}-pixel window, got {h}x{w}")
    rows = jnp.asarray(_gaussian_band(h, radius, sigma), x.dtype)
    cols = jnp.asarray(_gaussian_band(w, radius, sigma), x.dtype)

    def filt(a):
        return jnp.einsum("ih,...hw,jw->...ij", rows, a, cols)

    mu_x, mu_y = filt(x), filt(reference)
    var_x = filt(x * x) - mu_x * mu_x
    var_y = filt(reference * reference) - mu_y * mu_y
    cov = filt(x * reference) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return jnp.mean(s, axis=(-2, -1))


def reconstruction_loss(x_hat: Float[Array, "*batch H W"], x: Float[Array, "*batch H W"],
                        ssim_weight: float = 0.2) -> tuple[Float[Array, ""], dict[str, Array]]:
    """MSE + w (1 - SSIM), both averaged over the batch (LensNet's `train.py` without LPIPS); returns the terms."""
    mse = jnp.mean(jnp.square(x_hat - x))
    structure = jnp.mean(ssim(x_hat, x))
    return mse + ssim_weight * (1.0 - structure), {"mse": mse, "ssim": structure}


def wiener_reconstruct(y: Float[Array, "*batch H W"], psf: Float[Array, "H W"],
                       regulariser: float | Float[Array, ""]) -> Float[Array, "*batch H W"]:
    """Classical Wiener deconvolution with a centred PSF, clipped to [0, 1] (the range the networks output)."""
    return jnp.clip(wiener_deconvolve(y, psf_to_origin(psf), regulariser), 0.0, 1.0)


@jax.jit
def wiener_psnr_grid(y: Float[Array, "N H W"], x: Float[Array, "N H W"], psf: Float[Array, "H W"],
                     regularisers: Float[Array, " K"]) -> Float[Array, " K"]:
    """Mean PSNR of `wiener_reconstruct` on (y, x) for every regulariser: the grid search of the W-cal baseline."""
    return jax.vmap(lambda lam: jnp.mean(psnr(wiener_reconstruct(y, psf, lam), x)))(regularisers)


def best_wiener_regulariser(y: Float[Array, "N H W"], x: Float[Array, "N H W"], psf: Float[Array, "H W"],
                            regularisers: Float[Array, " K"] | None = None) -> float:
    """The regulariser of the grid (default 10^-6 ... 10^0, 25 values) with the best mean PSNR on (y, x)."""
    if regularisers is None:
        regularisers = jnp.logspace(-6.0, 0.0, 25)
    scores = wiener_psnr_grid(y, x, psf, jnp.asarray(regularisers, jnp.float32))
    return float(jnp.asarray(regularisers)[int(jnp.argmax(scores))])



def mean_scores(x_hat: Float[Array, "N H W"], x: Float[Array, "N H W"]) -> dict[str, Float[Array, ""]]:
    """Mean per-image PSNR (dB, `gvlab.inverse.metrics.psnr`) and SSIM (`ssim`) of reconstructions of a set."""
    return {"psnr": jnp.mean(psnr(x_hat, x)), "ssim": jnp.mean(ssim(x_hat, x))}


def wiener_baseline(fit: tuple[Array, Array], test: tuple[Array, Array], psf: Float[Array, "H W"],
                    shown: int = 6) -> dict[str, Array]:
    """Classical Wiener deconvolution as a tuned baseline: the regulariser grid-searched on `fit = (y, x)`
    (`best_wiener_regulariser`), then `mean_scores` on `test = (y, x)`, and the first `shown` reconstructions."""
    regulariser = best_wiener_regulariser(*fit, psf)
    x_hat = wiener_reconstruct(test[0], psf, regulariser)
    return {"regulariser": np.asarray(regulariser), **mean_scores(x_hat, test[1]), "shown": x_hat[:shown]}


def make_evaluator(network, shown: int = 6):
    """The per-run evaluator (`gvlab.evals`) of a reconstruction network on a lensless test set.

    `evaluate(params, data, key) -> {"psnr", "ssim", "shown"}` reconstructs `data["y"]` `[N, H, W]` with
    `network.apply(params, y[..., None], data.get("psf"))` (a `gvlab.nn.lensnet.LensNet`: NHWC, an optional fixed
    PSF), scores it against `data["x"]` with `mean_scores` and keeps the first `shown` reconstructions (for
    figures). The key is unused. Build one per network and pass the network's settings to `run.evaluate`'s
    `extra=`, since they are not arrays the cache can see.
    """

    def evaluate(params, data, key):
        del key
        x_hat = network.apply(params, data["y"][..., None], data.get("psf"))[..., 0]
        return {**mean_scores(x_hat, data["x"]), "shown": x_hat[:shown]}

    return evaluate
