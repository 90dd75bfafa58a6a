"""Affine coupling flows (RealNVP, Dinh et al. 2017, Sec. 3.3) with their log-determinant, for learned priors.

One coupling layer splits the vector into a kept half `x_a` and a changed half `x_b` (channel-wise halves whose roles
alternate from layer to layer) and maps

    y_a = x_a,    y_b = (x_b + t(x_a)) * exp(s(x_a)),    s = rescale * tanh(raw_s(x_a)),

so the Jacobian is triangular and `log|det dy/dx| = sum_b s(x_a)`. The inverse is `x_b = y_b * exp(-s(y_a)) - t(y_a)`.
This is the form of GCRL's official `models.py::CouplingLayer` (translate then scale, tanh-bounded log-scale times a
learnable per-channel `Rescale` initialised to 1, a one-hidden-layer LeakyReLU net of width 32, `reverse_mask`
alternating; the weight normalisation of the rescale is left out). A `CouplingFlow` stacks `num_layers` of them and
sums their log-determinants: `log p(x) = log p_base(f(x)) + log|det df/dx|`.

Modules are used through `init`/`apply`; `CouplingFlow.apply(params, x)` returns `(f(x), log|det|)` and
`CouplingFlow.apply(params, y, method="inverse")` returns `f^{-1}(y)`. Inputs are `[..., features]`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _kept(features: int, parity: int) -> jax.Array:
    """True on the kept (conditioning) half: the first half for parity 0, the second for parity 1."""
    first = jnp.arange(features) < features // 2
    return first if parity % 2 == 0 else ~first


class AffineCoupling(nn.Module):
    """One affine coupling layer (module docstring); `__call__(x) -> (y, log|det dy/dx|)`, `inverse(y) -> x`.

    Attributes:
        features: the dimension D >= 2 of the vectors.
        parity: which half is kept (0: the first floor(D/2) coordinates, 1: the others).
        hidden: widths of the scale-and-translation network.
    """

    features: int
    parity: int = 0
    hidden: Sequence[int] = (32,)

    def setup(self):
        if self.features < 2:
            raise ValueError(f"a coupling layer needs features >= 2, got {self.features}")
        self.layers = [nn.Dense(w, name=f"dense_{i}") for i, w in enumerate(self.hidden)]
        self.out = nn.Dense(2 * self.features, name="st")
        self.rescale = self.param("rescale", nn.initializers.ones, (self.features,))

    def _scale_shift(self, x_kept: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x_kept
        for layer in self.layers:
            h = nn.leaky_relu(layer(h))
        raw_s, t = jnp.split(self.out(h), 2, axis=-1)
        return jnp.broadcast_to(self.rescale, raw_s.shape) * jnp.tanh(raw_s), t

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        kept = jnp.broadcast_to(_kept(self.features, self.parity), x.shape)
        s, t = self._scale_shift(jnp.where(kept, x, 0.0))  # the net reads the kept half only
        y = jnp.where(kept, x, (x + t) * jnp.exp(s))
        return y, jnp.sum(jnp.where(kept, 0.0, s), axis=-1)

    def inverse(self, y: jax.Array) -> jax.Array:
        kept = jnp.broadcast_to(_kept(self.features, self.parity), y.shape)
        s, t = self._scale_shift(jnp.where(kept, y, 0.0))
        return jnp.where(kept, y, y * jnp.exp(-s) - t)


class CouplingFlow(nn.Module):
    """`num_layers` affine couplings with alternating kept halves; `__call__(x) -> (f(x), log|det df/dx|)`.

    Attributes:
        features: the dimension D >= 2.
        num_layers: coupling layers (GCRL's official code uses 3: kept halves first, second, first).
        hidden: widths of each layer's scale-and-translation network (official: (32,)).
    """

    features: int
    num_layers: int = 3
    hidden: Sequence[int] = (32,)

    def setup(self):
        self.couplings = [AffineCoupling(self.features, parity=i % 2, hidden=tuple(self.hidden), name=f"coupling_{i}")
                          for i in range(self.num_layers)]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        log_det = jnp.zeros(x.shape[:-1], x.dtype)
        for coupling in self.couplings:
            x, layer_log_det = coupling(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, y: jax.Array) -> jax.Array:
        for coupling in reversed(self.couplings):
            y = coupling.inverse(y)
        return y
