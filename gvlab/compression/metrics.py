"""Rate-distortion metrics: bits per pixel, MS-SSIM at small sizes, and the Bjontegaard delta rate.

* bpp = bits / (number of images x H x W).
* MS-SSIM (Wang, Simoncelli & Bovik 2003, Eq. 7): prod_{j<M} cs_j^{w_j} x (l_M cs_M)^{w_M} over M dyadic scales
  (2x2 average pooling between scales), with the SSIM of `gvlab.inverse.lensless.ssim` (11-tap Gaussian window).
  The contrast-structure term cs_j is that same SSIM with a luminance constant C1 so large that the luminance
  factor is 1 to float precision. The paper uses M = 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363,
  0.1333); a 32x32 image allows only M = 2 (16x16 is the smallest size larger than the 11-pixel window), so the
  first M weights are used, renormalised to sum to 1.
* BD-rate (Bjontegaard 2001, VCEG-M33; the "bjontegaard_delta_rate" of the compression literature): fit
  log(rate) as a cubic polynomial of PSNR for each curve, integrate both over the overlap of their PSNR ranges and
  report exp(mean difference) - 1: the average relative rate change of the test curve at equal quality
  (negative = fewer bits). The cubic is only meaningful where both curves are measured and PSNR rises with rate:
  a curve that is not monotone (PSNR not strictly increasing in rate) or a PSNR overlap below `min_overlap_db`
  gives NaN with a reason (`bd_rate_with_reason`), never an extrapolated number (a non-monotone cubic over a
  sliver of overlap returned 1e98 in an early run).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gvlab.errors import ConfigError
from gvlab.inverse.lensless import ssim

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_HUGE_K1 = 1e4  # C1 = (k1 L)^2 = 1e8 >> mu^2: the luminance factor of SSIM is 1, leaving contrast-structure


def bits_per_pixel(bits, num_images: int, height: int, width: int) -> float:
    """bits / (num_images H W)."""
    return float(bits) / float(num_images * height * width)


def ms_ssim(x: Float[Array, "*batch H W"], reference: Float[Array, "*batch H W"], scales: int = 2,
            data_range: float = 1.0) -> Float[Array, "*batch"]:
    """MS-SSIM per image with `scales` dyadic scales (module docstring; 2 for 32x32 images).

    Raises:
        ConfigError: the coarsest scale is not larger than the 11-pixel window, or scales outside 1..5.
    """
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ConfigError(f"scales must be in 1..5, got {scales}")
    smallest = min(x.shape[-2:]) // 2 ** (scales - 1)
    if smallest <= 10:
        raise ConfigError(f"{x.shape[-2]}x{x.shape[-1]} images allow fewer than {scales} scales of an 11-pixel "
                          f"window (coarsest side {smallest})")
    weights = jnp.asarray(MS_SSIM_WEIGHTS[:scales], x.dtype)
    weights = weights / jnp.sum(weights)
    out = jnp.ones(x.shape[:-2], x.dtype)
    for j in range(scales):
        if j == scales - 1:
            term = ssim(x, reference, data_range=data_range)
        else:
            term = ssim(x, reference, data_range=data_range, k1=_HUGE_K1)
        # A negative term (anti-correlated structure) has no real fractional power: it scores 0, the worst value.
        out = out * jnp.maximum(term, 0.0) ** weights[j]
        if j < scales - 1:
            x, reference = _pool(x), _pool(reference)
    return out


def _pool(a):
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    a = a[..., :h, :w]
    return a.reshape(*a.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, min_overlap_db: float = 0.5) -> float:
    """Bjontegaard delta rate of the test curve against the anchor, as a fraction (-0.1 = 10% fewer bits); NaN
    when it is undefined (see `bd_rate_with_reason`)."""
    return bd_rate_with_reason(rate_anchor, psnr_anchor, rate_test, psnr_test, min_overlap_db)[0]


def bd_rate_with_reason(rate_anchor, psnr_anchor, rate_test, psnr_test,
                        min_overlap_db: float = 0.5) -> tuple[float, str]:
    """(BD-rate, "") or (NaN, why it is undefined).

    Each curve needs >= 4 points (a cubic fit, Bjontegaard's VCEG-M33). Undefined (NaN): a curve whose PSNR is not
    strictly increasing in rate, or PSNR ranges that overlap by less than `min_overlap_db` dB (the integral runs
    over the overlap; outside it one curve would be extrapolated).

    Raises:
        ConfigError: fewer than 4 points, mismatched shapes, non-positive rates or non-finite values.
    """
    curves = []
    for name, rate, quality in (("anchor", rate_anchor, psnr_anchor), ("test", rate_test, psnr_test)):
        rate, quality = np.asarray(rate, np.float64), np.asarray(quality, np.float64)
        if rate.shape != quality.shape or rate.ndim != 1 or len(rate) < 4:
            raise ConfigError(f"a BD-rate curve needs >= 4 (rate, PSNR) points, got {rate.shape} and {quality.shape}")
        if np.any(rate <= 0) or not np.all(np.isfinite(quality)) or not np.all(np.isfinite(rate)):
            raise ConfigError("BD-rate needs positive finite rates and finite PSNRs")
        order = np.argsort(rate)
        if not np.all(np.diff(quality[order]) > 0):
            return float("nan"), (f"the {name} curve is not monotone: PSNR {np.round(quality[order], 2).tolist()} at "
                                  f"increasing rates {np.round(rate[order], 4).tolist()}")
        curves.append((np.log(rate), quality))
    low = max(q.min() for _, q in curves)
    high = min(q.max() for _, q in curves)
    if not high - low >= min_overlap_db:
        return float("nan"), (f"PSNR overlap {max(high - low, 0.0):.3g} dB < {min_overlap_db} dB (anchor "
                              f"{curves[0][1].min():.3g}..{curves[0][1].max():.3g}, test "
                              f"{curves[1][1].min():.3g}..{curves[1][1].max():.3g})")
    integrals = []
    for log_rate, quality in curves:
        poly = np.polyint(np.polyfit(quality, log_rate, 3))
        integrals.append((np.polyval(poly, high) - np.polyval(poly, low)) / (high - low))
    return float(np.exp(integrals[1] - integrals[0]) - 1.0), ""
