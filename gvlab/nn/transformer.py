"""A small decoder-only Transformer with the instability switches of Wortsman et al. 2023 (flax.linen).

Pre-LN blocks, no biases anywhere (LayerNorms have gains only, eps 1e-6), rotary position embeddings (RoPE),
GELU MLP, attention scale 1/sqrt(d_head), untied embeddings, causal mask; everything float32. Initialisation as
in Sec. 2 of "Small-scale proxies for large-scale Transformer training instabilities" (Wortsman et al. 2023):
embedding N(0, 1/d) (Flax's default), every other kernel truncated normal with std 1/sqrt(fan-in).

Switches:
* `qk_layernorm`: z_ij = <LN(q_i), LN(k_j)> / sqrt(d_head), a LayerNorm over each head's d_head features
  (Sec. 3.1 of Wortsman et al., after Dehghani et al. 2023). It bounds every attention logit by construction:
  |z_ij| <= sqrt(d_head) * max|g_q| * max|g_k| (`attention_logit_bound`).
* z-loss (in `language_model_loss`): L = CE + c (log Z)^2 with Z = sum_j exp(y_j) (Sec. 3.2; Chowdhery et
  al. 2022), which keeps log Z near 0 where plain CE leaves it free (CE is invariant to shifting every logit).

The forward returns the logits and, for the diagnostics, the per-layer max attention logit (pre-softmax, after
scaling, over unmasked pairs) and log Z per position.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gvlab.errors import ConfigError
from gvlab.config import check_sizes

LAYERNORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """Architecture of `Transformer`.

    Attributes:
        vocab_size: number of tokens (256 for bytes).
        width: model width d.
        depth: number of blocks.
        num_heads: attention heads; d_head = width / num_heads.
        mlp_width: hidden width of the GELU MLP (4d in the paper).
        qk_layernorm: LayerNorm on queries and keys per head (Wortsman et al. 2023, Sec. 3.1).
        causal: mask future positions. False exists only as the negative control of the causality test.
        rope_base: RoPE frequency base.
    """

    vocab_size: int = 256
    width: int = 64
    depth: int = 2
    num_heads: int = 2
    mlp_width: int = 256
    qk_layernorm: bool = True
    causal: bool = True
    rope_base: float = 10_000.0

    def __post_init__(self):
        check_sizes(self, "vocab_size", "width", "depth", "num_heads", "mlp_width")
        if self.width % self.num_heads:
            raise ConfigError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        if (self.width // self.num_heads) % 2:
            raise ConfigError(f"RoPE needs an even head width, got {self.width // self.num_heads}")

    @property
    def head_width(self) -> int:
        return self.width // self.num_heads


def rope(x: Float[Array, "*batch T H Dh"], positions: Int[Array, " T"],
         base: float = 10_000.0) -> Float[Array, "*batch T H Dh"]:
    """Rotary position embedding (Su et al. 2021, Eq. 34): rotate feature pairs (x_i, x_{i+Dh/2}) by pos * theta_i.

    theta_i = base^(-2i/Dh). A rotation preserves norms, and <R_m q, R_n k> = <q, R_{n-m} k>: scores depend on
    positions only through n - m.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * freqs[None, :]  # [T, Dh/2]
    lead = (1,) * (x.ndim - 3)  # explicit broadcasting over batch axes and heads (no implicit rank promotion)
    cos = jnp.cos(angles).reshape(*lead, len(positions), 1, half)
    sin = jnp.sin(angles).reshape(*lead, len(positions), 1, half)
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def attention_logit_bound(params, layer: int) -> Float[Array, ""]:
    """Upper bound of |attention logit| in block `layer` of a qk-layernorm model, from its LN gains alone.

    LN(x) = g * x_hat with sum_i x_hat_i^2 = Dh var / (var + eps) <= Dh, so ||LN(x)|| <= max|g| sqrt(Dh); RoPE is a
    rotation; by Cauchy-Schwarz |<LN(q), LN(k)>| / sqrt(Dh) <= sqrt(Dh) max|g_q| max|g_k|. (Per head the gains are
    shared, so the max over features bounds every head.)
    """
    attention = params["params"][f"block_{layer}"]["attention"]
    g_q, g_k = attention["query_norm"]["scale"], attention["key_norm"]["scale"]
    return jnp.sqrt(g_q.shape[-1]) * jnp.max(jnp.abs(g_q)) * jnp.max(jnp.abs(g_k))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with RoPE and optional qk-layernorm; returns (output, max attention logit)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T D"], Float[Array, ""]]:
        cfg = self.config
        batch, length, _ = x.shape
        shape = (batch, length, cfg.num_heads, cfg.head_width)
        q_BTHK = nn.Dense(cfg.width, use_bias=False, name="query")(x).reshape(shape)
        k_BTHK = nn.Dense(cfg.width, use_bias=False, name="key")(x).reshape(shape)
        v_BTHK = nn.Dense(cfg.width, use_bias=False, name="value")(x).reshape(shape)
        if cfg.qk_layernorm:  # per head: the LN runs over the last (d_head) axis only
            q_BTHK = nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, name="query_norm")(q_BTHK)
            k_BTHK = nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, name="key_norm")(k_BTHK)
        positions = jnp.arange(length)
        q_BTHK, k_BTHK = rope(q_BTHK, positions, cfg.rope_base), rope(k_BTHK, positions, cfg.rope_base)
        logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BTHK) / jnp.sqrt(cfg.head_width)
        allowed = jnp.tril(jnp.ones((1, 1, length, length), bool)) if cfg.causal else jnp.ones((1, 1, length, length), bool)
        # The diagnostic reads only the pairs the softmax sees: masked entries are not logits of the model.
        max_logit = jnp.max(jnp.where(allowed, jnp.abs(logits_BHTS), 0.0))
        weights_BHTS = jax.nn.softmax(jnp.where(allowed, logits_BHTS, -jnp.inf), axis=-1)
        out_BTHK = jnp.einsum("bhts,bshk->bthk", weights_BHTS, v_BTHK)
        return nn.Dense(cfg.width, use_bias=False, name="out")(out_BTHK.reshape(batch, length, cfg.width)), max_logit


