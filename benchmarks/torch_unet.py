"""The U-Net of `gvlab.nn.unet` written in PyTorch (NCHW, `torch.nn` layers), layer for layer, and the map from the
flax parameters to its state dict: the reference `benchmarks/bench_unet.py` times gvlab against."""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F

from gvlab.nn.unet import norm_groups


class TorchResBlock(torch.nn.Module):
    """`gvlab.nn.unet.ResBlock` in NCHW; attribute names mirror the flax names (see `torch_state_dict`)."""

    def __init__(self, in_channels: int, features: int, emb_features: int, groups: int = 8):
        super().__init__()
        self.norm_0 = torch.nn.GroupNorm(norm_groups(in_channels, groups), in_channels, eps=1e-6)
        self.conv_0 = torch.nn.Conv2d(in_channels, features, 3, padding=1)
        self.time = torch.nn.Linear(emb_features, features)
        self.norm_1 = torch.nn.GroupNorm(norm_groups(features, groups), features, eps=1e-6)
        self.conv_1 = torch.nn.Conv2d(features, features, 3, padding=1)
        self.skip = torch.nn.Conv2d(in_channels, features, 1) if in_channels != features else None

    def forward(self, x, emb):
        h = self.conv_0(F.silu(self.norm_0(x)))
        h = h + self.time(F.silu(emb))[:, :, None, None]
        h = self.conv_1(F.silu(self.norm_1(h)))
        return (x if self.skip is None else self.skip(x)) + h


class TorchUNet(torch.nn.Module):
    """`gvlab.nn.unet.UNet` in PyTorch: `(x [B, C, H, W], t [B], c [B] or None) -> [B, C, H, W]`."""

    def __init__(self, image_channels: int = 1, channels=(32, 64, 64), num_classes: int | None = None,
                 num_frequencies: int = 16, max_frequency: float = 1000.0, groups: int = 8):
        super().__init__()
        self.num_classes = num_classes
        emb = 4 * channels[0]
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, 1.0, num_frequencies)
                                                      * math.log(max_frequency)), persistent=False)
        self.time_0 = torch.nn.Linear(2 * num_frequencies, emb)
        self.time_1 = torch.nn.Linear(emb, emb)
        if num_classes:
            self.class_embedding = torch.nn.Embedding(num_classes + 1, emb)
        self.stem = torch.nn.Conv2d(image_channels, channels[0], 3, padding=1)
        width = channels[0]
        for i, ch in enumerate(channels):
            self.add_module(f"down_{i}", TorchResBlock(width, ch, emb, groups))
            width = ch
            if i < len(channels) - 1:
                self.add_module(f"downsample_{i}", torch.nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        for j in range(2):
            self.add_module(f"middle_{j}", TorchResBlock(width, channels[-1], emb, groups))
        for i in reversed(range(len(channels))):
            self.add_module(f"up_{i}", TorchResBlock(width + channels[i], channels[i], emb, groups))
            width = channels[i]
            if i > 0:
                self.add_module(f"upsample_{i}", torch.nn.Conv2d(width, width, 3, padding=1))
        self.out_norm = torch.nn.GroupNorm(norm_groups(channels[0], groups), channels[0], eps=1e-6)
        self.out = torch.nn.Conv2d(channels[0], image_channels, 3, padding=1)
        self.levels = len(channels)

    def forward(self, x, t, c=None):
        angles = t[:, None] * self.frequencies[None, :]
        emb = self.time_1(F.silu(self.time_0(torch.cat([torch.sin(angles), torch.cos(angles)], -1))))
        if self.num_classes:
            c = torch.full(x.shape[:1], self.num_classes, dtype=torch.long, device=x.device) if c is None else c
            emb = emb + self.class_embedding(c)
        h = self.stem(x)
        skips = []
        for i in range(self.levels):
            h = getattr(self, f"down_{i}")(h, emb)
            skips.append(h)
            if i < self.levels - 1:
                h = getattr(self, f"downsample_{i}")(h)
        for j in range(2):
            h = getattr(self, f"middle_{j}")(h, emb)
        for i in reversed(range(self.levels)):
            h = getattr(self, f"up_{i}")(torch.cat([h, skips.pop()], 1), emb)
            if i > 0:
                h = getattr(self, f"upsample_{i}")(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


def torch_state_dict(params) -> dict[str, torch.Tensor]:
    """The flax parameters under torch names: conv kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in],
    GroupNorm scale -> weight, Embed embedding -> weight."""
    state = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params["params"])[0]:
        names = [k.key for k in path]
        value = np.array(value)  # a writable copy (torch warns on read-only numpy buffers)
        if names[-1] == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        names[-1] = "bias" if names[-1] == "bias" else "weight"
        state[".".join(names)] = torch.from_numpy(np.ascontiguousarray(value))
    return state
