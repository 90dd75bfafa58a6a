"""The VAE skeleton: unconditional VAE, beta-VAE and conditional VAE (CVAE) with a Gaussian latent.

    recognition q(z|x, c) = N(mu(x, c), diag sigma(x, c)^2)     (sigma learned, or fixed to `encoder_std`)
    prior       p(z|c)    = N(0, prior_std^2 I)                  (`prior="standard"`), or
                p(z|c)    = N(mu_p(c), diag sigma_p(c)^2)        (`prior="learned"`, Sohn et al. 2015)
    generator   p(x|c, z) = Bernoulli(logits = f(z, c))  or  N(f(z, c), diag s^2) (s learned per pixel, or fixed)

With no condition (`condition_dim = 0`) this is the VAE of Kingma & Welling (2014). Training minimises

    loss = alpha * [-E_q log p(x|c, z) + R(KL)] - (1 - alpha) * E_{z ~ p(z|c)} log p(x|c, z)

where R is the regulariser hook (`beta * KL` by default: the ELBO at beta = 1, the beta-VAE of Higgins et al. 2017
or the KL-weighted CVAE otherwise) and alpha < 1 gives Sohn et al.'s (NeurIPS 2015, Eq. 9) hybrid of the CVAE bound
and the GSNN objective, which trains the prior path that generation uses. Every term is reported: `elbo/recon`,
`elbo/kl`, `elbo/elbo` (always the true bound), the hook's terms and, when alpha < 1, `gsnn/recon`.

Batches hold `"x"` (`[B, *image]`) and, for a CVAE, `"c"` (`[B, condition_dim]`). `make_model` returns the pure
functions (encode, prior, decode, elbo, importance log-weights, generate); `make` the `Method`;
`kl_per_dimension` is the per-run evaluator of posterior collapse (`gvlab.evals`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gvlab.diagnostics import gaussian_kl_per_dimension
from gvlab.dists import Bernoulli, DiagNormal
from gvlab.losses.elbo import Regulariser, beta_kl, elbo_loss, gaussian_elbo, log_importance_weights
from gvlab.nn import MLP, ConvDecoder, ConvEncoder
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.config import check_sizes

# The decoder's Gaussian scale is bounded below: on data with constant pixels an unbounded scale would let the
# likelihood grow without limit (dequantised data makes the true density bounded, so the floor is never binding
# at the optimum, only early in training).
MIN_LOG_SCALE = -7.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """VAE / CVAE architecture and objective.

    Attributes:
        latent_dim: dimension of z.
        hidden: MLP widths (encoder; the decoder mirrors them), or conv channels for `architecture="conv"`.
            `()` with `activation="identity"` gives the linear models of the collapse theory.
        likelihood: `"bernoulli"` for binary pixels, `"gaussian"` for continuous ones.
        architecture: `"mlp"` on flattened pixels or `"conv"` (strided convolutions; unconditional only).
        activation: nonlinearity name (see `gvlab.nn.ACTIVATIONS`).
        beta: weight of the KL term (1.0: the ELBO; the KL-weighted CVAE's w otherwise).
        alpha: weight of the CVAE bound in Sohn's hybrid objective (1.0: plain CVAE; 0.0: GSNN only).
        prior: `"standard"` N(0, prior_std^2 I) or `"learned"` p(z|c) from a prior network.
        prior_std: the standard prior's scale (eta_enc in Dang et al.).
        encoder_variance: `"learned"` (sigma(x, c) from the encoder) or `"fixed"` (sigma = encoder_std).
        encoder_std: the fixed encoder scale.
        decoder_std: fixed scale of a Gaussian likelihood (eta_dec in Dang et al.); None learns one per pixel.
    """

    latent_dim: int = 8
    hidden: tuple[int, ...] = (128, 128)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    architecture: Literal["mlp", "conv"] = "mlp"
    activation: str = "relu"
    beta: float = 1.0
    alpha: float = 1.0
    prior: Literal["standard", "learned"] = "standard"
    prior_std: float = 1.0
    encoder_variance: Literal["learned", "fixed"] = "learned"
    encoder_std: float = 1.0
    decoder_std: float | None = None

    def __post_init__(self):
        check_sizes(self, "latent_dim", "hidden")


class VAEModel(NamedTuple):
    """The parts of a (C)VAE as pure functions of `params`.

    The condition `c` (`[B, condition_dim]`) is a trailing argument that an unconditional VAE leaves out.

    Attributes:
        init: `(key, batch) -> params`.
        encode: `(params, x [B, *image], c) -> q(z|x, c)` (DiagNormal `[B, D]`).
        prior: `(params, c) -> p(z|c)` (DiagNormal broadcastable to `[B, D]`).
        decode: `(params, z [..., B, D], c) -> p(x|c, z)` (event over the image axes).
        elbo: `(params, x, key, c) -> [B]` one-sample ELBO per example.
        log_weights: `(params, x, key, K, c) -> [K, B]` importance log-weights with q as the proposal.
        prior_log_weights: `(params, x, key, K, c) -> [K, B]` log p(x|c, z_k) for z_k ~ p(z|c): the weights
            with the prior as the proposal (Sohn et al.'s estimate from prior samples).
        generate: `(params, key, c) -> [B, *image]` decoder means at z ~ p(z|c).
    """

    init: Callable[[PRNGKey, Batch], Params]
    encode: Callable[..., DiagNormal]
    prior: Callable[..., DiagNormal]
    decode: Callable[..., object]
    elbo: Callable[..., jax.Array]
    log_weights: Callable[..., jax.Array]
    prior_log_weights: Callable[..., jax.Array]
    generate: Callable[..., jax.Array]


def no_condition(x: jax.Array) -> jax.Array:
    """The empty condition `[B, 0]` of an unconditional VAE."""
    return jnp.zeros((x.shape[0], 0), x.dtype)


def _check(cfg: Config, condition_dim: int) -> None:
    if not 0.0 <= cfg.alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (hybrid weight of the CVAE bound), got {cfg.alpha}")
    if cfg.architecture == "conv" and condition_dim:
        raise ValueError("the conv architecture is unconditional; use architecture='mlp' for a CVAE")
    if cfg.alpha < 1.0 and cfg.prior == "standard" and condition_dim == 0:
        raise ValueError("alpha < 1 trains the prior path p(z|c); it needs a condition or prior='learned'")
    for name in ("prior_std", "encoder_std"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.decoder_std is not None and cfg.decoder_std <= 0:
        raise ValueError(f"decoder_std must be positive or None, got {cfg.decoder_std}")


def _networks(cfg: Config, image_shape: tuple[int, ...]):
    pixels = 1
    for size in image_shape:
        pixels *= size
    encoder_out = cfg.latent_dim * (2 if cfg.encoder_variance == "learned" else 1)
    if cfg.architecture == "mlp":
        encoder = MLP(tuple(cfg.hidden) + (encoder_out,), cfg.activation)
        decoder = MLP(tuple(reversed(cfg.hidden)) + (pixels,), cfg.activation)
        to_input = lambda x: x.reshape(x.shape[: x.ndim - len(image_shape)] + (pixels,))  # noqa: E731
    else:
        if len(image_shape) != 2:
            raise ValueError(f"conv VAE expects [H, W] images, got image shape {image_shape}")
        encoder = ConvEncoder(tuple(cfg.hidden), encoder_out, cfg.activation)
        decoder = ConvDecoder((*image_shape, 1), tuple(reversed(cfg.hidden)), cfg.activation)
        to_input = lambda x: x[..., None]  # noqa: E731
    return encoder, decoder, to_input


def make_model(cfg: Config, image_shape: tuple[int, ...], condition_dim: int = 0) -> VAEModel:
    """Build the (C)VAE's pure functions for data of `image_shape` (e.g. `(8, 8)`, or `(16,)` for vectors)."""
    _check(cfg, condition_dim)
    encoder, decoder, to_input = _networks(cfg, image_shape)
    prior_net = MLP(tuple(cfg.hidden) + (2 * cfg.latent_dim,), cfg.activation)
    event_ndims = len(image_shape)
    conv = cfg.architecture == "conv"

    def with_condition(inputs: jax.Array, c: jax.Array) -> jax.Array:
        if conv:  # unconditional by construction (checked above)
            return inputs
        return jnp.concatenate([inputs, jnp.broadcast_to(c, inputs.shape[:-1] + c.shape[-1:])], axis=-1)

    def init(key: PRNGKey, batch: Batch) -> Params:
        enc_key, dec_key = jax.random.split(key)
        x = batch["x"][:1]
        c = batch["c"][:1] if condition_dim else no_condition(x)
        params = {
            "encoder": encoder.init(enc_key, with_condition(to_input(x), c)),
            "decoder": decoder.init(dec_key, with_condition(jnp.zeros((1, cfg.latent_dim), x.dtype), c)),
        }
        if cfg.prior == "learned":
            params["prior"] = prior_net.init(jax.random.fold_in(key, 2), c)
        if cfg.likelihood == "gaussian" and cfg.decoder_std is None:
            params["log_scale"] = jnp.full(image_shape, -1.0, x.dtype)
        return params

    def encode(params: Params, x: jax.Array, c: jax.Array | None = None) -> DiagNormal:
        c = no_condition(x) if c is None else c
        out = encoder.apply(params["encoder"], with_condition(to_input(x), c))
        if cfg.encoder_variance == "fixed":
            return DiagNormal(out, jnp.full_like(out, cfg.encoder_std))
        loc, log_var = jnp.split(out, 2, axis=-1)
        return DiagNormal(loc, jnp.exp(0.5 * log_var))

    def prior(params: Params, c: jax.Array) -> DiagNormal:
        if cfg.prior == "learned":
            loc, log_var = jnp.split(prior_net.apply(params["prior"], c), 2, axis=-1)
            return DiagNormal(loc, jnp.exp(0.5 * log_var))
        return DiagNormal(jnp.zeros((cfg.latent_dim,), c.dtype), jnp.full((cfg.latent_dim,), cfg.prior_std, c.dtype))

    def decode(params: Params, z: jax.Array, c: jax.Array | None = None):
        c = jnp.zeros(z.shape[:-1] + (0,), z.dtype) if c is None else c
        out = decoder.apply(params["decoder"], with_condition(z, c))
        out = out.reshape(z.shape[:-1] + tuple(image_shape))
        if cfg.likelihood == "bernoulli":
            return Bernoulli(out, event_ndims=event_ndims)
        if cfg.decoder_std is None:
            scale = jnp.exp(jnp.maximum(params["log_scale"], MIN_LOG_SCALE))
        else:
            scale = jnp.asarray(cfg.decoder_std, out.dtype)
        return DiagNormal(out, jnp.broadcast_to(scale, out.shape), event_ndims=event_ndims)

    def elbo(params: Params, x: jax.Array, key: PRNGKey, c: jax.Array | None = None) -> jax.Array:
        c = no_condition(x) if c is None else c
        recon, kl_per_dim, _ = gaussian_elbo(key, x, encode(params, x, c), prior(params, c),
                                             lambda z: decode(params, z, c))
        return recon - jnp.sum(kl_per_dim, axis=-1)

    def log_weights(params: Params, x: jax.Array, key: PRNGKey, num_samples: int,
                    c: jax.Array | None = None) -> jax.Array:
        c = no_condition(x) if c is None else c
        return log_importance_weights(key, x, encode(params, x, c), prior(params, c),
                                      lambda z: decode(params, z, c), num_samples)

    def prior_log_weights(params: Params, x: jax.Array, key: PRNGKey, num_samples: int,
                          c: jax.Array | None = None) -> jax.Array:
        c = no_condition(x) if c is None else c
        p = prior(params, c)
        z = DiagNormal(jnp.broadcast_to(p.loc, (x.shape[0], cfg.latent_dim)), p.scale).sample(key, (num_samples,))
        return jax.vmap(lambda zk: decode(params, zk, c).log_prob(x))(z)

    def generate(params: Params, key: PRNGKey, c: jax.Array) -> jax.Array:
        p = prior(params, c)
        z = DiagNormal(jnp.broadcast_to(p.loc, (c.shape[0], cfg.latent_dim)), p.scale).sample(key)
        return decode(params, z, c).mean()

    return VAEModel(init=init, encode=encode, prior=prior, decode=decode, elbo=elbo, log_weights=log_weights,
                    prior_log_weights=prior_log_weights, generate=generate)


def kl_per_dimension(params: Params, data: Batch, key: PRNGKey, *, cfg: Config, image_shape: tuple[int, ...],
                     condition_dim: int = 0) -> dict[str, jax.Array]:
    """`{"kl": [D]}`: E_x KL(q(z_i|x, c) || p(z_i|c)) per latent dimension over `data` (`"x"`, and `"c"` for a CVAE).

    A per-run evaluator (`run.evaluate`; bind the static settings first). A collapsed dimension has ~0 mean KL;
    Dang et al. (2024) count as active those above 0.01 nats (`gvlab.diagnostics.gaussian_kl_per_dimension`).
    """
    del key
    model = make_model(cfg, image_shape, condition_dim)
    c = data["c"] if condition_dim else no_condition(data["x"])
    return {"kl": gaussian_kl_per_dimension(model.encode(params, data["x"], c), model.prior(params, c))}


def make(cfg: Config, image_shape: tuple[int, ...], condition_dim: int = 0,
         regulariser: Regulariser | None = None) -> Method:
    """The (C)VAE as a `Method` (loss in the module docstring); `regulariser` defaults to `beta_kl(cfg.beta)`.

    With the default regulariser the loss also takes `args={"beta": b}` (a fit's `Spec.args`, one value per
    member): run r then weights its KL by its own b instead of `cfg.beta`, so a beta sweep is one compiled fit.

    `sample(params, key, num)` returns decoder means of prior draws for an unconditional VAE; a CVAE has no
    condition-free sampler (use `make_model(...).generate` with the conditions wanted).
    """
    model = make_model(cfg, image_shape, condition_dim)
    custom = regulariser is not None
    regulariser = regulariser or beta_kl(cfg.beta)

    def condition(batch: Batch) -> jax.Array:
        return batch["c"] if condition_dim else no_condition(batch["x"])

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, args: dict | None = None):
        x, c = batch["x"], condition(batch)
        hook = regulariser
        if args is not None:  # this run's KL weight (a beta sweep as members of one fit, `Spec.args`)
            if custom or set(args) != {"beta"}:
                raise ValueError(f"the VAE loss takes args={{'beta': ...}} with the default regulariser only, "
                                 f"got keys {sorted(args)}" + (" and a custom regulariser" if custom else ""))
            hook = beta_kl(args["beta"])
        cvae_key, gsnn_key = jax.random.split(key) if cfg.alpha < 1.0 else (key, None)
        p = model.prior(params, c)
        recon, kl_per_dim, z = gaussian_elbo(cvae_key, x, model.encode(params, x, c), p,
                                             lambda z: model.decode(params, z, c))
        value, metrics = elbo_loss(recon, kl_per_dim, z, step, hook)
        if cfg.alpha == 1.0:
            return value, metrics
        # GSNN term: reconstruct from a reparameterised prior draw, the path used at generation time.
        z_prior = DiagNormal(jnp.broadcast_to(p.loc, z.shape), p.scale).sample(gsnn_key)
        gsnn_recon = jnp.mean(model.decode(params, z_prior, c).log_prob(x))
        metrics["gsnn/recon"] = gsnn_recon
        return cfg.alpha * value - (1.0 - cfg.alpha) * gsnn_recon, metrics

    def sample(params: Params, key: PRNGKey, num: int) -> jax.Array:
        z = jax.random.normal(key, (num, cfg.latent_dim)) * cfg.prior_std
        return model.decode(params, z, jnp.zeros((num, 0), z.dtype)).mean()

    return Method(init=model.init, loss=loss, sample=None if condition_dim else sample)
