"""INR layers (flax.linen): DDMI's D2C-VAE modules and a Functa-style weight-modulation field.

D2C-VAE (Park et al. 2024, *DDMI*, Sec. 3.2-3.3; official code `models/d2c_vae/autoencoder_unet.py::Decoder` and
`models/d2c_vae/mlp.py::MLP`):

    q(z | x) = N(mean(x), diag exp(log_var(x)))                      `GridEncoder` (convolutional, spatial z)
    Xi_1, ..., Xi_L = D(z)       grids at h 2^0, ..., h 2^{L-1}      `HierarchicalGrids` (1x1 heads per level)
    p_l(c) = bilinear(Xi_l, c)                                       `gvlab.inr.grids` (adaptive PE)
    h_1 = SRB_1([p_1(c), s]),  h_l = SRB_l([h_{l-1}, p_l(c), s]),  h_{L+1} = SRB_{L+1}(h_L),  f(c) = ToRGB(h_{L+1})
                                                                     `ScaleModulatedMLP`

with SRB a StyledResBlock: a modulated, demodulated linear layer (StyleGAN2's w'_io = w_io a_i / ||w_.o a||,
a = affine(style)) whose style is an MLP of the sinusoidal embedding of the relative scale s (DDMI's "scale-aware
injection"; s = 1 for the full image, 1/2 for a crop of twice the resolution). `hierarchy` in [0, 1] mixes each
level's features with the finest level's, p_l <- hierarchy p_l + (1 - hierarchy) p_L: 0 is the single-scale
ablation (every injection reads the finest grid; same shapes, so both share one compiled program).

Baseline (Functa, Dupont et al. 2022; GEM/Functa-style weight generation): the same encoder, z flattened, a linear
hypernetwork gives one shift per hidden unit, h_{l+1} = relu(W_l h_l + b_l + H_l z), h_0 = gamma(c) fixed Fourier
features (`FourierField`).

Coordinates (`gvlab.inr.grids.Coords`) are either points `[B, P, 2]` or a product grid `(xs [B, X], ys [B, Y])`
(a full image or a crop window, P = Y X, row-major): the product form reads the grids with two small matrix
products (`bilinear_product`) instead of gathers, whose scatter-add gradients dominate a training step on CPU.

`MixedPrediction` is LSGM's mixed eps prediction around any `(x, t) -> eps` network (DDMI's LDM, `gvlab.inr.latent`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.inr.grids import Coords, fourier_features, lookup, points
from gvlab.nn.mlp import MLP
from gvlab.nn.time_mlp import sinusoidal_embedding


class GridEncoder(nn.Module):
    """`x [B, H, W] -> (mean, log_var) [B, H / 2^D, W / 2^D, latent_channels]`: a 3x3 stem, then D stride-2 convs."""

    channels: Sequence[int] = (32, 64)
    latent_channels: int = 8

    @nn.compact
    def __call__(self, x: Float[Array, "B H W"]) -> tuple[Array, Array]:
        h = nn.gelu(nn.Conv(self.channels[0], (3, 3), name="stem")(x[..., None]))
        for i, ch in enumerate(self.channels):
            h = nn.gelu(nn.Conv(ch, (3, 3), strides=(2, 2), name=f"down_{i}")(h))
        stats = nn.Conv(2 * self.latent_channels, (1, 1), name="stats")(h)
        mean, log_var = jnp.split(stats, 2, axis=-1)
        return mean, jnp.clip(log_var, -10.0, 10.0)


class HierarchicalGrids(nn.Module):
    """`z [B, h, w, L] -> [Xi_1 [B, h, w, F], Xi_2 [B, 2h, 2w, F], ...]`, coarse to fine (DDMI's HDBF decoder)."""

    levels: int = 3
    features: int = 8
    channels: int = 64

    @nn.compact
    def __call__(self, z: Float[Array, "B h w L"]) -> list[Array]:
        h = nn.gelu(nn.Conv(self.channels, (3, 3), name="stem")(z))
        grids = [nn.Conv(self.features, (1, 1), name="head_0")(h)]
        for level in range(1, self.levels):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2, then a 3x3 conv (Decoder's Upsample)
            h = nn.gelu(nn.Conv(self.channels, (3, 3), name=f"up_{level}")(h))
            grids.append(nn.Conv(self.features, (1, 1), name=f"head_{level}")(h))
        return grids


class StyledBlock(nn.Module):
    """`h [B, P, in], style [B, S] -> [B, P, width]`: modulated (demodulated) linear layer + residual (DDMI's
    StyledResBlock with 1x1 kernels; StyleGAN2 Eq. 1-3), leaky ReLU 0.2, output scaled by 1/sqrt(2)."""

    width: int
    demodulate: bool = True

    @nn.compact
    def __call__(self, h: Float[Array, "B P I"], style: Float[Array, "B S"]) -> Float[Array, "B P O"]:
        fan_in = h.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (fan_in, self.width)) / math.sqrt(fan_in)
        modulation = nn.Dense(fan_in, bias_init=nn.initializers.ones, name="affine")(style)  # a: [B, I]
        # x (W a) d = ((x * a) W) * d with d_o = 1 / ||W_.o * a||: one [B P, I] x [I, O] product instead of
        # per-example weights (StyleGAN2's non-fused modulation, the same function).
        out = jnp.einsum("bpi,io->bpo", h * modulation[:, None, :], kernel)
        if self.demodulate:
            out = out * jax.lax.rsqrt(jnp.square(modulation) @ jnp.square(kernel) + 1e-8)[:, None, :]
        bias = self.param("bias", nn.initializers.zeros, (self.width,))
        out = nn.leaky_relu(out + bias[None, None], 0.2)
        skip = h if fan_in == self.width else nn.Dense(self.width, use_bias=False, name="skip")(h)
        return (out + skip) / math.sqrt(2.0)


class ScaleModulatedMLP(nn.Module):
    """`(features [[B, P, F] per level, coarse first], scale [B]) -> [B, P, out_features]` (module docstring); the
    style is `gvlab.nn.MLP` of the scale's sinusoidal embedding (the official `time_mlp(scale_inj)`), and s is also
    a pixel channel (`scale_inj_pixel`)."""

    width: int = 64
    out_features: int = 1
    scale_frequencies: int = 8

    @nn.compact
    def __call__(self, features: Sequence[Array], scale: Float[Array, " B"]) -> Float[Array, "B P O"]:
        embedding = sinusoidal_embedding(scale, self.scale_frequencies, max_frequency=100.0)
        style = MLP((self.width, self.width), activation="gelu", name="style")(embedding)
        column = jnp.broadcast_to(scale[:, None, None], features[0].shape[:2] + (1,)).astype(features[0].dtype)
        h = StyledBlock(self.width, name="block_0")(jnp.concatenate([features[0], column], -1), style)
        for level, f in enumerate(features[1:], start=1):
            h = StyledBlock(self.width, name=f"block_{level}")(jnp.concatenate([h, f, column], -1), style)
        h = StyledBlock(self.width, name=f"block_{len(features)}")(h, style)
        modulation = nn.Dense(self.width, bias_init=nn.initializers.ones, name="to_out_affine")(style)
        return nn.Dense(self.out_features, name="to_out")(h * modulation[:, None, :])  # ToRGB: no demodulation


class GridField(nn.Module):
    """DDMI-mini's field: `(z, coords, scale [B], hierarchy) -> values [B, P]` via hierarchical grids."""

    grids: HierarchicalGrids = HierarchicalGrids()
    mlp: ScaleModulatedMLP = ScaleModulatedMLP()

    def __call__(self, z: Array, coords: Coords, scale: Float[Array, " B"],
                 hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        features = [lookup(g, coords) for g in self.grids(z)]
        features = [hierarchy * f + (1.0 - hierarchy) * features[-1] for f in features]
        return self.mlp(features, scale)[..., 0]


class FourierField(nn.Module):
    """The baseline's field: a ReLU MLP on fixed Fourier features whose hidden units are shifted by a linear
    hypernetwork of the flattened latent (Functa's shift modulations). `scale` and `hierarchy` are ignored."""

    width: int = 64
    depth: int = 4
    num_frequencies: int = 8

    @nn.compact
    def __call__(self, z: Array, coords: Coords, scale: Float[Array, " B"],
                 hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        del scale, hierarchy
        flat = z.reshape(z.shape[0], -1)
        h = fourier_features(points(coords), self.num_frequencies)
        for layer in range(self.depth):
            shift = nn.Dense(self.width, use_bias=False, name=f"shift_{layer}")(flat)  # the hypernetwork
            h = nn.relu(nn.Dense(self.width, name=f"dense_{layer}")(h) + shift[:, None, :])
        return nn.Dense(1, name="out")(h)[..., 0]


class INRAutoencoder(nn.Module):
    """Encoder + field. `encode(x) -> (mean, log_var)`; `render(z, coords, scale, hierarchy) -> [B, P]`."""

    encoder: GridEncoder
    field: nn.Module

    def encode(self, x: Float[Array, "B H W"]) -> tuple[Array, Array]:
        return self.encoder(x)

    def render(self, z: Array, coords: Coords, scale: Float[Array, " B"],
               hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        return self.field(z, coords, scale, hierarchy)

    def __call__(self, x: Float[Array, "B H W"]) -> Float[Array, "B P"]:
        """Reconstruction of the full window at the input resolution from the posterior mean (used by `init`)."""
        mean, _ = self.encode(x)
        axis = (jnp.arange(x.shape[-1], dtype=x.dtype) + 0.5) * (2.0 / x.shape[-1]) - 1.0  # pixel centres
        axes = jnp.broadcast_to(axis, (x.shape[0], x.shape[-1]))
        return self.render(mean, (axes, axes), jnp.ones(x.shape[:1], x.dtype))


class MixedPrediction(nn.Module):
    """`(x [B, d], t [B]) -> eps_hat [B, d]`: LSGM's mixed prediction around `network` (Vahdat et al. 2021, Eq. 5;
    DDMI's `diffusion/ddpm.py::get_mixed_prediction`, `mixed_init = -6`):

        eps_hat(x_t, t) = (1 - sigmoid(m)) sigma_t x_t + sigmoid(m) eps_theta(x_t, t),

    a learnable per-channel logit m; the first term is the exact eps of a standard-normal latent. `schedule` is a
    `gvlab.diffusion.schedules.Schedule` (its `sigma(t)`)."""

    network: nn.Module
    schedule: Any
    mixed_init: float = -6.0

    @nn.compact
    def __call__(self, x: Float[Array, "B d"], t: Array) -> Float[Array, "B d"]:
        logit = self.param("mixing_logit", nn.initializers.constant(self.mixed_init), (x.shape[-1],))
        t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        coeff = jax.nn.sigmoid(logit)
        return (1.0 - coeff[None]) * self.schedule.sigma(t_B)[:, None] * x + coeff[None] * self.network(x, t_B)
