"""A small text + reference-mel prosody model with a variational embedding (a scaled-down Capacitron-Tacotron).

One example at a time (no batch axis; the method vmaps it), with `Padded`-style masks: entries where the mask is
False are zeroed before every convolution and excluded from every reduction, so padding never leaks.

- Text encoder: character embedding, two 1-D convolutions (kernel 5, ReLU) -> `h [L, W]`.
- Text summary: masked mean of `h` and log L (Capacitron's `TextSummary` is an LSTM over the encoder outputs;
  a masked mean keeps the model small).
- Reference encoder: two 1-D convolutions (kernel 3, ReLU) over the mel frames, their masked mean, the masked
  mean of the frames themselves (the utterance's mean spectrum, where pitch shows linearly), and log T
  (Capacitron's `ReferenceEncoder`: 6 conv2d + LSTM, whose last state sees the length; a masked mean does not,
  hence log T).
- Posterior (Var+Txt, Coqui `capacitron_layers.py::PostEncoderMLP`): Linear, tanh, Linear -> (mu, softplus).
- Decoder: a duration head `MLP([summary, z]) -> log(T / L)` (frames per character), and frame t of T attends
  to the characters with fixed Gaussian weights centred at `(t + 1/2) L / T` (a uniform alignment in place of
  Tacotron's learned attention), then `MLP([context, z, summary, position]) -> mel frame`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gvlab.data.padded import masked_mean, masked_softmax
from gvlab.nn.mlp import MLP

ALIGN_WIDTH = 1.5  # characters: the std of the fixed Gaussian alignment


class ProsodyModel(nn.Module):
    """Text + reference mel -> q(z) -> mel frames (see the module docstring).

    Attributes:
        vocab: number of character ids (0 is padding).
        n_mels: mel bands of the frames.
        width: channels of the encoders.
        latent_dim: size of z.
        hidden: widths of the decoder's frame MLP and the duration head.
    """

    vocab: int
    n_mels: int
    width: int = 64
    latent_dim: int = 16
    hidden: tuple[int, ...] = (128, 128)

    def setup(self):
        self.embed = nn.Embed(self.vocab, self.width)
        self.text_conv = [nn.Conv(self.width, (5,), padding="SAME") for _ in range(2)]
        self.ref_conv = [nn.Conv(self.width, (3,), padding="SAME") for _ in range(2)]
        self.post_hidden = nn.Dense(self.width)
        self.post_out = nn.Dense(2 * self.latent_dim)
        self.duration = MLP((*self.hidden, 1))
        self.frame = MLP((*self.hidden, self.n_mels))

    def _convs(self, convs, x, mask):
        for conv in convs:
            x = jnp.where(mask[:, None], x, 0.0)
            x = nn.relu(conv(x[None])[0])
        return x

    def text(self, ids, mask):
        """Per-character features `[L, W]` and the summary `[W + 1]`."""
        h = self._convs(self.text_conv, self.embed(ids), mask)
        count = jnp.maximum(mask.sum(), 1).astype(jnp.float32)
        return h, jnp.concatenate([masked_mean(h, mask), jnp.log(count)[None]])

    def encode(self, ids, text_mask, mel, mel_mask):
        """Posterior `(mu [Z], sigma [Z])` of z given the text and the reference mel."""
        _, summary = self.text(ids, text_mask)
        r = self._convs(self.ref_conv, mel, mel_mask)
        frames = jnp.maximum(mel_mask.sum(), 1).astype(jnp.float32)
        ref = jnp.concatenate([masked_mean(r, mel_mask), masked_mean(mel, mel_mask), jnp.log(frames)[None]])
        out = self.post_out(jnp.tanh(self.post_hidden(jnp.concatenate([ref, summary]))))
        return out[:self.latent_dim], nn.softplus(out[self.latent_dim:]) + 1e-4

    def log_duration(self, ids, text_mask, z):
        """Predicted log(T / L), frames per character."""
        _, summary = self.text(ids, text_mask)
        return self.duration(jnp.concatenate([summary, z]))[0]

    def decode(self, ids, text_mask, z, num_frames, size: int):
        """Mel frames `[size, n_mels]` of an utterance of `num_frames` frames (entries beyond it are not real)."""
        h, summary = self.text(ids, text_mask)
        frames = jnp.maximum(num_frames, 1).astype(jnp.float32)
        length = jnp.maximum(text_mask.sum(), 1).astype(jnp.float32)
        u = (jnp.arange(size) + 0.5) / frames  # relative position in the utterance
        centre = u * length
        logits = -jnp.square(jnp.arange(h.shape[0])[None, :] + 0.5 - centre[:, None]) / (2 * ALIGN_WIDTH ** 2)
        context = masked_softmax(logits, text_mask[None, :]) @ h
        position = jnp.stack([u, jnp.sin(jnp.pi * u), jnp.cos(jnp.pi * u)], -1)
        rows = jnp.broadcast_to(jnp.concatenate([summary, z]), (size, summary.shape[0] + z.shape[0]))
        return self.frame(jnp.concatenate([context, rows, position], -1))

    def __call__(self, ids, text_mask, mel, mel_mask, eps):
        """Everything the loss needs, for `init`: (mu, sigma), log-duration, frames."""
        mu, sigma = self.encode(ids, text_mask, mel, mel_mask)
        z = mu + sigma * eps
        return mu, sigma, self.log_duration(ids, text_mask, z), self.decode(ids, text_mask, z, mel_mask.sum(),
                                                                           mel.shape[0])
