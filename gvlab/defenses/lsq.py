"""The latent-space-quantisation filter (LSQ; Kyatham et al. 2019, arXiv 1903.09940) and its continuous ablation.

[UNVERIFIED] Reconstruction from the paper's abstract; no official code is known (notes, section 3(a)). The
defence puts a filter F = D o Q o E in front of an unchanged classifier C and predicts C(F(x)); the filter is
trained on clean data only and never sees C or an adversarial example.

* Encoder E (notes 3(a).2, 3(a).4): an MLP whose dense kernels are spectrally normalised (`gvlab.nn.spectral`,
  Miyato et al. 2018), so with ReLU its pre-activation output h(x) is 1-Lipschitz in L2; q(z|x) = N(mu(x),
  diag sigma^2(x)) with the bounded mean mu(x) = tanh(K h_mu(x)), ||mu(x + d) - mu(x)|| <= K ||d||. The
  power-iteration vectors are non-gradient state (`Method.init_extra`, `TrainState.extra`), one iteration per
  step, returned updated by the loss.
* Quantiser Q (notes 3(a).3, `gvlab.defenses.quantise`): L uniform levels in [-1, 1] per latent coordinate,
  straight-through in training; L = 0 is the continuous VAE (no quantisation), the ablation.
* Decoder D: the mirrored MLP with a sigmoid output (inputs in [0, 1]).
* Loss (notes 3(a).5, with the Lipschitz term realised by spectral normalisation, gamma = 0):

      L = E_{z ~ q(z|x)} ||x - D(Q(z))||^2 + beta KL(q(z|x) || N(0, I)),

  one reparameterised sample per example; the sampling noise sigma(x) eps is the latent perturbation the decoder
  learns to absorb ("auto-encode the data manifold and its perturbations").
* Filter (test time): F(x) = D(Q(mu(x))), deterministic.

The number of levels is a model argument: `loss(..., args={"levels": L})` (a fit's `Spec.args`, one value per
member), so the continuous VAE and L = 3, 5 train as members of one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gvlab.config import check_sizes
from gvlab.defenses.quantise import quantise_straight_through
from gvlab.dists import DiagNormal, kl_divergence
from gvlab.nn import MLP
from gvlab.nn import spectral
from gvlab.types import Batch, Method, Params, PRNGKey


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """LSQ filter architecture and objective.

    Attributes:
        latent_dim: dimension of z.
        hidden: encoder MLP widths (the decoder mirrors them).
        activation: nonlinearity (`gvlab.nn.ACTIVATIONS`); ReLU keeps the spectral-norm Lipschitz bound.
        levels: L, levels of the latent quantiser when the loss gets no `args` (0: continuous VAE).
        beta: weight of the KL term.
        lipschitz: K, the gain before the tanh of the mean: mu(x) is K-Lipschitz with spectral normalisation.
        spectral_norm: normalise the encoder's kernels (False: a plain encoder, a control).
        power_iters: power iterations per training step.
    """

    latent_dim: int = 8
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    levels: int = 5
    beta: float = 0.01
    lipschitz: float = 1.0
    spectral_norm: bool = True
    power_iters: int = 1

    def __post_init__(self):
        check_sizes(self, "latent_dim", "hidden")
        if self.levels == 1 or self.levels < 0:
            raise ValueError(f"levels must be 0 (continuous) or >= 2, got {self.levels}")
        if self.beta < 0 or self.lipschitz <= 0 or self.power_iters < 1:
            raise ValueError(f"need beta >= 0, lipschitz > 0, power_iters >= 1; got {self.beta}, "
                             f"{self.lipschitz}, {self.power_iters}")


class Filter(NamedTuple):
    """The LSQ filter's pure functions (`make_model`).

    Attributes:
        init: `(key, batch) -> params` (`{"encoder", "decoder"}`).
        init_extra: `(key, batch, params) -> extra` (`{"encoder": power-iteration vectors}`).
        encode: `(params, extra, x [B, *image]) -> (q(z|x), new extra)`; `extra=None` normalises with the exact
            largest singular values (SVD), for evaluation without the training state.
        latent: `(z, levels) -> Q(z)` straight-through (levels 0: identity); levels may be traced.
        decode: `(params, z [B, D]) -> x_hat [B, *image]` in [0, 1].
        filter: `(params, extra, x, levels) -> D(Q(mu(x)))` [B, *image].
    """

    init: Callable[[PRNGKey, Batch], Params]
    init_extra: Callable
    encode: Callable
    latent: Callable
    decode: Callable
    filter: Callable


def make_model(cfg: Config, image_shape: tuple[int, ...]) -> Filter:
    """The filter's pure functions for inputs of `image_shape` (e.g. `(8, 8)`) with values in [0, 1]."""
    pixels = 1
    for size in image_shape:
        pixels *= size
    encoder = MLP(tuple(cfg.hidden) + (2 * cfg.latent_dim,), cfg.activation)
    decoder = MLP(tuple(reversed(cfg.hidden)) + (pixels,), cfg.activation)

    def flat(x):
        return x.reshape(x.shape[: x.ndim - len(image_shape)] + (pixels,))

    def init(key: PRNGKey, batch: Batch) -> Params:
        enc_key, dec_key = jax.random.split(key)
        x = flat(batch["x"][:1])
        return {"encoder": encoder.init(enc_key, x),
                "decoder": decoder.init(dec_key, jnp.zeros((1, cfg.latent_dim), x.dtype))}

    def init_extra(key: PRNGKey, batch: Batch, params: Params):
        return {"encoder": spectral.init_vectors(key, params["encoder"])} if cfg.spectral_norm else {}

    def encode(params: Params, extra, x: jax.Array):
        enc, new_extra = params["encoder"], extra
        if cfg.spectral_norm:
            vectors = None if extra is None else extra["encoder"]
            enc, vectors, _ = spectral.normalise(enc, vectors, cfg.power_iters)
            new_extra = None if extra is None else {"encoder": vectors}
        out = encoder.apply(enc, flat(x))
        pre_mean, log_var = jnp.split(out, 2, axis=-1)
        return DiagNormal.from_log_variance(jnp.tanh(cfg.lipschitz * pre_mean), log_var), new_extra

    def latent(z: jax.Array, levels) -> jax.Array:
        levels = jnp.asarray(levels, z.dtype)
        # L = 0 is the continuous ablation; max(L, 2) keeps the unused quantised branch finite.
        return jnp.where(levels > 0, quantise_straight_through(z, jnp.maximum(levels, 2.0)), z)

    def decode(params: Params, z: jax.Array) -> jax.Array:
        out = jax.nn.sigmoid(decoder.apply(params["decoder"], z))
        return out.reshape(z.shape[:-1] + tuple(image_shape))

    def filter_fn(params: Params, extra, x: jax.Array, levels) -> jax.Array:
        q, _ = encode(params, extra, x)
        return decode(params, latent(q.loc, levels)).astype(x.dtype)

    return Filter(init=init, init_extra=init_extra, encode=encode, latent=latent, decode=decode, filter=filter_fn)


