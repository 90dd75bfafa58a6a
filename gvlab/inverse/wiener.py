"""Wiener deconvolution of circular convolutions, in pixel space and channel-wise on feature maps (LensNet).

For y = h (*) x + n (circular, `gvlab.inverse.operators.Convolution`) with transfer function K = rfft2(h),

    X_hat = conj(K) Y / (|K|^2 + lambda),       x_hat = irfft2(X_hat),

the classical Wiener filter (Wiener 1949). With the per-frequency noise-to-signal ratio lambda(w) =
sigma_y^2 / P(w), P the power spectrum of a stationary Gaussian prior with zero mean (a circulant covariance),
it is exactly that prior's posterior mean `gvlab.inverse.gaussian.gaussian_posterior` (tested); a scalar lambda is
Tikhonov regularisation, and lambda -> 0 the inverse filter 1 / K, exact only where K has no zeros.
LensNet (Bai et al. 2025; official `models/LensNet.py`, function `WieNer`) applies the same filter per channel to
the encoder's skip features f_l, with PSF features k_l and a learnable delta_l (init 0.01): `feature_wiener`.
Both are plain jnp, differentiable w.r.t. the image, the PSF and lambda.

PSFs have their origin at index (0, 0), the convention of `Convolution`; `psf_to_origin` moves a centred PSF
image there. LensNet instead filters with the centred PSF, which shifts the result by the centre offset, and
`ifftshift`s it back: identical for even H and W (its 320 x 320 crops), one pixel off for odd ones (undoing the
shift needs `fftshift` there), which moving the PSF first avoids.

    >>> from gvlab.inverse.operators import make_convolution
    >>> op = make_convolution(jnp.array([[0.0, 0.2, 0.0], [0.2, 1.0, 0.1], [0.0, 0.1, 0.0]]), (8, 8))
    >>> x = jnp.arange(64.0).reshape(8, 8) / 64
    >>> bool(jnp.max(jnp.abs(wiener_deconvolve(op.forward(x), op.psf, 1e-8) - x)) < 1e-4)
    True
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gvlab.inverse.operators import _lift, _power


def wiener_deconvolve(y: Float[Array, "*batch H W"], psf: Float[Array, "*batch H W"],
                      regulariser: float | Float[ArrayLike, "*batch H W2"]) -> Float[Array, "*batch H W"]:
    """x_hat = irfft2(conj(K) rfft2(y) / (|K|^2 + lambda)), K = rfft2(psf) (module docstring).

    Args:
        y: measurements, `[..., H, W]`.
        psf: kernel with origin at (0, 0), `[H, W]` or with leading axes broadcastable against y's.
        regulariser: lambda > 0: a scalar, or per frequency on the rfft2 half-plane `[..., H, W // 2 + 1]`
            (for a Hermitian-symmetric `[H, W]` spectrum such as sigma_y^2 / P, take `[..., : W // 2 + 1]`), or
            anything broadcastable to it after leading unit axes are added (`[C, 1, 1]` per channel).

    Returns:
        The deconvolved image, `[..., H, W]`, y's dtype.
    """
    shape = y.shape[-2:]
    if psf.shape[-2:] != shape:
        raise ValueError(f"PSF shape {psf.shape[-2:]} differs from the image's {shape}")
    ndim = max(y.ndim, psf.ndim)
    k = _lift(jnp.fft.rfft2(psf), ndim)
    spectrum = jnp.conj(k) * _lift(jnp.fft.rfft2(y), ndim)
    denominator = (_power(k) + _lift(regulariser, ndim)).astype(k.dtype)  # complex: strict dtype promotion
    return jnp.fft.irfft2(spectrum / denominator, s=shape).astype(y.dtype)


def feature_wiener(features: Float[Array, "*batch C H W"], psf: Float[Array, "*batch C H W"],
                   regulariser: float | Float[ArrayLike, " C"]) -> Float[Array, "*batch C H W"]:
    """LensNet's feature-space Wiener filter: `wiener_deconvolve` per channel with a per-channel lambda.

    f_tilde_c = irfft2(conj(K_c) F_c / (|K_c|^2 + delta_c)), K_c = rfft2(k_c), F_c = rfft2(f_c).

    Args:
        features: `[..., C, H, W]` feature maps (one encoder level of a batch).
        psf: PSF features `[..., C, H, W]` (LensNet's k_l from its PSF encoder), or one `[H, W]` PSF for every
            channel; origin at (0, 0).
        regulariser: delta, a scalar or `[C]`. It must stay positive: a model learning it should store an
            unconstrained parameter and pass e.g. `softplus` or `exp` of it (LensNet learns delta itself, which
            can cross zero and divide by ~0 at the PSF's spectral zeros).

    Returns:
        `[..., C, H, W]`: the deconvolved features.
    """
    regulariser = jnp.asarray(regulariser)
    if regulariser.ndim == 1:  # per channel: [C] -> [C, 1, 1] against the [C, H, W // 2 + 1] spectra
        regulariser = regulariser[:, None, None]
    return wiener_deconvolve(features, psf, regulariser)
