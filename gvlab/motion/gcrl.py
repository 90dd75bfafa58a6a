"""GCRL (Bagi et al. 2023, "Generative Causal Representation Learning for Out-of-Distribution Motion Forecasting",
ICML) and the CVAE baseline with the same networks, on the trajectory batch of `gvlab.motion`.

Model (official `sshirahmad/GCRL` `models.py::VCRL` with `--coupling`, MLP variant; notes sec. 1(a)):

* q(z|x) = N(mu_z, diag sigma_z^2) from the invariant encoder (the focal agent's past and the masked mean of its
  neighbours' pasts, `SimpleEncoder`) and its mapping head (`Mapping`, [32, 32]);
* q(s|x) = N(mu_s, diag sigma_s^2) from the variant encoder: a pairwise net on each neighbour's relative past
  (neighbour minus focal, and the focal past), masked mean over neighbours (`SimpleStyleEncoder` on `augm_data`);
* invariant prior log p(z) = log N(f_z(z); 0, I) + log|det df_z/dz|, f_z three affine couplings (`gvlab.nn.flows`);
* variant prior log p(s) = log sum_e pi_e N(f_s(s); e 1, (e + 1) I) + log|det df_s/ds|, e = 0..E-1, E = num_envs = 5,
  pi = softmax(l) with learnable l initialised to -1 (`VCRL.__init__`: `pi_priore`, `self.ps`);
* decoders p(x|z,s), p(y|z,s): Gaussians of fixed variance, log p = -||. - .||^2 + const (`l2_loss(mode="raw")`);
  both read only (z, s), as `SimpleDecoder` does (its style concat-blocks are replaced by an MLP on [z, s]).

Objectives, per example (`example_loss`), minimised as -J:

* `"best_of_k"` (official synthetic runs, `--decoupled_loss`, `VCRL.forward` / `train.py`):
  J = max_k -||y_hat_k - y||^2 + (1/N) sum_n [-||x_hat_n - x||^2 + log p(s_n) - log q(s_n|x) + log p(z_n) - log q(z_n|x)]
  with (z_k, s_k), k <= K = best_k, and (z_n, s_n), n <= N = num_samples, drawn from q(z|x) q(s|x);
* `"self_normalised"` (the notes' coupled objective, ETH/UCY runs):
  J = log q_hat(y|x) + sum_n w_n [-||x_hat_n - x||^2 + log p(s_n) - log q(s_n|x) + log p(z_n) - log q(z_n|x)],
  q_hat(y|x) = (1/N) sum_n p(y|z_n, s_n), w_n = p(y|z_n, s_n) / (N q_hat(y|x)) = softmax_n(log p(y|z_n, s_n)). The
  official code multiplies by the unnormalised exp(log p(y|z_n,s_n)); the notes normalise, which is followed here.
  Gradients flow through w_n, as through the official weights.

Low-shot adaptation (`adapt=True`, official `--finetune all`): the z-KL term is dropped and only the variant branch
and the decoders are trained (`trainable`, with `gvlab.train.frozen`). The CVAE baseline (`variant="cvae"`) has
the same encoders and future decoder, one latent [z, s] of dimension z_dim + s_dim with prior N(0, I), no past
reconstruction, and the same objective; it adapts all of its parameters.

The loss is a mean over examples of `example_loss` (each example its own key, `split(key, B)`), and neighbours
enter only through masked means, so a padded batch has the loss of its unpadded examples one by one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.data.padded import Padded, masked_mean
from gvlab.dists import DiagNormal
from gvlab.errors import ConfigError
from gvlab.nn import MLP
from gvlab.nn.flows import CouplingFlow
from gvlab.types import Method

VARIANTS = ("gcrl", "cvae")
OBJECTIVES = ("best_of_k", "self_normalised")
LOG_VARIANCE_RANGE = (-8.0, 8.0)  # keeps exp() finite in the first steps; the official heads are unbounded


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """GCRL / CVAE settings (defaults: the official synthetic run, `scripts/` v4 and `parser_file.py`).

    Attributes:
        variant: "gcrl" or "cvae" (the baseline).
        objective: "best_of_k" (official synthetic) or "self_normalised" (the notes' coupled objective).
        z_dim, s_dim: invariant and variant latent sizes (official synthetic: 2 and 2).
        encoder_hidden: widths of both encoders' hidden layers.
        feature_dim: the encoders' output width (official `mlp_latent_dim` = 8).
        mapping_hidden: the `Mapping` heads' widths (official [32, 32]).
        decoder_hidden: widths of the past and future decoders.
        num_envs: mixture components of p(s) (official 5).
        coupling_layers, coupling_hidden: the priors' flows (official 3 layers of width 32).
        num_samples: N, posterior samples for the prior terms (official 10).
        best_k: K, samples of the best-of-K future term (official 20 in training).
        adapt: drop the z-KL term (official fine-tuning).
    """

    variant: str = "gcrl"
    objective: str = "best_of_k"
    z_dim: int = 2
    s_dim: int = 2
    encoder_hidden: tuple[int, ...] = (64, 64)
    feature_dim: int = 16
    mapping_hidden: tuple[int, ...] = (32, 32)
    decoder_hidden: tuple[int, ...] = (64, 64)
    num_envs: int = 5
    coupling_layers: int = 3
    coupling_hidden: tuple[int, ...] = (32,)
    num_samples: int = 10
    best_k: int = 20
    adapt: bool = False

    def __post_init__(self):
        if self.variant not in VARIANTS or self.objective not in OBJECTIVES:
            raise ConfigError(f"variant must be one of {VARIANTS} and objective one of {OBJECTIVES}, got "
                              f"{self.variant!r}, {self.objective!r}")
        if min(self.z_dim, self.s_dim) < 2 and self.variant == "gcrl":
            raise ConfigError("GCRL's coupling priors need z_dim, s_dim >= 2")


class _Nets:
    """The networks of one configuration, as flax modules used through init/apply (built once per config)."""

    def __init__(self, cfg: Config, past_len: int, future_len: int):
        self.cfg, self.past_len, self.future_len = cfg, past_len, future_len
        self.invariant = MLP(cfg.encoder_hidden + (cfg.feature_dim,))
        self.pair = MLP(cfg.encoder_hidden + (cfg.feature_dim,))
        self.to_z = MLP(cfg.mapping_hidden + (2 * cfg.z_dim,))
        self.to_s = MLP(cfg.mapping_hidden + (2 * cfg.s_dim,))
        self.future = MLP(cfg.decoder_hidden + (2 * future_len,))
        self.past = MLP(cfg.decoder_hidden + (2 * past_len,))
        self.flow_z = CouplingFlow(cfg.z_dim, cfg.coupling_layers, cfg.coupling_hidden)
        self.flow_s = CouplingFlow(cfg.s_dim, cfg.coupling_layers, cfg.coupling_hidden)


def _inputs(past: Float[Array, "t 2"], neighbours: Padded, features: Array | None = None) -> tuple[Array, Array]:
    """(invariant input [4T (+TF)], per-neighbour pair inputs [N, 4T (+TF)]) of one example; padded rows are masked
    later. `features` [T, F] (optional extra per-step observed inputs of the focal agent, e.g. the ETH/UCY
    robustness test's confidence channel) is appended to both encoders' inputs, never reconstructed."""
    flat = past.reshape(-1)
    others = neighbours.values.reshape(neighbours.values.shape[0], flat.shape[0])  # [N, 2T]
    pooled = masked_mean(others, neighbours.mask)  # the neighbours' mean past
    own = flat if features is None else jnp.concatenate([flat, features.reshape(-1)])
    pair = jnp.concatenate([others - flat[None], jnp.broadcast_to(own, (others.shape[0], own.shape[0]))], axis=-1)
    return jnp.concatenate([own, pooled]), pair


def _gaussian(head: Array) -> DiagNormal:
    mean, log_variance = jnp.split(head, 2, axis=-1)
    return DiagNormal.from_log_variance(mean, jnp.clip(log_variance, *LOG_VARIANCE_RANGE))


def _posteriors(nets: _Nets, params, past: Array, neighbours: Padded,
                features: Array | None = None) -> tuple[DiagNormal, DiagNormal]:
    """q(z|x) and q(s|x) of one example."""
    invariant_in, pair_in = _inputs(past, neighbours, features)
    h_z = nets.invariant.apply(params["invariant"]["encoder"], invariant_in)
    h_s = masked_mean(nets.pair.apply(params["variant"]["encoder"], pair_in), neighbours.mask)
    return (_gaussian(nets.to_z.apply(params["invariant"]["to_z"], jax.nn.relu(h_z))),
            _gaussian(nets.to_s.apply(params["variant"]["to_s"], jax.nn.relu(h_s))))


def _standard_normal_log_prob(x: Array) -> Array:
    return DiagNormal(jnp.zeros_like(x), jnp.ones_like(x)).log_prob(x)


def prior_log_probs(nets: _Nets, params, z: Float[Array, "n dz"], s: Float[Array, "n ds"]) -> tuple[Array, Array]:
    """(log p(z), log p(s)) per sample: the flow priors and the environment mixture for GCRL, N(0, I) for the CVAE."""
    if nets.cfg.variant == "cvae":
        return _standard_normal_log_prob(z), _standard_normal_log_prob(s)
    u, log_det_z = nets.flow_z.apply(params["invariant"]["flow"], z)
    log_pz = _standard_normal_log_prob(u) + log_det_z
    v, log_det_s = nets.flow_s.apply(params["variant"]["flow"], s)
    e = jnp.arange(nets.cfg.num_envs, dtype=s.dtype)[:, None]  # component e: N(e 1, (e + 1) I), as `VCRL.ps`
    component = DiagNormal(jnp.broadcast_to(e, (e.shape[0], s.shape[-1])),
                           jnp.broadcast_to(jnp.sqrt(e + 1.0), (e.shape[0], s.shape[-1])))
    log_components = component.log_prob(v[:, None, :])  # [n, E]
    log_pi = jax.nn.log_softmax(params["variant"]["logits"])
    log_ps = jax.nn.logsumexp(log_components + log_pi[None], axis=-1) + log_det_s
    return log_pz, log_ps


def _decode(nets: _Nets, params, part: str, z: Array, s: Array, length: int) -> Array:
    out = getattr(nets, part).apply(params["decoder"][part], jnp.concatenate([z, s], axis=-1))
    return out.reshape(out.shape[:-1] + (length, 2))


def example_loss(nets: _Nets, params, example: dict, key: jax.Array) -> tuple[Array, dict[str, Array]]:
    """-J of one example (module docstring), with its terms; `example` holds `past` [8, 2], `future` [12, 2] and
    `neighbours` Padded([N, 8, 2], [N])."""
    cfg = nets.cfg
    q_z, q_s = _posteriors(nets, params, example["past"], example["neighbours"], example.get("features"))
    n_key, k_key = jax.random.split(key)
    z_key, s_key = jax.random.split(n_key)
    z, s = q_z.sample(z_key, (cfg.num_samples,)), q_s.sample(s_key, (cfg.num_samples,))  # [N, d]
    log_pz, log_ps = prior_log_probs(nets, params, z, s)
    kl_z, kl_s = q_z.log_prob(z) - log_pz, q_s.log_prob(s) - log_ps  # [N], single-sample KL estimates
    kl_z = jnp.zeros_like(kl_z) if cfg.adapt else kl_z
    if cfg.variant == "gcrl":
        past_error = jnp.sum(jnp.square(_decode(nets, params, "past", z, s, nets.past_len) - example["past"][None]),
                             axis=(-2, -1))
    else:
        past_error = jnp.zeros_like(kl_z)
    prior_terms = past_error + kl_z + kl_s  # [N]
    if cfg.objective == "best_of_k":
        zk_key, sk_key = jax.random.split(k_key)
        zk, sk = q_z.sample(zk_key, (cfg.best_k,)), q_s.sample(sk_key, (cfg.best_k,))
        error = jnp.sum(jnp.square(_decode(nets, params, "future", zk, sk, nets.future_len) - example["future"][None]),
                        axis=(-2, -1))  # [K]
        future = jnp.min(error)
        weights = jnp.full_like(prior_terms, 1.0 / cfg.num_samples)
    else:
        log_py = -jnp.sum(jnp.square(_decode(nets, params, "future", z, s, nets.future_len) - example["future"][None]),
                          axis=(-2, -1))  # [N]
        future = -(jax.nn.logsumexp(log_py) - jnp.log(cfg.num_samples))  # -log q_hat(y|x)
        weights = jax.nn.softmax(log_py)
    terms = {"future": future, "past": jnp.sum(weights * past_error), "kl_z": jnp.sum(weights * kl_z),
             "kl_s": jnp.sum(weights * kl_s)}
    return future + jnp.sum(weights * prior_terms), terms


def _examples(batch: dict) -> dict:
    keys = ("past", "future", "neighbours") + (("features",) if "features" in batch else ())
    return {k: batch[k] for k in keys}


def make(cfg: Config, past_len: int = 8, future_len: int = 12) -> Method:
    """GCRL or its CVAE baseline as a `Method`: `loss` is the mean of `example_loss` over the batch."""
    nets = _Nets(cfg, past_len, future_len)

    def init(key, batch):
        example = jax.tree.map(lambda x: x[0], _examples(batch))
        invariant_in, pair_in = _inputs(example["past"], example["neighbours"], example.get("features"))
        keys = iter(jax.random.split(key, 8))
        latent = jnp.zeros((cfg.z_dim,)), jnp.zeros((cfg.s_dim,))
        both = jnp.concatenate(latent)
        params = {
            "invariant": {"encoder": nets.invariant.init(next(keys), invariant_in),
                          "to_z": nets.to_z.init(next(keys), jnp.zeros((cfg.feature_dim,)))},
            "variant": {"encoder": nets.pair.init(next(keys), pair_in),
                        "to_s": nets.to_s.init(next(keys), jnp.zeros((cfg.feature_dim,)))},
            "decoder": {"future": nets.future.init(next(keys), both)},
        }
        if cfg.variant == "gcrl":
            params["invariant"]["flow"] = nets.flow_z.init(next(keys), latent[0])
            params["variant"]["flow"] = nets.flow_s.init(next(keys), latent[1])
            params["variant"]["logits"] = -jnp.ones((cfg.num_envs,))
            params["decoder"]["past"] = nets.past.init(next(keys), both)
        return params

    def loss(params, batch, key, step):
        del step
        examples = _examples(batch)
        keys = jax.random.split(key, examples["past"].shape[0])
        per_example, terms = jax.vmap(lambda e, k: example_loss(nets, params, e, k))(examples, keys)
        prefix = cfg.variant
        return jnp.mean(per_example), {f"{prefix}/{name}": jnp.mean(v) for name, v in terms.items()}

    return Method(init=init, loss=loss)


def predict(cfg: Config, params, batch: dict, key: jax.Array, num_samples: int,
            future_len: int = 12) -> Float[Array, "k b t 2"]:
    """`num_samples` futures per example, `[K, B, T, 2]`: (z, s) ~ q(z|x) q(s|x), decoded (official `VCRL.forward`
    at test time)."""
    nets = _Nets(cfg, batch["past"].shape[1], future_len)
    examples = _examples(batch)
    keys = jax.random.split(key, examples["past"].shape[0])

    def one(example, k):
        q_z, q_s = _posteriors(nets, params, example["past"], example["neighbours"], example.get("features"))
        z_key, s_key = jax.random.split(k)
        z, s = q_z.sample(z_key, (num_samples,)), q_s.sample(s_key, (num_samples,))
        return _decode(nets, params, "future", z, s, future_len)  # [K, T, 2]

    return jnp.swapaxes(jax.vmap(one)(examples, keys), 0, 1)


def trainable(cfg: Config) -> Callable[[tuple[str, ...]], bool]:
    """Which parameters low-shot adaptation trains: GCRL everything but the invariant branch (encoder, q(z|x)
    head, p(z) flow: official `train.py`, `--finetune all`); the CVAE baseline everything."""
    if cfg.variant == "cvae":
        return lambda path: True
    return lambda path: path[0] != "invariant"
