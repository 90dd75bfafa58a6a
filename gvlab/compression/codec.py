"""Learned transform codecs for small grey images: analysis transform, quantiser + entropy model, synthesis transform.

x [B, H, W] -> g_a -> y [B, H/4, W/4, D] -> quantiser -> symbols -> entropy model -> bits; y_hat -> g_s -> x_hat.
The transforms act on non-overlapping 4x4 pixel blocks (the notes' mini model has an (H/4) x (W/4) latent, 4x4
pixels per latent vector): a ReLU MLP 16 -> C -> C -> D per block and its mirror (a block transform code, like
JPEG's 8x8 DCT but learned; McQuic's residual/attention convolutions are replaced because vmapped convolutions over
members are very slow on CPU, while per-block matmuls batch over members). Three quantisers share them (`kind`):

* "mixture": the UMG prior with probabilistic multi-codebook VQ (`gvlab.compression.mixture`); m groups, K codewords.
* "vq": a single-codebook (m = 1) or multi-codebook nearest-neighbour VQ with straight-through gradient, commitment
  loss and EMA codebooks in `TrainState.extra`; entropy model = EMA code frequencies; rate control by the
  entropy-constrained assignment (`gvlab.compression.quantisers.nearest`).
* "scalar": uniform-noise / rounding scalar quantisation with a factorised logistic density
  (`gvlab.compression.factorised`).

Loss: L = MSE(x, x_hat) + lambda * bpp, lambda = `args["rate_weight"]` (a member sweep traces one program per kind).
McQuic's released code trains on distortion only (the rate fixed by K and m); the rate term here is what turns a
lambda sweep into a rate-distortion curve (off with lambda = 0). For "mixture" the encoder sees the rate through
the straight-through sample s (bits = sum_k s_k (-log2 sg(pi_k))); the prior is fitted either by hard EM on sg(y)
(`prior="em"`: codewords, pi and the closed-form ML kappa as moving averages in `TrainState.extra`) or by gradient
of the UMG log-likelihood (`prior="gradient"`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.compression import factorised, mixture
from gvlab.compression import quantisers as vq
from gvlab.errors import ConfigError
from gvlab.types import Method

STRIDE = 4  # pixels per latent position along each side


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Codec settings.

    Attributes:
        kind: "mixture", "vq" or "scalar".
        channels: C of the hidden convolutions.
        latent: D, channels of the latent y.
        groups: m sub-vectors per latent vector (mixture, vq).
        codebook_size: K codewords per group (mixture, vq).
        commitment: beta of the commitment loss (vq, and mixture; McQuic has none: 0 follows it).
        straight_through: mixture only: add the identity straight-through gradient from y_hat to y to the
            Gumbel-softmax one (McQuic's encoder gradient is the Gumbel-softmax one only: False follows it).
        gumbel: mixture only: train with Gumbel samples (McQuic, True) or the MAP component (False).
        prior: mixture only: how the UMG prior (codewords, pi, kappa) is fitted. "em": hard-EM moving averages
            of sg(y) in `TrainState.extra` (codewords = EMA means of their assigned sub-vectors, pi = EMA code
            frequencies, kappa_j = d / (2 EMA mean ||y_j - c_jk*||^2), the closed-form maximum-likelihood
            precision of a shared isotropic covariance under hard assignments); "gradient": trained by gradient
            of the UMG log-likelihood of sg(y) and of the reconstruction (McQuic trains codewords and its
            temperature by gradient, without a likelihood term).
        assignment: mixture only: "posterior": the MAP component of the UMG posterior, argmax_k log pi_jk - kappa_j
            ||y_j - c_jk||^2 (Gumbel sample in training if `gumbel`); "rd": the entropy-constrained rule of the vq,
            argmin_k ||y_j - c_jk||^2 + lambda (-log2 pi_jk), in training and at test.
        ema_decay: decay of the EMA codebooks (vq, and mixture with prior="em").
        radius: R of the scalar alphabet -R..R (scalar).
    """

    kind: str = "mixture"
    channels: int = 32
    latent: int = 16
    groups: int = 2
    codebook_size: int = 16
    commitment: float = 0.25
    straight_through: bool = True
    gumbel: bool = False
    prior: str = "em"
    assignment: str = "posterior"
    ema_decay: float = 0.99
    radius: int = 15


