"""Multilayer perceptron (flax.linen; used through `init`/`apply` only)."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": nn.tanh,
    "silu": nn.silu,
    "softplus": nn.softplus,
    "elu": nn.elu,
    "identity": lambda x: x,  # linear networks (the collapse theory's linear VAEs)
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Look an activation up by name (config fields hold names, not functions)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """Dense layers with an activation between them and none after the last.

    Attributes:
        features: width of every layer; the last entry is the output size.
        activation: name in `ACTIVATIONS`.
        zero_init_last: start the output layer at zero (a control or residual that starts as "do nothing", as
            the neural-SDE controls of Li et al. 2020 and Daems et al. 2024 do).
    """

    features: Sequence[int]
    activation: str = "relu"
    zero_init_last: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        last = len(self.features) - 1
        for i, width in enumerate(self.features):
            init = nn.initializers.zeros if (self.zero_init_last and i == last) else nn.linear.default_kernel_init
            x = nn.Dense(width, kernel_init=init, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x
