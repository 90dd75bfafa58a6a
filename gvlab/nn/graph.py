"""Set-attention graph layers over padded node sets, and VGNN's encoder-decoder (Zhu & Razavian 2019).

Nodes are `Padded`: features [..., N, F] and a boolean mask [..., N]; a graph is a boolean adjacency [..., N, N]
(`gvlab.data.padded.pair_mask` for the fully connected graph of the real nodes). Attention is normalised with
`masked_softmax`, so padded nodes never reach a real one.

Randomness comes in as arrays: dropout takes a boolean `keep` mask and the posterior sample its standard-normal
`eps`, drawn by the method in one call (`gvlab.ehr.vgnn.draw_noise`). One threefry draw instead of one per dropout
layer keeps the train step's compile time several times shorter on CPU; `None` means evaluation (no dropout, z = mu).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gvlab.data.padded import masked_softmax, pair_mask


def dropout(x: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout with a given keep mask (identity when `keep` is None)."""
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


class GraphAttention(nn.Module):
    """One graph-attention layer (official `model.py::GraphLayer`, dense and masked).

    For head h: e_ij = LeakyReLU_alpha(a_h^T [W_h x_i || W_h x_j]) / sqrt(F H), w_ij = softmax_j over the
    neighbours of i (`adjacency`), x'_i = sum_j w_ij W_h x_j. `concat=True` (encoder): heads concatenated, dropout,
    LayerNorm, ELU. `concat=False` (decoder): mean over heads, dropout, V(ReLU(LayerNorm(.))). A node without
    neighbours gets zeros.

    Attributes:
        features: F, the width of every head.
        heads: H.
        alpha: LeakyReLU slope (official 0.1).
        dropout: dropout rate on the aggregated features (official 0.4).
        concat: encoder (True) or decoder (False) output.
    """

    features: int
    heads: int = 1
    alpha: float = 0.1
    dropout: float = 0.0
    concat: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, adjacency: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        projected = nn.DenseGeneral((self.heads, self.features), name="W")(x)  # [..., N, H, F]
        projected = jnp.moveaxis(projected, -2, -3)  # [..., H, N, F]
        a = self.param("a", nn.initializers.xavier_normal(), (self.heads, 2, self.features))
        source = jnp.einsum("...hnf,hf->...hn", projected, a[:, 0])
        target = jnp.einsum("...hnf,hf->...hn", projected, a[:, 1])
        scores = nn.leaky_relu(source[..., :, None] + target[..., None, :], self.alpha)
        weights = masked_softmax(scores / jnp.sqrt(self.features * self.heads), adjacency[..., None, :, :])
        mixed = weights @ projected  # [..., H, N, F]
        if self.concat:
            out = jnp.moveaxis(mixed, -3, -2).reshape(*mixed.shape[:-3], mixed.shape[-2], -1)
            return nn.elu(nn.LayerNorm(name="norm")(dropout(out, keep, self.dropout)))
        out = dropout(jnp.mean(mixed, axis=-3), keep, self.dropout)
        return nn.Dense(self.features, name="V")(nn.relu(nn.LayerNorm(name="norm")(out)))


class VGNN(nn.Module):
    """VGNN's encoder-decoder over one patient's codes (official `model.py::VariationalGNN`, one encoder layer).

    Node 0 is the patient node (embedding id `num_codes`), nodes 1..N the codes. The encoder attends over the codes
    only (the patient node keeps its own projection, as the official code's self-loop for nodes outside the graph);
    `[mu, log sigma^2] = Linear(h)` per node, `z = mu + sigma eps` when `sample`, else `mu`; the decoder attends
    over the codes and the patient node; the logit is MLP(ReLU(h_patient)).

    `variational` (a scalar array, 0 or 1, so both variants share one compiled program) selects whether the
    decoder reads z (VGNN) or the encoder output h itself (the non-variational graph model). `noise`: None
    (evaluation: no dropout, z = mu) or `{"encoder", "parameterize", "decoder", "out": keep masks, "eps": N(0, 1)}`
    shaped as `noise_shapes` gives.

    Returns `{"logit": [...], "mu", "log_var", "hidden", "nodes": [..., N + 1, F]}` ("nodes": the decoder's input).
    """

    num_codes: int
    features: int = 32
    heads: int = 1
    alpha: float = 0.1
    dropout: float = 0.4

    def noise_shapes(self, batch: tuple[int, ...], num_nodes: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the dropout masks and of eps for codes [*batch, num_nodes]."""
        nodes = (*batch, num_nodes + 1)
        return {"encoder": (*nodes, self.heads * self.features), "parameterize": (*nodes, 2 * self.features),
                "decoder": (*nodes, self.features), "out": (*batch, self.features), "eps": (*nodes, self.features)}

    @nn.compact
    def __call__(self, codes: jax.Array, mask: jax.Array, variational: jax.Array,
                 noise: dict[str, jax.Array] | None = None) -> dict[str, jax.Array]:
        get = (lambda name: None) if noise is None else noise.get
        batch = codes.shape[:-1]
        ids = jnp.concatenate([jnp.full(batch + (1,), self.num_codes, codes.dtype), codes], axis=-1)
        real = jnp.concatenate([jnp.ones(batch + (1,), bool), mask], axis=-1)
        x = nn.Embed(self.num_codes + 1, self.features, name="embed")(ids)
        codes_only = real.at[..., 0].set(False)
        encoder_graph = pair_mask(codes_only).at[..., 0, 0].set(True)  # the patient node's self-loop
        hidden = GraphAttention(self.features, self.heads, self.alpha, self.dropout, concat=True,
                                name="encoder")(x, encoder_graph, get("encoder"))
        stats = nn.Dense(2 * self.features, name="parameterize")(hidden)
        stats = dropout(stats, get("parameterize"), self.dropout)  # as the official code: on mu and log var
        mu, log_var = jnp.split(stats, 2, axis=-1)
        z = mu if noise is None else mu + jnp.exp(0.5 * log_var) * noise["eps"]
        nodes = jnp.where(variational > 0.5, z, hidden)
        decoded = GraphAttention(self.features, self.heads, self.alpha, self.dropout, concat=False,
                                 name="decoder")(nodes, pair_mask(real), get("decoder"))
        h = nn.relu(decoded[..., 0, :])
        h = nn.relu(nn.Dense(self.features, name="out_0")(h))
        h = dropout(h, get("out"), self.dropout)
        logit = nn.Dense(1, name="out_1")(h)[..., 0]
        return {"logit": logit, "mu": mu, "log_var": log_var, "hidden": hidden, "nodes": nodes}
