"""INR autoencoders: DDMI's D2C-VAE (latent -> hierarchical feature grids read by a scale-modulated MLP) and a
Functa-style weight-modulation baseline (latent -> shifts of an MLP on fixed Fourier features).

D2C-VAE (Park et al. 2024, *DDMI*, Sec. 3.2-3.3; official code `models/d2c_vae/autoencoder_unet.py::Decoder` and
`models/d2c_vae/mlp.py::MLP`):

    q(z | x) = N(mean(x), diag exp(log_var(x)))                      `GridEncoder` (convolutional, spatial z)
    Xi_1, ..., Xi_L = D(z)       grids at h 2^0, ..., h 2^{L-1}      `HierarchicalGrids` (1x1 heads per level)
    p_l(c) = bilinear(Xi_l, c)                                       `gvlab.inr.grids.bilinear` (adaptive PE)
    h_1 = SRB_1([p_1(c), s]),  h_l = SRB_l([h_{l-1}, p_l(c), s]),  h_{L+1} = SRB_{L+1}(h_L),  f(c) = ToRGB(h_{L+1})
                                                                     `ScaleModulatedMLP`

with SRB a StyledResBlock: a modulated, demodulated linear layer (StyleGAN2's w'_io = w_io a_i / ||w_.o a||,
a = affine(style)) whose style is an MLP of the sinusoidal embedding of the relative scale s (DDMI's "scale-aware
injection"; s = 1 for the full image, 1/2 for a crop of twice the resolution). `hierarchy` in [0, 1] mixes each
level's features with the finest level's, p_l <- hierarchy p_l + (1 - hierarchy) p_L: 0 is the single-scale
ablation (every injection reads the finest grid; same shapes, so both share one compiled program).

Baseline (Functa, Dupont et al. 2022; the notes' GEM/Functa-style weight generation): the same encoder, z flattened,
a linear hypernetwork gives one shift per hidden unit, h_{l+1} = relu(W_l h_l + b_l + H_l z), h_0 = gamma(c) fixed
Fourier features (`FourierField`).

`make_d2c_vae` turns either autoencoder into a `gvlab.types.Method` with DDMI's loss (`tools/d2c_vae/image.py`),
L1 reconstruction summed over pixels + kl_weight KL(q(z|x) || N(0, I)), and its multi-scale crops
(`utils/general_utils.py::multiscale_image_transform`): with probability `crop_probability` the target is a
half-size window rendered exactly at the training resolution (s = 1/2; the encoder still sees the full image).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.inr.grids import bilinear, fourier_features, pixel_grid
from gvlab.nn.time_mlp import sinusoidal_embedding
from gvlab.types import Batch, Method, Metrics, Params, PRNGKey


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
        out = out + bias[None, None]
        out = nn.leaky_relu(out, 0.2)
        skip = h if fan_in == self.width else nn.Dense(self.width, use_bias=False, name="skip")(h)
        return (out + skip) / math.sqrt(2.0)


class ScaleModulatedMLP(nn.Module):
    """`(features [[B, P, F] per level, coarse first], scale [B]) -> [B, P, out_features]` (module docstring)."""

    width: int = 64
    out_features: int = 1
    scale_frequencies: int = 8

    @nn.compact
    def __call__(self, features: Sequence[Array], scale: Float[Array, " B"]) -> Float[Array, "B P O"]:
        embedding = sinusoidal_embedding(scale, self.scale_frequencies, max_frequency=100.0)
        style = nn.Dense(self.width, name="style_out")(nn.gelu(nn.Dense(self.width, name="style_in")(embedding)))
        column = jnp.broadcast_to(scale[:, None, None], features[0].shape[:2] + (1,)).astype(features[0].dtype)
        h = StyledBlock(self.width, name="block_0")(jnp.concatenate([features[0], column], -1), style)
        for level, f in enumerate(features[1:], start=1):
            h = StyledBlock(self.width, name=f"block_{level}")(jnp.concatenate([h, f, column], -1), style)
        h = StyledBlock(self.width, name=f"block_{len(features)}")(h, style)
        modulation = nn.Dense(self.width, bias_init=nn.initializers.ones, name="to_out_affine")(style)
        return nn.Dense(self.out_features, name="to_out")(h * modulation[:, None, :])  # ToRGB: no demodulation


class GridField(nn.Module):
    """DDMI-mini's field: `(z, coords [B, P, 2], scale [B], hierarchy) -> values [B, P]` via hierarchical grids."""

    grids: HierarchicalGrids = HierarchicalGrids()
    mlp: ScaleModulatedMLP = ScaleModulatedMLP()

    def __call__(self, z: Array, coords: Float[Array, "B P 2"], scale: Float[Array, " B"],
                 hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        grids = self.grids(z)
        features = [jax.vmap(bilinear)(g, coords) for g in grids]
        features = [hierarchy * f + (1.0 - hierarchy) * features[-1] for f in features]
        return self.mlp(features, scale)[..., 0]


class FourierField(nn.Module):
    """The baseline's field: a ReLU MLP on fixed Fourier features whose hidden units are shifted by a linear
    hypernetwork of the flattened latent (Functa's shift modulations). `scale` and `hierarchy` are ignored."""

    width: int = 64
    depth: int = 4
    num_frequencies: int = 8

    @nn.compact
    def __call__(self, z: Array, coords: Float[Array, "B P 2"], scale: Float[Array, " B"],
                 hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        del scale, hierarchy
        flat = z.reshape(z.shape[0], -1)
        h = fourier_features(coords, self.num_frequencies)
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

    def render(self, z: Array, coords: Float[Array, "B P 2"], scale: Float[Array, " B"],
               hierarchy: Array | float = 1.0) -> Float[Array, "B P"]:
        return self.field(z, coords, scale, hierarchy)

    def __call__(self, x: Float[Array, "B H W"]) -> Float[Array, "B P"]:
        mean, _ = self.encode(x)
        coords = jnp.broadcast_to(pixel_grid(x.shape[-1]).reshape(1, -1, 2), (x.shape[0], x.shape[-1] ** 2, 2))
        return self.render(mean, coords, jnp.ones(x.shape[:1], x.dtype))


def render_latents(model: INRAutoencoder, params: Params, z: Array, resolution: int, hierarchy: Array | float = 1.0,
                   scale: float = 1.0) -> Float[Array, "B R R"]:
    """Decode latents into R x R images at any resolution (pixel centres of the full window; DDMI's test renders
    use s = 1 at every `test_resolution`, `tools/d2c_vae/image.py`)."""
    coords = pixel_grid(resolution).reshape(1, -1, 2)
    coords = jnp.broadcast_to(coords, (z.shape[0],) + coords.shape[1:])
    values = model.apply(params, z, coords, jnp.full(z.shape[:1], scale, z.dtype), hierarchy, method="render")
    return values.reshape(z.shape[0], resolution, resolution)


def encode_mean(model: INRAutoencoder, params: Params, x: Float[Array, "B H W"]) -> Array:
    """The posterior mean of q(z | x) (the latent the LDM is trained on and reconstructions decode)."""
    return model.apply(params, x, method="encode")[0]


def kl_standard_normal(mean: Array, log_var: Array) -> Float[Array, " B"]:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over all but the batch axis, in nats."""
    kl = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0)
    return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


def make_d2c_vae(model: INRAutoencoder, *, kl_weight: float = 1e-4, crop_probability: float = 0.0,
                 crop_scale: float = 0.5, target: Callable[[Any, Array], Array] | None = None) -> Method:
    """The D2C-VAE objective (module docstring) as a `Method` on batches `{"x": [B, R, R]}` (+ `"shape"`: the
    per-image parameters that `target(shape_i, coords [P, 2]) -> [P]` renders exactly, needed for crops).

    The loss reads the member argument `args["hierarchy"]` (1: DDMI, 0: single-scale ablation) when given.
    Metrics: `vae/l1` (mean absolute error per pixel), `vae/kl` (nats per image), `vae/crop` (fraction of crops).
    """
    if not 0.0 <= crop_probability <= 1.0:
        raise ValueError(f"crop_probability must lie in [0, 1], got {crop_probability}")
    if crop_probability > 0 and target is None:
        raise ValueError("multi-scale crops need the exact renderer `target`")
    if not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"crop_scale must lie in (0, 1], got {crop_scale}")

    def init(key: PRNGKey, batch: Batch) -> Params:
        return model.init(key, batch["x"][:1])

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: Any = None
             ) -> tuple[jax.Array, Metrics]:
        del step
        x = batch["x"]
        size, res = x.shape[0], x.shape[-1]
        noise_key, crop_key, window_key = jax.random.split(key, 3)
        mean, log_var = model.apply(params, x, method="encode")
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(noise_key, mean.shape, mean.dtype)
        crop = jax.random.bernoulli(crop_key, crop_probability, (size,))
        width = jnp.where(crop, 2.0 * crop_scale, 2.0)
        lower = -1.0 + jax.random.uniform(window_key, (size, 2)) * (2.0 - width)[:, None]
        coords = jax.vmap(lambda lo, w: pixel_grid(res, lo, w))(lower, width).reshape(size, -1, 2)
        truth = jax.vmap(target)(batch["shape"], coords) if target is not None else x.reshape(size, -1)
        hierarchy = 1.0 if args is None else args["hierarchy"]
        pred = model.apply(params, z, coords, jnp.where(crop, crop_scale, 1.0), hierarchy, method="render")
        l1 = jnp.abs(pred - truth)
        kl = kl_standard_normal(mean, log_var)
        value = jnp.mean(jnp.sum(l1, axis=-1)) + kl_weight * jnp.mean(kl)
        return value, {"vae/l1": jnp.mean(l1), "vae/kl": jnp.mean(kl), "vae/crop": jnp.mean(crop.astype(x.dtype))}

    return Method(init=init, loss=loss)
