"""The Capacitron method on padded text and mel batches: `make(cfg, vocab, n_mels) -> Method`.

Batch: `{"text": Padded(ids [B, L], mask), "mel": Padded(frames [B, T, n_mels], mask)}` (normalised log-mel).
Per-member arguments (`Spec.args`): `capacity` C (nats) and `variational` (1: Capacitron; 0: the text-only
baseline, whose decoder sees z = 0 and whose objective has no KL term).

Objective (Battenberg et al. 2019, Eq. 5; Coqui-TTS `TTS/tts/layers/losses.py::TacotronLoss`):
`recon + w_dur dur + sg(beta) (KL - C)`, with
- recon: per frame the L1 distance summed over mel bands (Coqui's L1 mel loss), averaged over each utterance's
  real frames, then over utterances (`mean_over_examples`: every utterance weighs the same);
- dur: squared error of the predicted log frames-per-character (the length Tacotron's stop token decides);
- KL = KL(N(mu, sigma^2) || N(0, I)) per utterance, averaged over the batch;
- beta = softplus(beta_tilde) updated after each step by `gvlab.capacity.dual_update` (state in `extra`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gvlab import capacity as cap
from gvlab.data.padded import Padded, masked_mean, mean_over_examples
from gvlab.dists import DiagNormal, kl_divergence
from gvlab.nn.prosody import ProsodyModel
from gvlab.types import Method


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Model and objective settings.

    Attributes:
        width, latent_dim, hidden: `gvlab.nn.prosody.ProsodyModel` sizes (Coqui: embedding 128; notes' mini
            experiment: d_z = 16).
        duration_weight: weight of the log-duration loss.
        envelope_weight: weight of an alignment-free term, the L1 distance (summed over bands) between the
            utterance's mean frame and the decoded mean frame. Not in Capacitron: our decoder's alignment is fixed
            and uniform, so frame-wise L1 is dominated by timing; this term rewards the utterance-level spectrum
            (where pitch lives). 0 turns it off.
        dual_lr, dual_momentum: the multiplier's SGD (notes 6(d): lr 1e-2, momentum 0.9; Coqui: lr 1e-5 over far
            more steps).
        beta_init: initial multiplier (Coqui: softplus(beta_tilde) = 1).
    """

    width: int = 64
    latent_dim: int = 16
    hidden: tuple[int, ...] = (128, 128)
    duration_weight: float = 1.0
    envelope_weight: float = 0.0
    dual_lr: float = 1e-2
    dual_momentum: float = 0.9
    beta_init: float = 1.0


def network(cfg: Config, vocab: int, n_mels: int) -> ProsodyModel:
    return ProsodyModel(vocab=vocab, n_mels=n_mels, width=cfg.width, latent_dim=cfg.latent_dim, hidden=cfg.hidden)


def per_example_terms(net: ProsodyModel, params, text: Padded, mel: Padded, eps, variational):
    """Per-utterance reconstruction, squared log-duration error, envelope L1 and KL, each `[B]`, for noise `eps [B, Z]`.

    The reconstruction is returned per frame `[B, T]` so the batch reduction is `mean_over_examples`.
    """

    def one(ids, text_mask, frames, mel_mask, e):
        mu, sigma = net.apply(params, ids, text_mask, frames, mel_mask, method=ProsodyModel.encode)
        z = (mu + sigma * e) * variational  # the text-only baseline decodes from z = 0
        log_dur = net.apply(params, ids, text_mask, z, method=ProsodyModel.log_duration)
        out = net.apply(params, ids, text_mask, z, mel_mask.sum(), frames.shape[0], method=ProsodyModel.decode)
        per_frame = jnp.sum(jnp.abs(frames - out), -1)
        envelope = jnp.sum(jnp.abs(masked_mean(frames, mel_mask) - masked_mean(out, mel_mask)))
        target = jnp.log(jnp.maximum(mel_mask.sum(), 1) / jnp.maximum(text_mask.sum(), 1))
        kl = kl_divergence(DiagNormal(mu, sigma), DiagNormal(jnp.zeros_like(mu), jnp.ones_like(sigma)))
        return per_frame, jnp.square(log_dur - target), envelope, kl

    return jax.vmap(one)(text.values, text.mask, mel.values, mel.mask, eps)


def objective(net, cfg: Config, params, batch, eps, args, dual: cap.DualState):
    """`(loss, terms, new_dual)` for given noise: the Lagrangian of the module docstring and the dual step."""
    variational = jnp.asarray(args["variational"], jnp.float32)
    per_frame, dur, envelope, kl = per_example_terms(net, params, batch["text"], batch["mel"], eps, variational)
    recon = mean_over_examples(per_frame, batch["mel"].mask)
    kl_mean = jnp.mean(kl)
    data_term = recon + cfg.duration_weight * jnp.mean(dur) + cfg.envelope_weight * jnp.mean(envelope)
    loss = jnp.where(variational > 0, cap.lagrangian(data_term, kl_mean, args["capacity"], dual), data_term)
    stepped = cap.dual_update(dual, kl_mean, args["capacity"], cfg.dual_lr, cfg.dual_momentum)
    new_dual = jax.tree.map(lambda new, old: jnp.where(variational > 0, new, old), stepped, dual)
    terms = {"capacitron/recon": recon, "capacitron/duration": jnp.mean(dur),
             "capacitron/envelope": jnp.mean(envelope), "capacitron/kl": kl_mean,
             "capacitron/beta": cap.beta_of(dual), "capacitron/kl_minus_capacity": kl_mean - args["capacity"]}
    return loss, terms, new_dual


def make(cfg: Config, vocab: int, n_mels: int) -> Method:
    """The Capacitron method: loss with `args={"capacity", "variational"}` and `extra` = the dual state."""
    net = network(cfg, vocab, n_mels)

    def init(key, batch):
        text, mel = batch["text"], batch["mel"]
        return net.init(key, text.values[0], text.mask[0], mel.values[0], mel.mask[0], jnp.zeros(cfg.latent_dim))

    def loss(params, batch, key, step, *, args, extra):
        del step
        eps = jax.random.normal(key, (batch["text"].values.shape[0], cfg.latent_dim))
        return objective(net, cfg, params, batch, eps, args, extra)

    def init_extra(key, batch, params):
        del key, batch, params
        return cap.init_dual(cfg.beta_init)

    return Method(init=init, loss=loss, init_extra=init_extra)
