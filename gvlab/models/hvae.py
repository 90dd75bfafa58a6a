"""Two-level Markovian hierarchical VAE (the MHVAE of Dang et al., ICLR 2024, Sec. 4), on the VAE skeleton's parts.

    q(z1|x)  = N(e1(x), diag s1(x)^2),      q(z2|z1) = N(e2(z1), diag s2(z1)^2)     (each scale learned or fixed)
    p(z2)    = N(0, prior_std^2 I),         p(z1|z2) = N(d2(z2), latent_decoder_std^2 I),
    p(x|z1)  = N(d1(z1), decoder_std^2 I) or Bernoulli(logits = d1(z1)).

The negative ELBO, with beta_1 and beta_2 weighting the two levels (Dang et al., Eq. 5), is

    -E_q log p(x|z1) + beta_1 E_q[log q(z1|x) - log p(z1|z2)] + beta_2 E_q KL(q(z2|z1) || p(z2)).

z1 and z2 are drawn once by reparameterisation; the entropy of q(z1|x) and the second-level KL are in closed form,
the cross term log p(z1|z2) is a one-sample estimate (z2 depends on z1, so KL(q(z1|x) || p(z1|z2)) at a sampled
z2 would be biased). The per-dimension terms go through the regulariser hook (`weighted_kl` with beta_1 on z1's
dimensions and beta_2 on z2's), so `elbo/recon`, `elbo/kl`, `elbo/elbo` mean what they do for the VAE, and
`hvae/kl1`, `hvae/kl2` report the levels. With `hidden = ()` and `activation = "identity"` it is the linear
MHVAE of the collapse theory (`gvlab.collapse.hvae_optimum`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gvlab.dists import Bernoulli, DiagNormal, kl_divergence
from gvlab.losses.elbo import elbo_loss, weighted_kl
from gvlab.nn import MLP
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.config import check_sizes

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Two-level MHVAE.

    Attributes:
        latent_dims: (d1, d2).
        hidden: widths of every MLP's hidden layers (`()`: linear maps).
        activation: nonlinearity name (`"identity"` for the linear model).
        likelihood: `"gaussian"` (scale `decoder_std`) or `"bernoulli"`.
        beta1, beta2: weights of the first- and second-level KL terms.
        encoder1_variance, encoder2_variance: `"learned"` or `"fixed"` per level (Sigma_1, Sigma_2 in the paper).
        encoder1_std, encoder2_std: the fixed scales.
        prior_std: eta_enc, the scale of p(z2).
        decoder_std: eta_dec of p(x|z1) (Gaussian likelihood).
        latent_decoder_std: eta_dec of p(z1|z2).
    """

    latent_dims: tuple[int, int] = (8, 8)
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"
    beta1: float = 1.0
    beta2: float = 1.0
    encoder1_variance: Literal["learned", "fixed"] = "learned"
    encoder2_variance: Literal["learned", "fixed"] = "learned"
    encoder1_std: float = 1.0
    encoder2_std: float = 1.0
    prior_std: float = 1.0
    decoder_std: float = 1.0
    latent_decoder_std: float = 1.0

    def __post_init__(self):
        check_sizes(self, "latent_dims", "hidden")


class HVAEModel(NamedTuple):
    """Pure functions of a two-level MHVAE.

    Attributes:
        init: `(key, batch) -> params`.
        encode1: `(params, x [B, *data]) -> q(z1|x)`;  encode2: `(params, z1) -> q(z2|z1)`.
        decode1: `(params, z1) -> p(x|z1)`;  decode2: `(params, z2) -> p(z1|z2)`;  prior: p(z2).
        terms: `(params, x, key) -> (recon [B], kl_per_dim [B, d1 + d2], (z1, z2))` one-sample ELBO terms.
        log_weights: `(params, x, key, K) -> [K, B]` log p(x, z1, z2) - log q(z1, z2|x) for K draws.
    """

    init: Callable[[PRNGKey, Batch], Params]
    encode1: Callable[[Params, jax.Array], DiagNormal]
    encode2: Callable[[Params, jax.Array], DiagNormal]
    decode1: Callable[[Params, jax.Array], object]
    decode2: Callable[[Params, jax.Array], DiagNormal]
    prior: DiagNormal
    terms: Callable[[Params, jax.Array, PRNGKey], tuple]
    log_weights: Callable[[Params, jax.Array, PRNGKey, int], jax.Array]


def _gaussian_head(net: MLP, params: Params, inputs: jax.Array, variance: str, fixed_std: float) -> DiagNormal:
    out = net.apply(params, inputs)
    if variance == "fixed":
        return DiagNormal(out, jnp.full_like(out, fixed_std))
    loc, log_var = jnp.split(out, 2, axis=-1)
    return DiagNormal(loc, jnp.exp(0.5 * log_var))