def make(cfg: Config, image_shape: tuple[int, ...]) -> Method:
    """The LSQ filter VAE as a `Method` with non-gradient state (loss in the module docstring).

    `loss(params, batch, key, step, extra=..., args={"levels": L}) -> (loss, terms, new extra)`; terms:
    `lsq/recon` (squared error per example), `lsq/kl`, `lsq/latent_std` (mean encoder scale), `lsq/quant_gap`
    (mean |Q(z) - z|).
    """
    model = make_model(cfg, image_shape)

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, extra=None, args: dict | None = None):
        del step
        if args is not None and set(args) != {"levels"}:
            raise ValueError(f"the LSQ loss takes args={{'levels': ...}}, got keys {sorted(args)}")
        levels = cfg.levels if args is None else args["levels"]
        x = batch["x"]
        q, new_extra = model.encode(params, extra, x)
        z = q.sample(key)
        z_q = model.latent(z, levels)
        x_hat = model.decode(params, z_q)
        recon = jnp.mean(jnp.sum(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=1))
        standard = DiagNormal(jnp.zeros_like(q.loc), jnp.ones_like(q.scale))
        kl = jnp.mean(kl_divergence(q, standard))
        terms = {"lsq/recon": recon, "lsq/kl": kl, "lsq/latent_std": jnp.mean(q.scale),
                 "lsq/quant_gap": jnp.mean(jnp.abs(z_q - z))}
        value = recon + cfg.beta * kl
        if extra is None:
            return value, terms
        return value, terms, new_extra

    init_extra = model.init_extra if cfg.spectral_norm else None
    return Method(init=model.init, loss=loss, init_extra=init_extra)
