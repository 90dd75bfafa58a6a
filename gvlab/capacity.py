"""A capacity constraint on a KL term by dual ascent on a Lagrange multiplier (Capacitron; also GECO-style).

Battenberg et al. 2019 (Capacitron), Eq. 5: `min_theta max_{beta >= 0} E[-log p(x|z)] + beta (E KL(q(z|x)||p(z)) - C)`.
Following the community implementation (Coqui-TTS `TTS/tts/layers/losses.py::TacotronLoss.forward`,
`beta_loss = -beta * (kl_capacity.detach() - C)`, `TTS/tts/layers/tacotron/capacitron_layers.py::CapacitronVAE`
with `beta = softplus(beta_tilde)`; `TTS/tts/configs/shared_configs.py::CapacitronVAEConfig`: SGD, momentum 0.9):

- the multiplier is `beta = softplus(beta_tilde)` (so beta >= 0 without clipping), `beta_tilde` starts at
  softplus^-1(1), i.e. beta = 1;
- model step: the gradient of `recon + sg(beta) (KL - C)` (`lagrangian`);
- multiplier step: SGD with momentum on `-beta (sg(KL) - C)` with respect to `beta_tilde` (`dual_update`):
  `g = -sigmoid(beta_tilde) (KL - C)`, `m <- mu m + g`, `beta_tilde <- beta_tilde - lr m`. KL above C raises
  beta (more pressure on the KL), KL below C lowers it towards 0.

The multiplier is non-gradient state: `DualState` rides in `TrainState.extra`, updated by the loss (which returns
it), checkpointed with the rest. Per-member capacities are `Spec.args`, so a capacity sweep is one program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

BETA_INIT = 1.0


class DualState(NamedTuple):
    """The multiplier's raw parameter `beta_tilde` (beta = softplus(beta_tilde)) and its SGD momentum."""

    beta_tilde: Float[Array, ""]
    momentum: Float[Array, ""]


def init_dual(beta: float = BETA_INIT) -> DualState:
    """beta_tilde = softplus^-1(beta) = log(exp(beta) - 1), zero momentum."""
    if not beta > 0:
        raise ValueError(f"the initial multiplier must be > 0 (softplus parametrisation), got {beta}")
    return DualState(jnp.asarray(jnp.log(jnp.expm1(beta)), jnp.float32), jnp.zeros((), jnp.float32))


def beta_of(state: DualState) -> Float[Array, ""]:
    """The multiplier beta = softplus(beta_tilde) >= 0."""
    return jax.nn.softplus(state.beta_tilde)


def lagrangian(recon: Float[Array, ""], kl: Float[Array, ""], capacity, state: DualState) -> Float[Array, ""]:
    """The model's objective `recon + sg(beta) (KL - C)`: gradients reach the model, never the multiplier."""
    return recon + jax.lax.stop_gradient(beta_of(state)) * (kl - capacity)


def dual_update(state: DualState, kl: Float[Array, ""], capacity, lr, momentum: float = 0.9) -> DualState:
    """One SGD-with-momentum step of the multiplier on `-beta (sg(KL) - C)` (gradient ascent on beta).

    `d/d beta_tilde [-softplus(beta_tilde) (KL - C)] = -sigmoid(beta_tilde) (KL - C)`; PyTorch's SGD momentum
    (`m <- mu m + g; p <- p - lr m`, dampening 0) as Coqui's `beta` optimiser.
    """
    gap = jax.lax.stop_gradient(kl) - capacity
    grad = -jax.nn.sigmoid(state.beta_tilde) * gap
    velocity = momentum * state.momentum + grad
    return DualState(state.beta_tilde - lr * velocity, velocity)