class Block(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T D"], Float[Array, ""]]:
        cfg = self.config
        attended, max_logit = CausalSelfAttention(cfg, name="attention")(
            nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, name="attention_norm")(x))
        x = x + attended
        hidden = nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, name="mlp_norm")(x)
        hidden = nn.gelu(nn.Dense(cfg.mlp_width, use_bias=False, name="mlp_in")(hidden))
        return x + nn.Dense(cfg.width, use_bias=False, name="mlp_out")(hidden), max_logit


class Transformer(nn.Module):
    """Decoder-only language model: tokens [B, T] -> (logits [B, T, V], diagnostics).

    Diagnostics: `attention_logit_max` [depth] (max |pre-softmax logit| over batch, heads and unmasked pairs of
    each block) and `log_z` [B, T] (logsumexp of the output logits).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Int[Array, "B T"]) -> tuple[Float[Array, "B T V"], dict[str, Array]]:
        cfg = self.config
        x = nn.Embed(cfg.vocab_size, cfg.width, name="embed")(tokens)  # N(0, 1/d): Flax's default
        max_logits = []
        for i in range(cfg.depth):
            x, max_logit = Block(cfg, name=f"block_{i}")(x)
            max_logits.append(max_logit)
        x = nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, name="final_norm")(x)
        logits = nn.Dense(cfg.vocab_size, use_bias=False, name="unembed")(x)
        return logits, {"attention_logit_max": jnp.stack(max_logits),
                        "log_z": jax.nn.logsumexp(logits, axis=-1)}


def language_model_loss(logits: Float[Array, "B T V"], targets: Int[Array, "B T"], log_z: Float[Array, "B T"],
                        z_loss: float | Float[Array, ""]) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Next-token cross-entropy plus z-loss, Sec. 3.2 of Wortsman et al. 2023: CE + c (log Z)^2.

    CE = log Z - y_target, averaged over every position. Returns (loss, terms) with `lm/xent` and `lm/z_loss`
    (the weighted term, c * mean (log Z)^2).
    """
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    xent = jnp.mean(log_z - target_logit)
    z_term = z_loss * jnp.mean(jnp.square(log_z))
    return xent + z_term, {"lm/xent": xent, "lm/z_loss": z_term}


def make_language_model(config: TransformerConfig, z_loss: float = 1e-4):
    """A `Method` training `Transformer(config)` on batches `{"tokens": int [B, T + 1]}` (next-token prediction).

    The loss is `language_model_loss`; its terms come with the per-step diagnostics of Wortsman et al. 2023:
    `diag/attention_logit_max/layer_<i>`, `diag/output_logit_mean`, `diag/log_z_mean` and `diag/log_z_abs_max`
    (the gradient RMS is reported by the train step as `norm/grad_rms`).

    Args:
        config: the architecture.
        z_loss: coefficient c of c (log Z)^2 (1e-4 in the paper; 0 switches it off).
    """
    from gvlab.types import Method  # a tiny module; imported here so gvlab.nn stays import-light

    if z_loss < 0:
        raise ConfigError(f"z_loss must be >= 0, got {z_loss}")
    model = Transformer(config)

    def init(key, batch):
        return model.init(key, batch["tokens"][:, :-1])

    def loss(params, batch, key, step):
        del key, step  # deterministic model: no dropout
        tokens = batch["tokens"].astype(jnp.int32)
        logits, diagnostics = model.apply(params, tokens[:, :-1])
        value, terms = language_model_loss(logits, tokens[:, 1:], diagnostics["log_z"], z_loss)
        log_z = diagnostics["log_z"]
        for i in range(config.depth):
            terms[f"diag/attention_logit_max/layer_{i}"] = diagnostics["attention_logit_max"][i]
        terms["diag/output_logit_mean"] = jnp.mean(logits)
        terms["diag/log_z_mean"] = jnp.mean(log_z)
        terms["diag/log_z_abs_max"] = jnp.max(jnp.abs(log_z))
        return value, terms

    return Method(init=init, loss=loss)
