"""A time-conditioned MLP for diffusion and flow models on flat vectors (2-D points, 64-pixel digits).

    net(x, t, c) = MLP([x, phi(t), E[c]]),   phi(t) = [sin(w_1 t), ..., sin(w_F t), cos(w_1 t), ..., cos(w_F t)]

with frequencies w_k spaced geometrically from 1 to `max_frequency` (radians per unit time; t lies in [0, 1]),
the sinusoidal embedding of Vaswani et al. (2017) used by DDPM (Ho et al. 2020) on a unit time axis. With
`num_classes = K > 0` a learned table E holds K + 1 rows: row K is the null class "no label" that
classifier-free guidance trains by label dropout and queries for the unconditional prediction (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from gvlab.nn.mlp import activation


def sinusoidal_embedding(t: Float[Array, " B"], num_frequencies: int,
                         max_frequency: float = 1000.0) -> Float[Array, "B F2"]:
    """`[sin(w_k t), cos(w_k t)]` for `w_k = max_frequency ** (k / (F - 1))`, k = 0..F-1: shape `[B, 2F]`."""
    exponents = jnp.linspace(0.0, 1.0, num_frequencies, dtype=t.dtype)
    frequencies = jnp.exp(exponents * math.log(max_frequency))
    angles = t[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeMLP(nn.Module):
    """`(x [B, d], t [B] or scalar, c [B] int or None) -> [B, out_features]` (see the module docstring).

    Attributes:
        out_features: output size (the data dimension for an eps / score / velocity / x0 head).
        hidden: widths of the hidden layers (default 3 x 128, as in the 2-D examples of Lai et al. 2025).
        activation: nonlinearity name (see `gvlab.nn.ACTIVATIONS`).
        num_frequencies: F, the number of time frequencies (the embedding has 2F features).
        max_frequency: the highest frequency, in radians per unit time.
        num_classes: K > 0 adds a class embedding with K + 1 rows (row K = null class); 0 is unconditional.
        class_features: width of the class embedding.
        zero_init_last: start the output layer at zero (the prediction starts as "predict 0").
    """

    out_features: int
    hidden: Sequence[int] = (128, 128, 128)
    activation: str = "silu"
    num_frequencies: int = 16
    max_frequency: float = 1000.0
    num_classes: int = 0
    class_features: int = 32
    zero_init_last: bool = False

    @property
    def null_class(self) -> int:
        """The label that means "unconditional" (the table's last row)."""
        return self.num_classes

    @nn.compact
    def __call__(self, x: Float[Array, "B d"], t: ArrayLike, c: Int[Array, " B"] | None = None
                 ) -> Float[Array, "B out"]:
        if x.ndim != 2:
            raise ValueError(f"TimeMLP expects flat inputs [B, d], got shape {x.shape}")
        if c is not None and self.num_classes == 0:
            raise ValueError("a class label was given to an unconditional TimeMLP (num_classes = 0)")
        t_B = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        parts = [x, sinusoidal_embedding(t_B, self.num_frequencies, self.max_frequency)]
        if self.num_classes > 0:
            c_B = jnp.full(x.shape[:1], self.null_class, jnp.int32) if c is None else jnp.asarray(c, jnp.int32)
            table = nn.Embed(self.num_classes + 1, self.class_features, name="class_embedding")
            parts.append(table(jnp.broadcast_to(c_B, x.shape[:1])).astype(x.dtype))
        h = jnp.concatenate(parts, axis=-1)
        act = activation(self.activation)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"dense_{i}")(h))
        init = nn.initializers.zeros if self.zero_init_last else nn.linear.default_kernel_init
        return nn.Dense(self.out_features, kernel_init=init, name="out")(h)
