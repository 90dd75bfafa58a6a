"""LensNet-mini: a NAF-block U-Net with a learnable PSF branch and feature-space Wiener filtering (Bai et al. 2025).

Follows the official `models/LensNet.py` (baijiesong/Lensnet), images NHWC, with L = len(channels) levels:

    image encoder:  f_0 = DoubleConv(y) (c_0),  f_l = DoubleConv(AvgPool2(f_{l-1})) (c_l),  l = 1 .. L-1
    PSF branch:     k_0 = DoubleConv(w P),      k_l = DoubleConv(AvgPool2(k_{l-1})),          l = 1 .. L-2
                    P ~ U(0, 1) of the image's size (learned; "fixed": a given PSF image), w init 1e-3
    skips:          f~_l = FeatureWiener(f_l, k_l, delta_l)  for l < L-1; the bottleneck f_{L-1} is not filtered
    decoder:        h = f_{L-1};  h = DoubleConv([f~_l, Up2(h)]) -> c_{l-1} (c_0 at l = 0),  l = L-2 .. 0
    output:         clip(1x1 conv(h), 0, 1)

    FeatureWiener:  f~ = irfft2(conj(K) F / (|K|^2 + delta)) per channel, K = rfft2(k), F = rfft2(f)
                    (`gvlab.inverse.wiener.feature_wiener`; the official `WieNer`, Bai et al. 2025)

DoubleConv(c_in -> c_out, mid) = conv3x3 -> LayerNorm2d -> GELU -> NAFBlock(mid) -> conv3x3 -> LayerNorm2d -> GELU,
with mid = c_out in the encoders and c_in // 2 in the decoder, as the official `Up`. NAFBlock is Chen et al.
2022's (NAFNet): LayerNorm2d, 1x1 to 2c, depthwise 3x3, SimpleGate, simplified channel attention, 1x1,
residual scaled by beta; then LayerNorm2d, 1x1 to 2c, SimpleGate, 1x1, residual scaled by gamma; beta and gamma
start at 0, so each block starts as the identity. Up2 is bilinear x2 with aligned corners (PyTorch's
`Upsample(scale_factor=2, mode="bilinear", align_corners=True)`).

Choices (documented deviations):
* delta_l = exp(log_delta_l), log_delta_l init log 0.01: the official code learns delta itself, which can cross
  zero and divide by ~0 at the PSF features' spectral zeros; exp keeps it positive and moves it in relative steps.
* PSF features are computed on the centred PSF image (as the official code) and moved to the origin with
  `psf_to_origin` before filtering, instead of `ifftshift`-ing the result: the same for even sizes, exact for odd.
* Convolution kernels use flax's LeCun-normal and zero biases (PyTorch: Kaiming-uniform, uniform biases).
* `physics=False` is the official `WoWNFB` ablation (no PSF branch, no Wiener filter): a plain NAF-UNet.

    >>> import jax, jax.numpy as jnp
    >>> net = LensNet(channels=(4, 8))
    >>> y = jnp.zeros((2, 16, 16, 1))
    >>> params = jax.jit(net.init)(jax.random.key(0), y)  # jitted: eager, every layer's ops compile one by one
    >>> jax.jit(net.apply)(params, y).shape, sorted(params["params"])[:3]
    ((2, 16, 16, 1), ['dec_0', 'enc_0', 'enc_1'])
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gvlab.errors import ConfigError
from gvlab.inverse.operators import psf_to_origin
from gvlab.inverse.wiener import feature_wiener
from gvlab.nn.unet import lecun_normal

PsfMode = Literal["learned", "fixed"]


class LayerNorm2d(nn.Module):
    """Normalise each pixel over its channels, then a per-channel affine map (NAFNet's `LayerNorm2d`).

    y = (x - mean_c x) / sqrt(var_c x + eps) * weight + bias, on `[..., C]` (NHWC: the last axis).
    """

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: Float[Array, "... C"]) -> Float[Array, "... C"]:
        channels = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # two-pass: no E[x^2] - E[x]^2 cancellation
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * _per_channel(weight, x.ndim) + _per_channel(bias, x.ndim)


def _per_channel(v: Float[Array, " C"], ndim: int) -> Float[Array, "... C"]:
    """`[C] -> [1, ..., 1, C]`: the explicit broadcast that strict rank promotion asks for."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def simple_gate(x: Float[Array, "... C2"]) -> Float[Array, "... C"]:
    """SimpleGate (Chen et al. 2022, NAFNet): split the channels in two halves and multiply them."""
    first, second = jnp.split(x, 2, axis=-1)
    return first * second


class SimpleGate(nn.Module):
    """`simple_gate` as a module (no parameters)."""

    @nn.compact
    def __call__(self, x: Float[Array, "... C2"]) -> Float[Array, "... C"]:
        return simple_gate(x)


def _conv(features: int, size: int, name: str) -> nn.Conv:
    return nn.Conv(features, (size, size), padding="SAME", kernel_init=lecun_normal, name=name)


class DepthwiseConv3x3(nn.Module):
    """A per-channel 3x3 convolution (zero padding, bias), as nine shifted multiply-adds.

    Same function as `nn.Conv(C, (3, 3), padding="SAME", feature_group_count=C)`, written out because XLA:CPU's
    grouped-convolution gradient is slow: one training step of a [16, 32, 32, 16] depthwise conv took 0.59 s
    against 0.007 s for this form (jax 0.10.2, 2 contended cores).
    """

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"]) -> Float[Array, "B H W C"]:
        c = x.shape[-1]
        kernel = self.param("kernel", lambda key, shape: lecun_normal(key, shape).reshape(3, 3, c), (3, 3, 1, c))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        height, width = x.shape[1:3]
        out = _per_channel(bias, x.ndim)
        for i in range(3):
            for j in range(3):  # cross-correlation, like nn.Conv: out[r, s] += k[i, j] x[r + i - 1, s + j - 1]
                out = out + padded[:, i: i + height, j: j + width, :] * _per_channel(kernel[i, j], x.ndim)
        return out


class NAFBlock(nn.Module):
    """NAFNet's block on `[B, H, W, C]` (module docstring); beta and gamma init 0 make it start as the identity."""

    expand: int = 2

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"]) -> Float[Array, "B H W C"]:
        c = x.shape[-1]
        wide = self.expand * c
        h = LayerNorm2d(name="norm_1")(x)
        h = _conv(wide, 1, "conv_1")(h)
        h = DepthwiseConv3x3(name="depthwise")(h)
        h = simple_gate(h)
        attention = _conv(wide // 2, 1, "attention")(jnp.mean(h, axis=(1, 2), keepdims=True))  # SCA
        h = _conv(c, 1, "conv_2")(h * attention)
        beta = self.param("beta", nn.initializers.zeros, (c,))
        y = x + h * _per_channel(beta, h.ndim)
        h = _conv(self.expand * c, 1, "conv_3")(LayerNorm2d(name="norm_2")(y))
        h = _conv(c, 1, "conv_4")(simple_gate(h))
        gamma = self.param("gamma", nn.initializers.zeros, (c,))
        return y + h * _per_channel(gamma, h.ndim)


class DoubleConv(nn.Module):
    """conv3x3 -> LayerNorm2d -> GELU -> NAFBlock -> conv3x3 -> LayerNorm2d -> GELU (official `DoubleConv`).

    Attributes:
        features: output channels.
        mid_features: channels of the middle (NAFBlock) stage; None means `features`.
    """

    features: int
    mid_features: int | None = None

    @nn.compact
    def __call__(self, x: Float[Array, "B H W Ci"]) -> Float[Array, "B H W Co"]:
        mid = self.mid_features or self.features
        h = nn.gelu(LayerNorm2d(name="norm_1")(_conv(mid, 3, "conv_1")(x)), approximate=False)
        h = NAFBlock(name="naf")(h)
        return nn.gelu(LayerNorm2d(name="norm_2")(_conv(self.features, 3, "conv_2")(h)), approximate=False)


def average_pool2(x: Float[Array, "B H W C"]) -> Float[Array, "B h w C"]:
    """2x2 average pooling (H and W even)."""
    b, h, w, c = x.shape
    return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


@functools.cache
def _align_corners_matrix(size: int) -> np.ndarray:
    """`[2 size, size]` bilinear interpolation weights with aligned corners: output i samples i (size-1)/(2size-1)."""
    out = 2 * size
    matrix = np.zeros((out, size), np.float32)
    positions = np.arange(out) * (size - 1) / max(out - 1, 1)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, size - 1)
    frac = (positions - lower).astype(np.float32)
    matrix[np.arange(out), lower] += 1.0 - frac
    matrix[np.arange(out), upper] += frac
    return matrix


def upsample2(x: Float[Array, "B H W C"]) -> Float[Array, "B H2 W2 C"]:
    """Bilinear x2 upsampling with aligned corners (PyTorch `align_corners=True`), as two small matrix products."""
    rows = jnp.asarray(_align_corners_matrix(x.shape[1]), x.dtype)
    cols = jnp.asarray(_align_corners_matrix(x.shape[2]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def wiener_skip(features: Float[Array, "B H W C"], psf_features: Float[Array, "1 H W C"],
                delta: Float[Array, ""]) -> Float[Array, "B H W C"]:
    """`feature_wiener` on NHWC maps; the (centred) PSF features are moved to the origin first (module docstring)."""
    f = jnp.moveaxis(features, -1, -3)  # [B, C, H, W]
    k = psf_to_origin(jnp.moveaxis(psf_features[0], -1, -3))  # [C, H, W], origin at (0, 0)
    return jnp.moveaxis(feature_wiener(f, k[None], delta), -3, -1)


class LensNet(nn.Module):
    """`(y [B, H, W, C], fixed_psf [H, W] or None) -> x_hat [B, H, W, C]` in [0, 1] (module docstring).

    Attributes:
        channels: widths of the image encoder, finest first; L = len(channels) >= 2 levels, L - 1 Wiener skips.
        physics: False drops the PSF branch and the Wiener filters (the `WoWNFB` ablation, a plain NAF-UNet).
        psf: `"learned"` (a parameter P ~ U(0, 1)) or `"fixed"` (the `fixed_psf` argument, a centred image used as
            given: the official `PSF.py` ablation normalises its calibrated PSF to unit L2 norm first, and a learned
            P passed here gives exactly the `"learned"` model, which lets one vmap a fixed and a learned member);
            ignored when `physics=False`.
        psf_scale_init: initial w (the PSF branch sees w P).
        delta_init: initial Wiener regulariser delta_l of every level.
    """

    channels: Sequence[int] = (8, 16, 32, 32)
    physics: bool = True
    psf: PsfMode = "learned"
    psf_scale_init: float = 1e-3
    delta_init: float = 0.01

    @nn.compact
    def __call__(self, y: Float[Array, "B H W C"], fixed_psf: Float[Array, "H W"] | None = None
                 ) -> Float[Array, "B H W C"]:
        levels = len(self.channels)
        if y.ndim != 4:
            raise ConfigError(f"LensNet expects measurements [B, H, W, C], got shape {y.shape}")
        if levels < 2:
            raise ConfigError(f"LensNet needs at least 2 levels, got channels={tuple(self.channels)}")
        factor = 2 ** (levels - 1)
        height, width, in_channels = y.shape[1:]
        if height % factor or width % factor:
            raise ConfigError(f"{levels} levels halve the image {levels - 1} times: height and width must be "
                              f"divisible by {factor}, got {height}x{width}")
        if self.physics and self.psf not in ("learned", "fixed"):
            raise ConfigError(f"psf must be 'learned' or 'fixed', got {self.psf!r}")
        if self.physics and self.psf == "fixed" and (fixed_psf is None or fixed_psf.shape != (height, width)):
            raise ConfigError(f"psf='fixed' needs a fixed_psf of the image's size {(height, width)}, got "
                              f"{None if fixed_psf is None else fixed_psf.shape}")

        skips, h = [], y
        for level, c in enumerate(self.channels):
            h = DoubleConv(c, name=f"enc_{level}")(h if level == 0 else average_pool2(h))
            skips.append(h)
        if self.physics:
            psf_features = self._psf_features(height, width, in_channels, fixed_psf)
            log_delta = self.param("log_delta", nn.initializers.constant(math.log(self.delta_init)), (levels - 1,))
            skips = [wiener_skip(f, k, jnp.exp(log_delta[level]))
                     for level, (f, k) in enumerate(zip(skips[:-1], psf_features))] + [skips[-1]]
        h = skips[-1]
        for level in reversed(range(levels - 1)):
            merged = jnp.concatenate([skips[level], upsample2(h)], axis=-1)
            out = self.channels[max(level - 1, 0)]
            h = DoubleConv(out, merged.shape[-1] // 2, name=f"dec_{level}")(merged)
        return jnp.clip(nn.Conv(in_channels, (1, 1), kernel_init=lecun_normal, name="out")(h), 0.0, 1.0)

    def _psf_features(self, height: int, width: int, in_channels: int, fixed_psf: Array | None) -> list[Array]:
        """k_0 .. k_{L-2}, each `[1, H_l, W_l, c_l]`, from w P through the CMS encoder."""
        if self.psf == "learned":
            image = self.param("psf", nn.initializers.uniform(1.0), (height, width, in_channels))
        else:
            image = jnp.broadcast_to(fixed_psf[:, :, None], (height, width, in_channels))
        scale = self.param("psf_scale", nn.initializers.constant(self.psf_scale_init), ())
        k = scale * image[None]
        features = []
        for level, c in enumerate(self.channels[:-1]):
            k = DoubleConv(c, name=f"psf_enc_{level}")(k if level == 0 else average_pool2(k))
            features.append(k)
        return features


def learned_psf(params) -> Float[Array, "H W C"] | None:
    """The PSF image the branch sees, w P, of a learned-PSF LensNet's parameters (None without one)."""
    inner = params.get("params", params)
    if "psf" not in inner:
        return None
    return inner["psf_scale"] * inner["psf"]