class Codec(NamedTuple):
    """`method` trains; the rest are pure functions of `model = {"params", "extra"}` (one run's state)."""

    config: Config
    method: Method
    symbols: Callable  # (model, x [B, H, W]) -> int32 [B, h, w, G]
    table: Callable  # model -> probabilities [G, A] (row g codes group/channel g)
    reconstruct: Callable  # (model, symbols) -> x_hat [B, H, W]


def _blocks(x: Float[Array, "B H W"]) -> Float[Array, "B h w P"]:
    """Space-to-depth: the STRIDE x STRIDE pixel blocks as vectors of P = STRIDE^2."""
    b, h, w = x.shape
    x = x.reshape(b, h // STRIDE, STRIDE, w // STRIDE, STRIDE)
    return x.transpose(0, 1, 3, 2, 4).reshape(b, h // STRIDE, w // STRIDE, STRIDE * STRIDE)


def _unblocks(v: Float[Array, "B h w P"]) -> Float[Array, "B H W"]:
    b, h, w, _ = v.shape
    return v.reshape(b, h, w, STRIDE, STRIDE).transpose(0, 1, 3, 2, 4).reshape(b, h * STRIDE, w * STRIDE)


def _dense_init(flat, sizes):
    """He-normal weights cut from the standard normals `flat`, zero biases."""
    weights, start = [], 0
    for i, o in zip(sizes[:-1], sizes[1:]):
        weights.append(flat[start:start + i * o].reshape(i, o) * jnp.sqrt(2.0 / i))
        start += i * o
    return {"w": weights, "b": [jnp.zeros(o) for o in sizes[1:]]}


def _mlp(layers, h):
    for i, (w, b) in enumerate(zip(layers["w"], layers["b"])):
        h = h @ w + b.reshape((1,) * (h.ndim - 1) + b.shape)  # explicit rank: no implicit promotion
        if i < len(layers["w"]) - 1:
            h = jax.nn.relu(h)
    return h


def init_transforms(key, channels: int, latent: int) -> dict:
    """He-normal weights, zero biases: g_a = MLP P -> C -> C -> D per block, g_s = MLP D -> C -> C -> P."""
    pixels = STRIDE * STRIDE
    count = pixels * channels + channels * channels + channels * latent  # weights of each MLP
    # One draw for both MLPs: one random-number program instead of one per layer (a smaller compile).
    flat = jax.random.normal(key, (2 * count,))
    return {"analysis": _dense_init(flat[:count], (pixels, channels, channels, latent)),
            "synthesis": _dense_init(flat[count:], (latent, channels, channels, pixels))}


def analyse(transforms: dict, x: Float[Array, "B H W"]) -> Float[Array, "B h w D"]:
    """g_a: each 4x4 block (centred at 0) through a ReLU MLP to an unbounded latent vector y in R^D."""
    return _mlp(transforms["analysis"], _blocks(x) - 0.5)


def synthesise(transforms: dict, y: Float[Array, "B h w D"]) -> Float[Array, "B H W"]:
    """g_s: each latent vector through a ReLU MLP back to its 4x4 block."""
    return _unblocks(_mlp(transforms["synthesis"], y)) + 0.5


def make(cfg: Config) -> Codec:
    """The codec of `cfg.kind` (module docstring)."""
    if cfg.kind not in ("mixture", "vq", "scalar"):
        raise ConfigError(f"codec kind must be 'mixture', 'vq' or 'scalar', got {cfg.kind!r}")
    if cfg.kind != "scalar" and cfg.latent % cfg.groups:
        raise ConfigError(f"{cfg.groups} groups do not divide the latent size {cfg.latent}")
    if cfg.prior not in ("em", "gradient") or cfg.assignment not in ("posterior", "rd"):
        raise ConfigError(f"prior must be 'em' or 'gradient' and assignment 'posterior' or 'rd', got {cfg.prior!r}, "
                          f"{cfg.assignment!r}")
    m, k, d = cfg.groups, cfg.codebook_size, cfg.latent // max(cfg.groups, 1)
    uses_extra = cfg.kind == "vq" or (cfg.kind == "mixture" and cfg.prior == "em")  # EMA state in TrainState.extra

    def init(key, batch):
        t_key, q_key = jax.random.split(key)
        params = init_transforms(t_key, cfg.channels, cfg.latent)
        if cfg.kind == "mixture" and cfg.prior == "gradient":
            # Codewords start at K latent vectors of the first batch (McQuic's SmallInit N(0, 2/(5d)) leaves most
            # codewords far from the latents at this scale, dead from the first step).
            params["quantiser"] = {"codebooks": _data_codebooks(q_key, params, batch["x"]),
                                   "log_weights": jnp.zeros((m, k)),
                                   # kappa = 1: posteriors already sharp at the initial latent scale
                                   "log_precision": jnp.zeros((m,))}
        elif cfg.kind == "scalar":
            params["quantiser"] = {"loc": jnp.zeros(cfg.latent), "log_scale": jnp.zeros(cfg.latent)}
        return params

    def init_extra(key, batch, params):
        codebooks = _data_codebooks(key, params, batch["x"])
        state = vq.init_ema(codebooks)
        if cfg.kind == "mixture":  # the ML precision of the initial codebook on the first batch
            groups = vq.split_groups(analyse(params, batch["x"]), m)
            state["sq_residual"] = mixture.hard_sq_residual(groups, codebooks, vq.nearest(groups, codebooks))
        return state

    def _data_codebooks(key, params, x):
        """K latent vectors of the (shuffled) batch per group, evenly spaced, plus a small jitter: no codeword
        starts dead."""
        y = vq.split_groups(analyse(params, x), m).reshape(-1, m, d)
        pick = (jnp.arange(k) * y.shape[0]) // k
        return jnp.swapaxes(y[pick], 0, 1) + 0.01 * jax.random.normal(key, (m, k, d))

    def loss(params, batch, key, step, args, extra=None):
        x = batch["x"]
        lam = args["rate_weight"]
        pixels = x.shape[0] * x.shape[1] * x.shape[2]
        y = analyse(params, x)
        terms = {}
        if cfg.kind == "mixture":
            groups = vq.split_groups(y, m)
            codebooks, log_pi, log_precision = _prior(params, extra)
            neg_log2_pi = -jax.nn.log_softmax(log_pi, -1) / jnp.log(2.0)
            if cfg.assignment == "rd":
                s = jax.nn.one_hot(vq.nearest(groups, codebooks, neg_log2_pi, lam), k, dtype=y.dtype)
                sample = jnp.einsum("...mk,mkd->...md", s, codebooks)
            else:
                sample, s = mixture.quantise(groups, codebooks, log_pi, log_precision, key if cfg.gumbel else None)
            rate = jnp.sum(s * jnp.broadcast_to(jax.lax.stop_gradient(neg_log2_pi), s.shape)) / pixels
            if cfg.prior == "em":  # hard EM of the prior on sg(y): no gradient reaches it
                extra_out, prior_fit = mixture.em_update(extra, groups, jnp.argmax(s, -1), cfg.ema_decay), 0.0
            else:  # (pi, codewords, kappa) by gradient of the UMG log-likelihood of sg(y)
                extra_out = None
                prior_fit = -jnp.sum(mixture.log_prob(jax.lax.stop_gradient(groups), codebooks, log_pi,
                                                      log_precision)) / (pixels * jnp.log(2.0))
            if cfg.straight_through:  # the sample's value; identity + Gumbel-softmax gradients to y
                sample = vq.straight_through(groups, sample) + sample - jax.lax.stop_gradient(sample)
            commit = vq.commitment_loss(groups, sample)
            y_hat = sample.reshape(y.shape)
            penalty = prior_fit + cfg.commitment * commit
            terms["vq/commitment"] = commit
        elif cfg.kind == "vq":
            codebooks = vq.ema_codebooks(extra)
            bits = -jnp.log2(vq.ema_probabilities(extra))
            groups = vq.split_groups(y, m)
            idx = vq.nearest(groups, codebooks, bits, lam)
            chosen = vq.lookup(idx, codebooks)
            rate = jnp.sum(jnp.take_along_axis(jnp.broadcast_to(bits, idx.shape + (k,)), idx[..., None], -1)) / pixels
            commit = vq.commitment_loss(groups, chosen)
            y_hat = vq.straight_through(groups, chosen).reshape(y.shape)
            extra_out = vq.ema_update(extra, groups, idx, cfg.ema_decay)
            penalty = cfg.commitment * commit
            terms["vq/commitment"] = commit
        else:
            q = params["quantiser"]
            y_hat = vq.add_uniform_noise(y, key)
            rate = jnp.sum(factorised.rate_bits(y_hat, q["loc"], q["log_scale"])) / pixels
            extra_out, penalty = None, 0.0
        x_hat = synthesise(params, y_hat)
        mse = jnp.mean(jnp.square(x_hat - x))
        total = mse + lam * rate + penalty
        terms.update({"rd/mse": mse, "rd/bpp": rate})
        if uses_extra:
            return total, terms, extra_out
        return total, terms

    def _prior(params, extra):
        """(codewords [m, K, d], log pi [m, K], log kappa [m]) of the UMG prior."""
        if cfg.prior == "em":
            return (vq.ema_codebooks(extra), jnp.log(vq.ema_probabilities(extra)),
                    jnp.log(mixture.ml_precision(extra["sq_residual"], d)))
        q = params["quantiser"]
        return q["codebooks"], q["log_weights"], q["log_precision"]

    def symbols(model, x):
        params, extra = model["params"], model.get("extra")
        y = analyse(params, x)
        if cfg.kind == "scalar":
            return factorised.to_symbols(y, cfg.radius)
        groups = vq.split_groups(y, m)
        if cfg.kind == "mixture" and cfg.assignment == "rd":
            codebooks, log_pi, _ = _prior(params, extra)
            return vq.nearest(groups, codebooks, -jax.nn.log_softmax(log_pi, -1) / jnp.log(2.0),
                              model["args"]["rate_weight"])
        if cfg.kind == "mixture":
            return mixture.map_indices(groups, *_prior(params, extra))
        lam = model["args"]["rate_weight"]
        return vq.nearest(groups, vq.ema_codebooks(extra), -jnp.log2(vq.ema_probabilities(extra)), lam)

    def table(model):
        params, extra = model["params"], model.get("extra")
        if cfg.kind == "mixture":
            return jax.nn.softmax(_prior(params, extra)[1], -1)
        if cfg.kind == "vq":
            return vq.ema_probabilities(extra)
        q = params["quantiser"]
        return factorised.symbol_table(q["loc"], q["log_scale"], cfg.radius)

    def reconstruct(model, sym):
        params, extra = model["params"], model.get("extra")
        if cfg.kind == "scalar":
            y_hat = factorised.from_symbols(sym, cfg.radius)
        else:
            codebooks = _prior(params, extra)[0] if cfg.kind == "mixture" else vq.ema_codebooks(extra)
            y_hat = vq.lookup(sym, codebooks).reshape(*sym.shape[:-1], -1)
        return synthesise(params, y_hat)

    method = Method(init=init, loss=loss, init_extra=init_extra if uses_extra else None)
    return Codec(cfg, method, symbols, table, reconstruct)


def combine(codecs: dict[str, Codec]) -> Method:
    """One `Method` training several codecs side by side: params, extra and args are dicts keyed like `codecs`
    (`args["rate_weight"][name]` is codec `name`'s lambda), the loss is the sum of the codecs' losses.

    The codecs share no parameter, so each codec's gradient, Adam update and EMA state are those of its own fit on
    the same batches and keys; the point is one compiled init / step program instead of one per codec (the smoke
    profile's compile time). Terms are reported as `name/term`.
    """
    names = tuple(codecs)

    def init(key, batch):
        return {n: codecs[n].method.init(key, batch) for n in names}

    def init_extra(key, batch, params):
        return {n: codecs[n].method.init_extra(key, batch, params[n]) if codecs[n].method.init_extra else {}
                for n in names}

    def loss(params, batch, key, step, args, extra):
        total, terms, extra_out = 0.0, {}, {}
        for n in names:
            sub_args = {"rate_weight": args["rate_weight"][n]}
            if codecs[n].method.init_extra is None:
                value, sub_terms = codecs[n].method.loss(params[n], batch, key, step, args=sub_args)
                extra_out[n] = {}
            else:
                value, sub_terms, extra_out[n] = codecs[n].method.loss(params[n], batch, key, step, args=sub_args,
                                                                     extra=extra[n])
            total = total + value
            terms.update({f"{n}/{t}": v for t, v in sub_terms.items()})
        return total, terms, extra_out

    return Method(init=init, loss=loss, init_extra=init_extra)
