"""Policy networks for imitation (flax.linen): a Gaussian head for tanh-squashed actions and a primitive sequencer.

Both follow the official cable-routing code (`tan-liam/CableRouting` @25db10e, `src/model.py`, notes sec. 4(a)),
with small MLP trunks instead of ResNet encoders (the toy world's observations are low-dimensional).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gvlab.data.padded import masked_sum
from gvlab.nn.mlp import MLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the official policy's clip of log sigma (notes sec. 4(a))


class GaussianPolicy(nn.Module):
    """obs -> (mu, log sigma) of the pre-tanh Gaussian; log sigma clipped to [-20, 2].

    Attributes:
        action_dim: dimension of the action.
        hidden: widths of the ReLU trunk (official: 256-256).
    """

    action_dim: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(MLP(tuple(self.hidden), name="trunk")(obs))
        mean = nn.Dense(self.action_dim, name="mean")(h)
        log_std = jnp.clip(nn.Dense(self.action_dim, name="log_std")(h), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class Sequencer(nn.Module):
    """High-level policy: logits over primitives from features and the history of chosen primitives.

    Official `PrimitiveSelectionPolicy` (`src/model.py`): features -> Dense(256) -> ReLU; the last 6 primitive ids
    embedded in 4 dims (init N(0, 0.02^2)), concatenated, Dense(256) -> ReLU; both concatenated -> Dense(256) ->
    Dense(num_primitives) logits (no activation between the last two, as there).
    Concatenation then Dense equals `sum_j W_j e(id_j) + b`. The history here is `Padded` (most recent first, `mask`
    True on real entries) and the sum runs over real entries only: a padded entry contributes what the official
    pad id 0 would with a zero embedding, and a batch of histories of different lengths gives each example the
    value of its own unpadded history.

    Attributes:
        num_primitives: output classes; ids are 1..num_primitives (0 is the official pad id, never embedded here).
        history: maximum history length (official: 6).
        embed_dim, hidden: official 4 and 256.
    """

    num_primitives: int
    history: int = 6
    embed_dim: int = 4
    hidden: int = 256

    @nn.compact
    def __call__(self, obs: jax.Array, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """obs [..., F], ids [..., N] int, mask [..., N] bool with N <= history -> logits [..., num_primitives]."""
        n = ids.shape[-1]
        if n > self.history:
            raise ValueError(f"history of {n} entries, the sequencer holds {self.history}")
        embed = nn.Embed(self.num_primitives + 1, self.embed_dim, embedding_init=nn.initializers.normal(0.02),
                         name="embed")(ids)  # [..., N, E]
        kernel = self.param("history_kernel", nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                            (self.history, self.embed_dim, self.hidden))
        bias = self.param("history_bias", nn.initializers.zeros, (self.hidden,))
        history = masked_sum(jnp.einsum("...ne,neh->...nh", embed, kernel[:n]), mask)
        history = nn.relu(history + jnp.broadcast_to(bias, history.shape))
        features = nn.relu(nn.Dense(self.hidden, name="features")(obs))
        joint = nn.Dense(self.hidden, name="joint")(jnp.concatenate([features, history], -1))
        return nn.Dense(self.num_primitives, name="logits")(joint)
