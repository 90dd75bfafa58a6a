"""A small U-Net denoiser for low-resolution images (8x8 to 32x32), NHWC, in the lineage of DDPM (Ho et al. 2020).

    net(x_t, t, c) -> [B, H, W, C]   (an eps, x0, score or velocity head: the caller decides what it means)

Architecture (defaults `channels = (32, 64, 64)`, one residual block per level, no attention):

    time:   phi(t) (sinusoidal, 2F = 32 features, t in [0, 1]) -> Dense(4 c0) -> SiLU -> Dense(4 c0) = emb
            [+ E[c], a learned class table of K + 1 rows; row K is the null class of classifier-free guidance]
    stem:   3x3 conv C -> c0                                                       32x32
    down:   level 0  ResBlock(c0)  -> skip_0, 3x3 conv stride 2                    32x32 -> 16x16
            level 1  ResBlock(c1)  -> skip_1, 3x3 conv stride 2                    16x16 -> 8x8
            level 2  ResBlock(c2)  -> skip_2                                       8x8
    middle: ResBlock(c2), ResBlock(c2)                                             8x8
    up:     level 2  [h, skip_2] -> ResBlock(c2), nearest x2 + 3x3 conv            8x8 -> 16x16
            level 1  [h, skip_1] -> ResBlock(c1), nearest x2 + 3x3 conv            16x16 -> 32x32
            level 0  [h, skip_0] -> ResBlock(c0)                                   32x32
    out:    GroupNorm, SiLU, 3x3 conv c0 -> C (zero-initialised: the network starts as "predict 0")

    ResBlock(out):  h = conv3x3(SiLU(GN(x))) + Dense(SiLU(emb))[:, None, None, :]
                    h = conv3x3(SiLU(GN(h)));   return skip(x) + h     (skip = 1x1 conv when widths differ)

This is the DDPM U-Net (Ho et al. 2020, Appendix B: a PixelCNN++ / Wide-ResNet U-Net with group normalisation
and the Transformer's sinusoidal position embedding of the time step added in every residual block; 35.7M
parameters at 32x32) cut down for 2 CPU cores: three resolutions instead of four, one residual block per level
instead of two, no self-attention at 16x16, no dropout. Time is continuous, t in [0, 1] (gvlab.diffusion's
convention); the frequencies of phi span 1 to 1000 radians per unit time (`gvlab.nn.time_mlp.sinusoidal_embedding`),
where DDPM's, on integer steps 1000 t, span 0.1 to 1000. Class conditioning adds a learned embedding to the time
embedding, as the class-conditional models of classifier-free guidance do (Ho & Salimans 2022).

A U-Net of L = len(channels) levels halves the image L - 1 times: height and width must be divisible by
2 ** (L - 1), i.e. by 4 for the default (32x32, 16x16 and 8x8 all work; 30x30 raises a ValueError).

Parameter count of the default `UNet()` for C = 1: 776,929 (`num_classes = 10` adds 11 x 128 = 1,408).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from gvlab.nn.time_mlp import sinusoidal_embedding


def lecun_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Flax's default kernel initialiser (truncated normal, variance 1 / fan_in, fan_in = prod(shape[:-1])), drawn
    as one flat vector and reshaped.

    Same distribution, much cheaper to compile: with JAX's partitionable threefry, a draw of a 4-D kernel shape
    costs about 0.9 s of XLA CPU compilation and a flat draw about 0.15 s (measured on 2 cores, jax 0.10), and the
    U-Net has 30 kernels.
    """
    stddev = math.sqrt(1.0 / math.prod(shape[:-1])) / 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]
    return (stddev * jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)).reshape(shape)


def norm_groups(channels: int, groups: int = 8) -> int:
    """GroupNorm groups for a width: `gcd(groups, channels)` (8 for any multiple of 8; 1 for odd widths)."""
    return math.gcd(groups, channels)


class ResBlock(nn.Module):
    """`(x [B, H, W, Cin], emb [B, E]) -> [B, H, W, features]`: two GN-SiLU-conv layers plus the time projection.

    Attributes:
        features: output width.
        groups: the most GroupNorm groups (see `norm_groups`).
    """

    features: int
    groups: int = 8

    @nn.compact
    def __call__(self, x: Float[Array, "B H W Ci"], emb: Float[Array, "B E"]) -> Float[Array, "B H W Co"]:
        h = nn.GroupNorm(num_groups=norm_groups(x.shape[-1], self.groups), name="norm_0")(x)
        h = nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=lecun_normal, name="conv_0")(nn.silu(h))
        h = h + nn.Dense(self.features, kernel_init=lecun_normal, name="time")(nn.silu(emb))[:, None, None, :]
        h = nn.GroupNorm(num_groups=norm_groups(self.features, self.groups), name="norm_1")(h)
        h = nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=lecun_normal, name="conv_1")(nn.silu(h))
        skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1, 1), kernel_init=lecun_normal, name="skip")(x)
        return skip + h


