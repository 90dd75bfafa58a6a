"""Pitch and rate read from log-mel features, and the Capacitron evaluations built on them.

The estimators are linear read-outs fitted on real espeak-ng utterances, whose pitch (`-p`) and rate (`-s`) are
known: pitch from the utterance's mean log-mel spectrum (ridge regression; the harmonics of F0 move the low mel
bands), log rate from log(frames / characters) (least squares). Their error on held-out real utterances is the
ceiling of any transfer measured with them. They are applied unchanged to a model's output frames, whose number
is the model's own predicted duration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gvlab.data.padded import Padded, masked_mean
from gvlab.dists import DiagNormal, kl_divergence
from gvlab.nn.prosody import ProsodyModel


class Estimators(NamedTuple):
    """Weights of the pitch read-out `[n_mels + 1]` and of the log-rate read-out `[2]` (slope, intercept)."""

    pitch: jax.Array
    rate: jax.Array


def _with_bias(x):
    return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], -1)


def ridge(x, y, l2: float):
    """argmin_w |[x, 1] w - y|^2 + l2 |w|^2 (closed form; the intercept is penalised too, harmless at this scale)."""
    a = _with_bias(x)
    return jnp.linalg.solve(a.T @ a + l2 * jnp.eye(a.shape[1]), a.T @ y)


def log_frames_per_char(mel_mask, text_mask):
    """log(T / L) of each utterance."""
    return jnp.log(jnp.maximum(mel_mask.sum(-1), 1) / jnp.maximum(text_mask.sum(-1), 1))


def fit_estimators(mel: Padded, text_mask, pitch, rate, l2: float = 1.0) -> Estimators:
    """Fit both read-outs on real utterances with known pitch and rate (words/min)."""
    w_pitch = ridge(masked_mean(mel.values, mel.mask), jnp.asarray(pitch, jnp.float32), l2)
    w_rate = ridge(log_frames_per_char(mel.mask, text_mask)[:, None], jnp.log(jnp.asarray(rate, jnp.float32)), 0.0)
    return Estimators(w_pitch, w_rate)


def estimate(est: Estimators, mel: Padded, text_mask) -> tuple[jax.Array, jax.Array]:
    """(pitch, log rate) read from log-mel frames."""
    pitch = _with_bias(masked_mean(mel.values, mel.mask)) @ est.pitch
    log_rate = _with_bias(log_frames_per_char(mel.mask, text_mask)[..., None]) @ est.rate
    return pitch, log_rate


def generate(net: ProsodyModel, params, text: Padded, z, size: int) -> Padded:
    """Frames decoded from z for each text: T = clip(round(L exp(log_duration)), 1, size) frames, mask t < T."""

    def one(ids, mask, zi):
        log_dur = net.apply(params, ids, mask, zi, method=ProsodyModel.log_duration)
        frames = jnp.clip(jnp.round(mask.sum() * jnp.exp(log_dur)), 1, size)
        out = net.apply(params, ids, mask, zi, frames, size, method=ProsodyModel.decode)
        return out, jnp.arange(size) < frames

    values, mask = jax.vmap(one)(text.values, text.mask, z)
    return Padded(values, mask)


def posterior(net: ProsodyModel, params, text: Padded, mel: Padded):
    """(mu, sigma) `[B, Z]` of each reference."""
    return jax.vmap(lambda i, tm, m, mm: net.apply(params, i, tm, m, mm, method=ProsodyModel.encode))(
        text.values, text.mask, mel.values, mel.mask)


def mean_kl(net, params, text: Padded, mel: Padded):
    """E KL(q(z | x, text) || N(0, I)) over a set of utterances (the rate; an upper bound on I_q(X; Z))."""
    mu, sigma = posterior(net, params, text, mel)
    return jnp.mean(kl_divergence(DiagNormal(mu, sigma), DiagNormal(jnp.zeros_like(mu), jnp.ones_like(sigma))))


def transfer(net, params, variational, ref_text: Padded, ref_mel: Padded, target_text: Padded, est: Estimators,
             size: int):
    """Prosody transfer: z = posterior mean of the reference, decoded with another text; (pitch, log rate) read
    from the output. The baseline (variational = 0) decodes z = 0."""
    mu, _ = posterior(net, params, ref_text, ref_mel)
    out = generate(net, params, target_text, mu * variational, size)
    return estimate(est, out, target_text.mask)


def prior_spread(net, params, variational, text: Padded, key, samples: int, est: Estimators, size: int):
    """Std over `samples` prior draws z ~ N(0, I) of the (pitch, log rate) read from the output, averaged over the
    texts: how much prosody the prior's samples vary for a fixed text."""
    z = jax.random.normal(key, (samples,) + text.mask.shape[:1] + (net.latent_dim,)) * variational
    pitch, log_rate = jax.lax.map(lambda zi: estimate(est, generate(net, params, text, zi, size), text.mask), z)
    return jnp.mean(jnp.std(pitch, 0)), jnp.mean(jnp.std(log_rate, 0))
