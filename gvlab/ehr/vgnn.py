"""VGNN (Zhu & Razavian 2019) and its non-variational graph model as one `Method` over padded code sets.

Loss per patient (official `utils.py::train`, `model.py::VariationalGNN.encoder_decoder`; notes sec. 1(a)):

    L = BCE_w(logit, y) + lambda KL,   BCE_w = -(w y log s + (1 - y) log(1 - s)),  s = sigmoid(logit),
    KL = (1 / |S|) sum_{i in S} 1/2 sum_k (sigma_ik^2 - log sigma_ik^2 - 1 + mu_ik^2)

with w = n_+ / n_- (`pos_weight` of the official `train.py`) and S the patient's documented codes (the paper's
intent; the official code indexes `mu[data]` with the 0/1 vector, i.e. rows 0 and 1). The batch loss is the mean over
patients (`mean_over_examples`), which keeps the official sum's BCE : KL ratio. During training every documented
code is dropped with probability `node_dropout` (official `data_to_edges`, 0.05) and dropout is active; evaluation
is deterministic (z = mu, no dropout).

Members: `args = {"variational": [M], "kl_weight": [M]}` trains VGNN (1, lambda) and the non-variational graph
model (0, 0) in one program; without args the config's `variational` and `kl_weight` apply.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.data.padded import Padded, mean_over_examples
from gvlab.dists import DiagNormal, kl_divergence
from gvlab.errors import ConfigError
from gvlab.nn.graph import VGNN
from gvlab.types import Method


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """VGNN settings (official defaults in brackets: `train.py`).

    Attributes:
        features: node and hidden width [256; notes' CPU scale 32].
        heads: attention heads [1].
        alpha: LeakyReLU slope [0.1].
        dropout: dropout rate [0.4].
        node_dropout: probability of dropping a documented code in training [0.05].
        kl_weight: lambda [1].
        variational: decode from the node posteriors (VGNN) or from the encoder output (the graph baseline).
        pos_weight: w of the weighted BCE [n_+ / n_- of the training set].
    """

    features: int = 32
    heads: int = 1
    alpha: float = 0.1
    dropout: float = 0.4
    node_dropout: float = 0.05
    kl_weight: float = 1.0
    variational: bool = True
    pos_weight: float = 1.0

    def __post_init__(self):
        if self.features < 1 or self.heads < 1:
            raise ConfigError(f"features and heads must be >= 1, got {self.features}, {self.heads}")
        if not 0.0 <= self.node_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout rates must lie in [0, 1), got {self.dropout}, {self.node_dropout}")


def make_model(cfg: Config, num_codes: int) -> VGNN:
    return VGNN(num_codes=num_codes, features=cfg.features, heads=cfg.heads, alpha=cfg.alpha, dropout=cfg.dropout)


def weighted_bce(logits: jax.Array, y: jax.Array, pos_weight: float) -> jax.Array:
    """-(w y log sigmoid(l) + (1 - y) log sigmoid(-l)) per example (PyTorch's `BCEWithLogitsLoss(pos_weight=w)`)."""
    y = y.astype(logits.dtype)
    return -(pos_weight * y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))


def node_kl(mu: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mu, sigma^2) || N(0, I)) per node, summed over features: [..., N]."""
    posterior = DiagNormal.from_log_variance(mu, log_var)
    return kl_divergence(posterior, DiagNormal(jnp.zeros_like(mu), jnp.ones_like(mu)))


def draw_noise(model: VGNN, key: jax.Array, mask: jax.Array, node_dropout: float) -> tuple[jax.Array, dict]:
    """The training randomness from ONE uniform draw: the node-dropout mask applied to `mask`, the dropout keep masks
    and the standard-normal eps of the posterior sample (inverse normal CDF of the same uniforms)."""
    shapes = {"nodes": mask.shape, **model.noise_shapes(mask.shape[:-1], mask.shape[-1])}
    sizes = [math.prod(shape) for shape in shapes.values()]
    tiny = jnp.finfo(jnp.float32).eps
    uniform = jax.random.uniform(key, (sum(sizes),), minval=tiny, maxval=1.0 - tiny)
    parts = dict(zip(shapes, jnp.split(uniform, [int(i) for i in np.cumsum(sizes)[:-1]])))
    parts = {name: part.reshape(shapes[name]) for name, part in parts.items()}
    noise = {name: parts[name] >= model.dropout for name in ("encoder", "parameterize", "decoder", "out")}
    noise["eps"] = jax.scipy.special.ndtri(parts["eps"])
    return mask & (parts["nodes"] >= node_dropout), noise


def _settings(cfg: Config, args) -> tuple[jax.Array, jax.Array]:
    args = args or {}
    variational = jnp.asarray(args.get("variational", float(cfg.variational)), jnp.float32)
    return variational, jnp.asarray(args.get("kl_weight", cfg.kl_weight), jnp.float32)


def per_example_terms(cfg: Config, model: VGNN, params, codes: Padded, y: jax.Array, key: jax.Array | None,
                      args=None) -> dict[str, jax.Array]:
    """BCE [B], the KL of every node [B, N] and the mask of the nodes the KL averages over.

    `key=None`: evaluation (deterministic, all documented codes); otherwise training (node dropout, dropout and
    the posterior sample, from `key`).
    """
    variational, _ = _settings(cfg, args)
    mask, noise = codes.mask, None
    if key is not None:
        mask, noise = draw_noise(model, key, mask, cfg.node_dropout)
    out = model.apply(params, codes.values, mask, variational, noise)
    kl = node_kl(out["mu"][..., 1:, :], out["log_var"][..., 1:, :]) * variational
    return {"bce": weighted_bce(out["logit"], y, cfg.pos_weight), "kl": kl, "mask": mask, "logit": out["logit"]}


def batch_loss(cfg: Config, model: VGNN, params, batch, key: jax.Array | None, args=None):
    """Mean over patients of BCE + lambda KL, and the terms."""
    _, kl_weight = _settings(cfg, args)
    terms = per_example_terms(cfg, model, params, batch["codes"], batch["y"], key, args)
    bce = jnp.mean(terms["bce"])
    kl = mean_over_examples(terms["kl"], terms["mask"])
    return bce + kl_weight * kl, {"vgnn/bce": bce, "vgnn/kl": kl}


def make(cfg: Config, num_codes: int) -> Method:
    """The method: `init(key, batch)`, `loss(params, batch, key, step, args=None)`; batch = {"codes": Padded, "y"}."""
    model = make_model(cfg, num_codes)

    def init(key, batch):
        codes = batch["codes"]
        return model.init({"params": key}, codes.values, codes.mask, jnp.float32(1.0))

    def loss(params, batch, key, step, args=None):
        del step
        return batch_loss(cfg, model, params, batch, key, args)

    return Method(init=init, loss=loss)


def predict(model: VGNN, params, codes: Padded, variational) -> dict[str, jax.Array]:
    """Evaluation: logits [B] and the decoder's input node representations [B, N, F] (z = mu for VGNN, the encoder
    output for the graph baseline); codes only, the patient node left out."""
    out = model.apply(params, codes.values, codes.mask, jnp.asarray(variational, jnp.float32))
    return {"logit": out["logit"], "nodes": out["nodes"][..., 1:, :]}
