"""Audio features in JAX: framed STFT with a Hann window, an HTK mel filterbank, log-mel spectrograms.

Conventions (Tacotron 2 / Coqui-TTS `TTS/utils/audio/numpy_transforms.py`, here without pre-emphasis):
- framing without centring: frame f covers samples `[f * hop, f * hop + n_fft)`; a signal of `n` samples has
  `1 + (n - n_fft) // hop` whole frames (0 if `n < n_fft`);
- periodic Hann window `w[k] = 0.5 - 0.5 cos(2 pi k / n_fft)`;
- magnitude (not power) spectrum `|STFT|`, as Tacotron's mel targets;
- **HTK** mel scale `mel(f) = 2595 log10(1 + f / 700)` with triangular filters whose peaks are 1 (librosa's
  `filters.mel(htk=True, norm=None)`), `n_mels + 2` points equally spaced in mel between `f_min` and `f_max`;
- `log(max(mel, floor))`, floor 1e-5 (Tacotron's clamp).

Utterances of different lengths are one `Padded` batch: the audio `[B, S]` padded with zeros plus the number of
samples of each; the features are `Padded([B, F, n_mels], mask)` with mask True on the whole frames of each
utterance, so one compiled program serves every length up to `S`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from gvlab.data.padded import Padded
from gvlab.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class MelConfig:
    """Log-mel settings (defaults: 22.05 kHz espeak-ng audio, 46 ms windows, 23 ms hop, 40 HTK mel bands)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 40
    f_min: float = 0.0
    f_max: float = 8000.0
    floor: float = 1e-5

    def __post_init__(self):
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {self.f_min}, {self.f_max}")
        if self.hop < 1 or self.n_fft < 2 or self.n_mels < 1:
            raise ConfigError("hop, n_fft and n_mels must be positive (n_fft >= 2)")


def hz_to_mel(f):
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular HTK filters `[n_fft // 2 + 1, n_mels]` (float32), peak 1, no area normalisation."""
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n (the STFT convention: n-periodic, so overlapping windows add up evenly)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def num_frames(num_samples, cfg: MelConfig):
    """Whole frames of a signal: `1 + (n - n_fft) // hop`, and 0 when `n < n_fft` (works on ints and arrays)."""
    n = jnp.asarray(num_samples)
    return jnp.where(n >= cfg.n_fft, 1 + (n - cfg.n_fft) // cfg.hop, 0)


def frame(audio: Float[Array, "*batch s"], cfg: MelConfig) -> Float[Array, "*batch f n_fft"]:
    """Overlapping frames `[..., F, n_fft]` of a (padded) signal, `F = num_frames(S)` (a gather, jit-friendly)."""
    count = max(0, 1 + (audio.shape[-1] - cfg.n_fft) // cfg.hop)  # static: shapes are Python ints
    index = cfg.hop * np.arange(count)[:, None] + np.arange(cfg.n_fft)[None, :]
    return audio[..., index]


def log_mel(audio: Float[Array, "*batch s"], num_samples: Int[Array, "*batch"], cfg: MelConfig) -> Padded:
    """Log-mel spectrogram of zero-padded audio: `Padded(log(max(|STFT| @ M, floor)) [..., F, n_mels], mask)`.

    Args:
        audio: waveforms in [-1, 1], zero-padded to a common length S.
        num_samples: the real length of each waveform; frames reaching past it are masked out (their values are
            computed on padding and must not be read).
        cfg: the feature settings.
    """
    if audio.shape[-1] < cfg.n_fft:
        raise ConfigError(f"audio has {audio.shape[-1]} samples, fewer than n_fft={cfg.n_fft}")
    frames = frame(jnp.asarray(audio, jnp.float32), cfg)
    frames = frames * jnp.asarray(hann(cfg.n_fft)).reshape((1,) * (frames.ndim - 1) + (cfg.n_fft,))
    magnitude = jnp.abs(jnp.fft.rfft(frames, axis=-1))
    mel = magnitude @ jnp.asarray(mel_filterbank(cfg))
    values = jnp.log(jnp.maximum(mel, cfg.floor))
    count = jnp.expand_dims(num_frames(num_samples, cfg), -1)
    mask = jnp.arange(values.shape[-2]).reshape((1,) * (count.ndim - 1) + (-1,)) < count
    return Padded(values, mask)


log_mel_jit = jax.jit(log_mel, static_argnums=2)
