"""Gaussian-latent VAE on images (Kingma & Welling 2014), with a Bernoulli or Gaussian likelihood.

    q(z|x) = N(mu(x), diag sigma(x)^2),   p(z) = N(0, I),
    p(x|z) = Bernoulli(logits = f(z))               (binary images), or
    p(x|z) = N(f(z), diag s^2), s a learned per-pixel scale   (continuous images on [0, 1]).

Training minimises `-E_q[log p(x|z)] + beta * KL(q(z|x) || p(z))` (beta = 1: the ELBO; beta-VAE of Higgins et
al. 2017 otherwise) with one reparameterised sample. `make(cfg, image_shape)` returns the `Method`;
`make_model(cfg, image_shape)` also exposes the encoder, decoder and the per-example ELBO/IWAE evaluators.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gvlab.dists import Bernoulli, DiagNormal
from gvlab.losses.elbo import beta_kl, elbo_loss, gaussian_elbo, log_importance_weights
from gvlab.nn import MLP, ConvDecoder, ConvEncoder
from gvlab.types import Batch, Method, Params, PRNGKey

# The decoder's Gaussian scale is bounded below: on data with constant pixels an unbounded scale would let the
# likelihood grow without limit (dequantised data makes the true density bounded, so the floor is never binding
# at the optimum, only early in training).
MIN_LOG_SCALE = -7.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """VAE architecture.

    Attributes:
        latent_dim: dimension of z.
        hidden: MLP widths (encoder; the decoder mirrors them), or conv channels for `architecture="conv"`.
        likelihood: `"bernoulli"` for binary pixels, `"gaussian"` for continuous pixels.
        architecture: `"mlp"` on flattened pixels or `"conv"` (strided convolutions).
        activation: nonlinearity name (see `gvlab.nn.ACTIVATIONS`).
        beta: weight of the KL term in the training loss (1.0: the ELBO).
    """

    latent_dim: int = 8
    hidden: tuple[int, ...] = (128, 128)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    architecture: Literal["mlp", "conv"] = "mlp"
    activation: str = "relu"
    beta: float = 1.0


class VAEModel(NamedTuple):
    """The parts of a VAE as pure functions of `params`.

    Attributes:
        init: `(key, batch) -> params`.
        encode: `(params, x [B, *image]) -> q(z|x)` (DiagNormal `[B, D]`).
        decode: `(params, z [..., B, D]) -> p(x|z)` (event over the image axes).
        elbo: `(params, x, key) -> [B]` one-sample ELBO per example (unbiased; average over keys to reduce noise).
        log_weights: `(params, x, key, K) -> [K, B]` importance log-weights; `iwae_bound` turns them into IWAE_K.
    """

    init: Callable[[PRNGKey, Batch], Params]
    encode: Callable[[Params, jax.Array], DiagNormal]
    decode: Callable[[Params, jax.Array], object]
    elbo: Callable[[Params, jax.Array, PRNGKey], jax.Array]
    log_weights: Callable[[Params, jax.Array, PRNGKey, int], jax.Array]


def _networks(cfg: Config, image_shape: tuple[int, ...]):
    pixels = 1
    for size in image_shape:
        pixels *= size
    if cfg.architecture == "mlp":
        encoder = MLP(tuple(cfg.hidden) + (2 * cfg.latent_dim,), cfg.activation)
        decoder = MLP(tuple(reversed(cfg.hidden)) + (pixels,), cfg.activation)
        to_input = lambda x: x.reshape(x.shape[: x.ndim - len(image_shape)] + (pixels,))  # noqa: E731
    else:
        if len(image_shape) != 2:
            raise ValueError(f"conv VAE expects [H, W] images, got image shape {image_shape}")
        encoder = ConvEncoder(tuple(cfg.hidden), 2 * cfg.latent_dim, cfg.activation)
        decoder = ConvDecoder((*image_shape, 1), tuple(reversed(cfg.hidden)), cfg.activation)
        to_input = lambda x: x[..., None]  # noqa: E731
    return encoder, decoder, to_input


def make_model(cfg: Config, image_shape: tuple[int, ...]) -> VAEModel:
    """Build the VAE's pure functions for images of `image_shape` (e.g. `(8, 8)`)."""
    encoder, decoder, to_input = _networks(cfg, image_shape)
    event_ndims = len(image_shape)
    prior = DiagNormal(jnp.zeros((cfg.latent_dim,)), jnp.ones((cfg.latent_dim,)))

    def init(key: PRNGKey, batch: Batch) -> Params:
        enc_key, dec_key = jax.random.split(key)
        x = batch["x"][:1]
        params = {
            "encoder": encoder.init(enc_key, to_input(x)),
            "decoder": decoder.init(dec_key, jnp.zeros((1, cfg.latent_dim), x.dtype)),
        }
        if cfg.likelihood == "gaussian":
            params["log_scale"] = jnp.full(image_shape, -1.0, x.dtype)
        return params

    def encode(params: Params, x: jax.Array) -> DiagNormal:
        out = encoder.apply(params["encoder"], to_input(x))
        loc, log_var = jnp.split(out, 2, axis=-1)
        return DiagNormal(loc, jnp.exp(0.5 * log_var))

    def decode(params: Params, z: jax.Array):
        out = decoder.apply(params["decoder"], z)
        out = out.reshape(z.shape[:-1] + tuple(image_shape))
        if cfg.likelihood == "bernoulli":
            return Bernoulli(out, event_ndims=event_ndims)
        scale = jnp.exp(jnp.maximum(params["log_scale"], MIN_LOG_SCALE))
        return DiagNormal(out, jnp.broadcast_to(scale, out.shape), event_ndims=event_ndims)

    def elbo(params: Params, x: jax.Array, key: PRNGKey) -> jax.Array:
        recon, kl_per_dim, _ = gaussian_elbo(key, x, encode(params, x), prior, lambda z: decode(params, z))
        return recon - jnp.sum(kl_per_dim, axis=-1)

    def log_weights(params: Params, x: jax.Array, key: PRNGKey, num_samples: int) -> jax.Array:
        return log_importance_weights(key, x, encode(params, x), prior, lambda z: decode(params, z), num_samples)

    return VAEModel(init=init, encode=encode, decode=decode, elbo=elbo, log_weights=log_weights)


def make(cfg: Config, image_shape: tuple[int, ...]) -> Method:
    """The VAE as a `Method`: loss = -recon + beta * KL; `sample` returns decoder means of prior draws."""
    model = make_model(cfg, image_shape)
    prior_dim = cfg.latent_dim
    regulariser = beta_kl(cfg.beta)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array):
        x = batch["x"]
        posterior = model.encode(params, x)
        prior = DiagNormal(jnp.zeros((prior_dim,), x.dtype), jnp.ones((prior_dim,), x.dtype))
        recon, kl_per_dim, z = gaussian_elbo(key, x, posterior, prior, lambda z: model.decode(params, z))
        return elbo_loss(recon, kl_per_dim, z, step, regulariser)

    def sample(params: Params, key: PRNGKey, num: int) -> jax.Array:
        z = jax.random.normal(key, (num, prior_dim))
        return model.decode(params, z).mean()

    return Method(init=model.init, loss=loss, sample=sample)

