"""Variational RNN (Chung et al., NeurIPS 2015): a GRU state with a latent per step and an encoder.

For t = 1..T with h_0 = 0 and feature maps phi_x, phi_z (one tanh layer each):

    prior      p(z_t | h_{t-1})        = N(mu_0, sigma_0),   [mu_0, log sigma_0] = MLP(h_{t-1})
    encoder    q(z_t | x_t, h_{t-1})   = N(mu_z, sigma_z),   [mu_z, log sigma_z] = MLP(phi_x(x_t), h_{t-1})
    decoder    p(x_t | z_t, h_{t-1})   = N(mu_x, sigma_x),   mu_x = tanh(MLP(phi_z(z_t), h_{t-1})), sigma_x learned
    recurrence h_t = GRU(h_{t-1}, [phi_x(x_t), phi_z(z_t)])

and the per-sequence bound sum_t [log p(x_t | z_t, h_{t-1}) - KL(q_t || p_t)] with one
reparameterised sample of z_t ~ q. The KL is the closed form of `gvlab.dists.kl_divergence`.

Prediction (the baseline of Ahmadi & Tani 2019): filter through the observed steps with the encoder's
means, then roll the prior forward, feeding back the decoder means as observations.

`make(cfg, x_dim)` returns the `Method` (batches `{"x": [B, T, D_x]}`, extra keys ignored); `make_model` exposes
`trace` (every per-step distribution of a sequence), `predict` and free `generate`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.dists import DiagNormal, kl_divergence
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.config import check_sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """VRNN sizes.

    Attributes:
        hidden: GRU state size (and the width of the prior, encoder and decoder hidden layers).
        latent: size of z_t.
        features: width of phi_x and phi_z.
        min_log_scale: floor of the decoder's log sigma_x (keeps the likelihood bounded on near-noiseless data).
        generate_length: steps of free generation returned by `Method.sample`.
    """

    hidden: int = 24
    latent: int = 2
    features: int = 16
    min_log_scale: float = -5.0
    generate_length: int = 96

    def __post_init__(self):
        check_sizes(self, "hidden", "latent", "features", "generate_length")


class Trace(NamedTuple):
    """Per-step distributions of one sequence (leading axis T)."""

    prior: DiagNormal  # p(z_t | h_{t-1}), [T, z]
    posterior: DiagNormal  # q(z_t | x_t, h_{t-1}), [T, z]
    likelihood: DiagNormal  # p(x_t | z_t, h_{t-1}), [T, D_x]
    z: Array  # [T, z]
    h: Array  # h_t after step t, [T, hidden]


class VRNNModel(NamedTuple):
    """VRNN as pure per-sequence functions (see `make_model`)."""

    init: Callable[[PRNGKey, Batch], Params]
    trace: Callable[..., Trace]
    sequence_terms: Callable[..., dict]
    predict: Callable[..., Array]
    generate: Callable[..., Array]


def _linear(key, fan_in: int, fan_out: int) -> dict:
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(float(fan_in)), "b": jnp.zeros((fan_out,))}


def _apply(layer: dict, x: Array) -> Array:
    """x @ w + b for one step or a whole sequence (the bias broadcast explicitly: rank promotion raises)."""
    y = x @ layer["w"]
    return y + jnp.broadcast_to(layer["b"], y.shape)


def make_model(cfg: Config, x_dim: int = 1) -> VRNNModel:
    """The VRNN's functions, unbatched (vmap over sequences).

    * `init(key, batch) -> params`.
    * `trace(params, x [T, D_x], key, sample=True) -> Trace`: one filtering pass (`sample=False`: z_t = mu_z).
    * `sequence_terms(params, x, key) -> {"recon", "kl", "elbo"}`: per-sequence sums over time.
    * `predict(params, x [T, D_x], ends [P], horizon) -> [P, horizon, D_x]`: for each `e` in `ends`, filter
      through `x[:e]` (encoder means) and roll the prior means `horizon` steps.
    * `generate(params, key, steps) -> [steps, D_x]`: free generation (z_t sampled from the prior, decoder
      means fed back as observations).
    """
    hidden, latent, features = cfg.hidden, cfg.latent, cfg.features

    def init(key: PRNGKey, batch: Batch) -> Params:
        del batch
        k = jax.random.split(key, 10)
        gru_in = 2 * features + hidden
        return {
            "phi_x": _linear(k[0], x_dim, features),
            "phi_z": _linear(k[1], latent, features),
            "prior": {"hidden": _linear(k[2], hidden, hidden), "out": _linear(k[3], hidden, 2 * latent)},
            "encoder": {"hidden": _linear(k[4], features + hidden, hidden), "out": _linear(k[5], hidden, 2 * latent)},
            "decoder": {"hidden": _linear(k[6], features + hidden, hidden), "out": _linear(k[7], hidden, x_dim)},
            "gru": {"gates": _linear(k[8], gru_in, 2 * hidden), "candidate": _linear(k[9], gru_in, hidden)},
            "log_scale": jnp.full((x_dim,), -1.0),
        }

    def gaussian_head(head, inputs) -> DiagNormal:
        out = _apply(head["out"], jnp.tanh(_apply(head["hidden"], inputs)))
        mean, log_scale = jnp.split(out, 2, axis=-1)
        return DiagNormal(mean, jnp.exp(log_scale))

    def prior(params, h) -> DiagNormal:
        return gaussian_head(params["prior"], h)

    def decode(params, z, h) -> DiagNormal:
        inputs = jnp.concatenate([jnp.tanh(_apply(params["phi_z"], z)), h], axis=-1)
        mean = jnp.tanh(_apply(params["decoder"]["out"], jnp.tanh(_apply(params["decoder"]["hidden"], inputs))))
        scale = jnp.exp(jnp.maximum(params["log_scale"], cfg.min_log_scale))
        return DiagNormal(mean, jnp.broadcast_to(scale, mean.shape))

    def features_x(params, x):
        return jnp.tanh(_apply(params["phi_x"], x))

    def recur(params, h, phi_x, z):
        u = jnp.concatenate([phi_x, jnp.tanh(_apply(params["phi_z"], z))], axis=-1)
        gates = jax.nn.sigmoid(_apply(params["gru"]["gates"], jnp.concatenate([u, h], axis=-1)))
        reset, keep = jnp.split(gates, 2, axis=-1)
        candidate = jnp.tanh(_apply(params["gru"]["candidate"], jnp.concatenate([u, reset * h], axis=-1)))
        return (1.0 - keep) * h + keep * candidate

    def trace(params, x, key, sample=True) -> Trace:
        # Only the encoder, the sample and the GRU need the running state; phi_x, the prior and the decoder
        # are computed for the whole sequence at once (fewer small kernels inside the loop).
        phi_x = features_x(params, x)
        eps = jax.random.normal(key, (x.shape[0], latent)) if sample else jnp.zeros((x.shape[0], latent))

        def step(h, inputs):
            phi_x_t, eps_t = inputs
            q = gaussian_head(params["encoder"], jnp.concatenate([phi_x_t, h], axis=-1))
            z = q.loc + q.scale * eps_t
            return recur(params, h, phi_x_t, z), (q.loc, q.scale, z, h)

        _, (q_loc, q_scale, z, h_before) = jax.lax.scan(step, jnp.zeros((hidden,)), (phi_x, eps))
        h_after = jnp.concatenate([h_before[1:], recur(params, h_before[-1], phi_x[-1], z[-1])[None]], axis=0)
        return Trace(prior(params, h_before), DiagNormal(q_loc, q_scale), decode(params, z, h_before), z, h_after)

    def sequence_terms(params, x, key) -> dict:
        tr = trace(params, x, key)
        recon = jnp.sum(tr.likelihood.log_prob(x))
        kl = jnp.sum(kl_divergence(tr.posterior, tr.prior))
        mse = jnp.mean(jnp.square(tr.likelihood.mean() - x))
        return {"recon": recon, "kl": kl, "elbo": recon - kl, "mse": mse}

    def rollout(params, h, horizon):
        def step(h, _):
            z = prior(params, h).mean()
            x_hat = decode(params, z, h).mean()
            return recur(params, h, features_x(params, x_hat), z), x_hat

        return jax.lax.scan(step, h, None, length=horizon)[1]

    def predict(params, x, ends, horizon) -> Array:
        states = trace(params, x, jax.random.key(0), sample=False).h  # key unused without sampling
        h_before = jnp.concatenate([jnp.zeros((1, hidden)), states], axis=0)  # h_before[e] = h after e steps
        return jax.vmap(lambda e: rollout(params, h_before[e], horizon))(ends)

    def generate(params, key, steps) -> Array:
        def step(h, key_t):
            z = prior(params, h).sample(key_t)
            x_hat = decode(params, z, h).mean()
            return recur(params, h, features_x(params, x_hat), z), x_hat

        return jax.lax.scan(step, jnp.zeros((hidden,)), jax.random.split(key, steps))[1]

    return VRNNModel(init=init, trace=trace, sequence_terms=sequence_terms, predict=predict, generate=generate)


def make(cfg: Config, x_dim: int = 1) -> Method:
    """The VRNN as a `Method`: loss = mean over the batch of -ELBO per sequence.

    Terms (means over the batch of per-sequence sums over time): `vrnn/recon` (log-likelihood), `vrnn/kl`,
    `vrnn/elbo`, and `vrnn/mse` (squared error of the decoder mean per step and dimension).
    """
    model = make_model(cfg, x_dim)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        del step
        x = batch["x"]
        keys = jax.random.split(key, x.shape[0])
        terms = jax.vmap(model.sequence_terms, in_axes=(None, 0, 0))(params, x, keys)
        terms = {name: jnp.mean(value) for name, value in terms.items()}
        return -terms["elbo"], {f"vrnn/{name}": value for name, value in terms.items()}

    def sample(params: Params, key: PRNGKey, num: int) -> Float[Array, "num T D"]:
        return jax.vmap(lambda k: model.generate(params, k, cfg.generate_length))(jax.random.split(key, num))

    return Method(init=model.init, loss=loss, sample=sample)
