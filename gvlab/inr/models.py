"""INR autoencoders as pure functions: DDMI's D2C-VAE objective, posterior means, rendering at any resolution.

The modules (flax.linen, `gvlab.nn.inr`, re-exported here): `GridEncoder`, `HierarchicalGrids`, `StyledBlock`,
`ScaleModulatedMLP`, `GridField` (DDMI-mini: latent -> hierarchical feature grids read bilinearly by a
scale-modulated MLP; Park et al. 2024, official `models/d2c_vae/autoencoder_unet.py::Decoder`,
`models/d2c_vae/mlp.py::MLP`), `FourierField` (Functa-style shift modulation of an MLP on fixed Fourier features),
`INRAutoencoder` (encoder + field). Their equations are in `gvlab.nn.inr`'s docstring.

`make_d2c_vae` turns either autoencoder into a `gvlab.types.Method` with DDMI's loss (`tools/d2c_vae/image.py`),
L1 reconstruction summed over pixels + kl_weight KL(q(z|x) || N(0, I)), and its multi-scale crops
(`utils/general_utils.py::multiscale_image_transform`): with probability `crop_probability` the target is a
`crop_scale`-size window rendered exactly at the training resolution (relative scale s = crop_scale; the encoder
still sees the full image). `render_latents` decodes latents at any resolution.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.inr.grids import points, window_axes
from gvlab.nn.inr import FourierField as FourierField
from gvlab.nn.inr import GridEncoder as GridEncoder
from gvlab.nn.inr import GridField as GridField
from gvlab.nn.inr import HierarchicalGrids as HierarchicalGrids
from gvlab.nn.inr import INRAutoencoder as INRAutoencoder
from gvlab.nn.inr import ScaleModulatedMLP as ScaleModulatedMLP
from gvlab.nn.inr import StyledBlock as StyledBlock
from gvlab.types import Batch, Method, Metrics, Params, PRNGKey


def render_latents(model: INRAutoencoder, params: Params, z: Array, resolution: int, hierarchy: Array | float = 1.0,
                   scale: float = 1.0) -> Float[Array, "B R R"]:
    """Decode latents into R x R images at any resolution (pixel centres of the full window; DDMI's test renders
    use s = 1 at every `test_resolution`, `tools/d2c_vae/image.py`)."""
    xs, ys = window_axes(resolution, jnp.full(z.shape[:1] + (2,), -1.0), jnp.full(z.shape[:1], 2.0))
    values = model.apply(params, z, (xs, ys), jnp.full(z.shape[:1], scale, z.dtype), hierarchy, method="render")
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
        coords = window_axes(res, lower, width)  # a product grid: the field reads it without gathers
        truth = jax.vmap(target)(batch["shape"], points(coords)) if target is not None else x.reshape(size, -1)
        hierarchy = 1.0 if args is None else args["hierarchy"]
        pred = model.apply(params, z, coords, jnp.where(crop, crop_scale, 1.0), hierarchy, method="render")
        l1 = jnp.abs(pred - truth)
        kl = kl_standard_normal(mean, log_var)
        value = jnp.mean(jnp.sum(l1, axis=-1)) + kl_weight * jnp.mean(kl)
        return value, {"vae/l1": jnp.mean(l1), "vae/kl": jnp.mean(kl), "vae/crop": jnp.mean(crop.astype(x.dtype))}

    return Method(init=init, loss=loss)