class UNet(nn.Module):
    """`(x [B, H, W, C], t [B] or scalar in [0, 1], c [B] int or None) -> [B, H, W, C]` (see the module docstring).

    Attributes:
        channels: width of each level, finest first; len(channels) - 1 downsamplings.
        num_classes: None (or 0) for an unconditional network; K > 0 adds a class table of K + 1 rows, row K being
            the null class ("no label") that `c = None` selects, for classifier-free guidance.
        num_frequencies: F, the number of time frequencies (the sinusoidal embedding has 2F features).
        max_frequency: the highest time frequency, in radians per unit time.
        groups: the most GroupNorm groups per normalisation.
        zero_init_output: start the output convolution at zero.
    """

    channels: Sequence[int] = (32, 64, 64)
    num_classes: int | None = None
    num_frequencies: int = 16
    max_frequency: float = 1000.0
    groups: int = 8
    zero_init_output: bool = True

    @property
    def null_class(self) -> int:
        """The label that means "unconditional" (the class table's last row)."""
        if not self.num_classes:
            raise ValueError("an unconditional UNet (num_classes = None) has no null class")
        return self.num_classes

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], t: ArrayLike, c: Int[Array, " B"] | None = None
                 ) -> Float[Array, "B H W C"]:
        if x.ndim != 4:
            raise ValueError(f"UNet expects images [B, H, W, C], got shape {x.shape}")
        factor = 2 ** (len(self.channels) - 1)
        height, width = x.shape[1:3]
        if height % factor or width % factor:
            raise ValueError(f"a UNet with {len(self.channels)} levels halves the image {len(self.channels) - 1} "
                             f"times: height and width must be divisible by {factor}, got {height}x{width}")
        batch = x.shape[0]
        t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), (batch,))
        emb_features = 4 * self.channels[0]
        emb = sinusoidal_embedding(t_B, self.num_frequencies, self.max_frequency)
        emb = nn.Dense(emb_features, kernel_init=lecun_normal, name="time_0")(emb)
        emb = nn.Dense(emb_features, kernel_init=lecun_normal, name="time_1")(nn.silu(emb))
        if self.num_classes:
            c_B = jnp.full((batch,), self.null_class, jnp.int32) if c is None else jnp.asarray(c, jnp.int32)
            table = nn.Embed(self.num_classes + 1, emb_features, name="class_embedding")
            emb = emb + table(jnp.broadcast_to(c_B, (batch,))).astype(x.dtype)
        elif c is not None:
            raise ValueError("a class label was given to an unconditional UNet (num_classes = None)")

        h = nn.Conv(self.channels[0], (3, 3), padding="SAME", kernel_init=lecun_normal, name="stem")(x)
        skips = []
        last = len(self.channels) - 1
        for i, width_i in enumerate(self.channels):
            h = ResBlock(width_i, self.groups, name=f"down_{i}")(h, emb)
            skips.append(h)
            if i < last:
                # Explicit (1, 1) padding (not "SAME", which pads (0, 1) here) samples the same pixels as PyTorch's
                # Conv2d(padding=1, stride=2), so benchmarks/bench_unet.py can copy the weights across.
                h = nn.Conv(width_i, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=lecun_normal,
                            name=f"downsample_{i}")(h)
        for j in range(2):
            h = ResBlock(self.channels[-1], self.groups, name=f"middle_{j}")(h, emb)
        for i in reversed(range(len(self.channels))):
            h = ResBlock(self.channels[i], self.groups, name=f"up_{i}")(jnp.concatenate([h, skips.pop()], -1), emb)
            if i > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour x2
                h = nn.Conv(self.channels[i], (3, 3), padding="SAME", kernel_init=lecun_normal, name=f"upsample_{i}")(h)
        h = nn.silu(nn.GroupNorm(num_groups=norm_groups(self.channels[0], self.groups), name="out_norm")(h))
        init = nn.initializers.zeros if self.zero_init_output else lecun_normal
        return nn.Conv(x.shape[-1], (3, 3), padding="SAME", kernel_init=init, name="out")(h)


def init_unet(model: UNet, key: jax.Array, image_shape: tuple[int, int, int], batch: int = 1):
    """Jitted `model.init` on zeros of shape `[batch, *image_shape]` at t = 0 (the null class when conditional).

    Jitted because the ~30 truncated-normal kernel draws, run op by op, each compile separately (tens of seconds on
    2 cores); one program compiles in a few seconds and lands in the persistent compilation cache.
    """
    x = jnp.zeros((batch, *image_shape), jnp.float32)
    return jax.jit(model.init)(key, x, jnp.zeros((batch,), jnp.float32))