def make_model(cfg: Config, data_shape: tuple[int, ...]) -> HVAEModel:
    """The MHVAE's pure functions for data of `data_shape` (`(16,)` vectors, `(8, 8)` images...)."""
    for name in ("encoder1_std", "encoder2_std", "prior_std", "decoder_std", "latent_decoder_std"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    d1, d2 = cfg.latent_dims
    pixels = math.prod(data_shape)
    hidden = tuple(cfg.hidden)
    out1 = d1 * (2 if cfg.encoder1_variance == "learned" else 1)
    out2 = d2 * (2 if cfg.encoder2_variance == "learned" else 1)
    nets = {"encoder1": MLP(hidden + (out1,), cfg.activation), "encoder2": MLP(hidden + (out2,), cfg.activation),
            "decoder2": MLP(hidden + (d1,), cfg.activation), "decoder1": MLP(hidden + (pixels,), cfg.activation)}
    flat = lambda x: x.reshape(x.shape[: x.ndim - len(data_shape)] + (pixels,))  # noqa: E731
    prior = DiagNormal(jnp.zeros((d2,)), jnp.full((d2,), cfg.prior_std))

    def init(key: PRNGKey, batch: Batch) -> Params:
        x = flat(batch["x"][:1])
        inputs = {"encoder1": x, "encoder2": jnp.zeros((1, d1), x.dtype), "decoder2": jnp.zeros((1, d2), x.dtype),
                  "decoder1": jnp.zeros((1, d1), x.dtype)}
        keys = jax.random.split(key, len(nets))
        return {name: net.init(k, inputs[name]) for k, (name, net) in zip(keys, nets.items())}

    def encode1(params: Params, x: jax.Array) -> DiagNormal:
        return _gaussian_head(nets["encoder1"], params["encoder1"], flat(x), cfg.encoder1_variance, cfg.encoder1_std)

    def encode2(params: Params, z1: jax.Array) -> DiagNormal:
        return _gaussian_head(nets["encoder2"], params["encoder2"], z1, cfg.encoder2_variance, cfg.encoder2_std)

    def decode2(params: Params, z2: jax.Array) -> DiagNormal:
        loc = nets["decoder2"].apply(params["decoder2"], z2)
        return DiagNormal(loc, jnp.full_like(loc, cfg.latent_decoder_std))

    def decode1(params: Params, z1: jax.Array):
        out = nets["decoder1"].apply(params["decoder1"], z1).reshape(z1.shape[:-1] + tuple(data_shape))
        if cfg.likelihood == "bernoulli":
            return Bernoulli(out, event_ndims=len(data_shape))
        return DiagNormal(out, jnp.full_like(out, cfg.decoder_std), event_ndims=len(data_shape))

    def terms(params: Params, x: jax.Array, key: PRNGKey):
        k1, k2 = jax.random.split(key)
        q1 = encode1(params, x)
        z1 = q1.sample(k1)
        q2 = encode2(params, z1)
        z2 = q2.sample(k2)
        p1 = decode2(params, z2)
        # E log q(z1|x) per dimension is minus the entropy, -(log s + log sqrt(2 pi e)); the cross term is sampled.
        kl1 = -(jnp.log(q1.scale) + _HALF_LOG_2PI_E) - DiagNormal(p1.loc, p1.scale, event_ndims=0).log_prob(z1)
        kl2 = kl_divergence(DiagNormal(q2.loc, q2.scale, event_ndims=0),
                            DiagNormal(jnp.broadcast_to(prior.loc, z2.shape), jnp.broadcast_to(prior.scale, z2.shape),
                                       event_ndims=0))
        recon = decode1(params, z1).log_prob(x)
        return recon, jnp.concatenate([kl1, kl2], axis=-1), (z1, z2)

    def log_weights(params: Params, x: jax.Array, key: PRNGKey, num_samples: int) -> jax.Array:
        q1 = encode1(params, x)  # shared by the K draws (it depends on x only)

        def one(k):
            k1, k2 = jax.random.split(k)
            z1 = q1.sample(k1)
            q2 = encode2(params, z1)
            z2 = q2.sample(k2)
            log_p = decode1(params, z1).log_prob(x) + decode2(params, z2).log_prob(z1) + prior.log_prob(z2)
            return log_p - q1.log_prob(z1) - q2.log_prob(z2)

        return jax.vmap(one)(jax.random.split(key, num_samples))

    return HVAEModel(init=init, encode1=encode1, encode2=encode2, decode1=decode1, decode2=decode2, prior=prior,
                     terms=terms, log_weights=log_weights)


def make(cfg: Config, data_shape: tuple[int, ...]) -> Method:
    """The MHVAE as a `Method`: beta_1 / beta_2-weighted negative ELBO; `sample` decodes ancestral draws."""
    model = make_model(cfg, data_shape)
    d1, d2 = cfg.latent_dims
    regulariser = weighted_kl(jnp.concatenate([jnp.full((d1,), cfg.beta1), jnp.full((d2,), cfg.beta2)]))

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        recon, kl_per_dim, (z1, z2) = model.terms(params, batch["x"], key)
        value, metrics = elbo_loss(recon, kl_per_dim, jnp.concatenate([z1, z2], axis=-1), step, regulariser)
        metrics["hvae/kl1"] = jnp.mean(jnp.sum(kl_per_dim[:, :d1], axis=-1))
        metrics["hvae/kl2"] = jnp.mean(jnp.sum(kl_per_dim[:, d1:], axis=-1))
        return value, metrics

    def sample(params: Params, key: PRNGKey, num: int) -> jax.Array:
        k2, k1 = jax.random.split(key)
        z2 = model.prior.sample(k2, (num,))
        z1 = model.decode2(params, z2).sample(k1)
        return model.decode1(params, z1).mean()

    return Method(init=model.init, loss=loss, sample=sample)
