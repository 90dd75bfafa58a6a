"""Small convolutional encoder and decoder for low-resolution images (8x8 digits up to 32x32 patches).

The encoder halves the resolution with each strided convolution, then flattens into a dense head; the decoder
mirrors it with transposed convolutions. Images are NHWC.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gvlab.nn.mlp import activation


class ConvEncoder(nn.Module):
    """`[B, H, W, C] -> [B, out_features]`: strided 3x3 convolutions, then a dense layer.

    Attributes:
        channels: channels of each stride-2 convolution (H and W must be divisible by 2**len(channels)).
        out_features: size of the output (e.g. 2 * latent_dim for a Gaussian encoder).
        activation: name of the nonlinearity.
    """

    channels: Sequence[int]
    out_features: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for i, ch in enumerate(self.channels):
            x = act(nn.Conv(ch, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return nn.Dense(self.out_features, name="head")(x)


class ConvDecoder(nn.Module):
    """`[B, D] -> [B, H, W, out_channels]`: a dense layer to a small grid, then stride-2 transposed convolutions.

    Attributes:
        image_shape: `(H, W, out_channels)` of the output.
        channels: channels of each upsampling stage, coarsest first (H, W divisible by 2**len(channels)).
        activation: name of the nonlinearity.
    """

    image_shape: tuple[int, int, int]
    channels: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        height, width, out_channels = self.image_shape
        factor = 2 ** len(self.channels)
        if height % factor or width % factor:
            raise ValueError(f"image {height}x{width} is not divisible by 2**{len(self.channels)}")
        grid = (height // factor, width // factor, self.channels[0])
        x = act(nn.Dense(grid[0] * grid[1] * grid[2], name="stem")(z)).reshape(z.shape[:-1] + grid)
        for i, ch in enumerate(self.channels):
            x = act(nn.ConvTranspose(ch, (3, 3), strides=(2, 2), padding="SAME", name=f"up_{i}")(x))
        return nn.Conv(out_channels, (3, 3), padding="SAME", name="out")(x)


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(jnp.size(x) for x in jax.tree.leaves(params)))
