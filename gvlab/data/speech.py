"""Speech with controlled prosody: short utterances synthesised by espeak-ng at a chosen pitch and rate.

Each utterance is 2-4 words drawn from a small vocabulary, spoken by one fixed voice (`en-us`) with espeak-ng's
pitch adjustment `-p` (0-99, 50 is the voice's default) and speaking rate `-s` (words per minute) drawn uniformly
from integer ranges. Pitch and rate are the prosody factors the Capacitron experiment transfers and samples; the
text is known to the model. espeak-ng is deterministic, so (text, pitch, rate) fixes the audio.

The audio (16-bit mono WAV at 22.05 kHz, read from `espeak-ng --stdout`) is cached in a folder outside the
repository: `$GVLAB_SPEECH_CACHE`, else `$XDG_CACHE_HOME/gvlab/espeak` (`~/.cache/gvlab/espeak`), else,
where that cannot be written (a read-only home in CI), `<tempdir>/gvlab-espeak`; a file per (voice, pitch, rate,
text), never committed.
Utterances have different lengths: text ids and features are `gvlab.data.padded.Padded` batches.

Debian/Ubuntu package: `espeak-ng` (pulls `espeak-ng-data` and `libespeak-ng1`). Without it, `synthesise`
raises `DataError` saying how to install it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gvlab.data.external import DataError
from gvlab.data.padded import pad

ESPEAK = "espeak-ng"
VOICE = "en-us"
CACHE_ENV = "GVLAB_SPEECH_CACHE"
SAMPLE_RATE = 22050
WORDS = ("the", "cat", "sat", "on", "a", "mat", "green", "boat", "sails", "over", "calm", "water", "my", "old",
         "friend", "reads", "books", "at", "night", "we", "walk", "home", "after", "rain", "small", "birds", "sing",
         "near", "river", "sun", "rises", "slowly", "people", "talk", "about", "music", "dogs", "run", "fast",
         "today")
ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # id 0 is padding; character c has id ALPHABET.index(c) + 1
PITCH_RANGE = (10, 90)  # espeak-ng -p, inclusive
RATE_RANGE = (120, 240)  # espeak-ng -s (words per minute), inclusive


def espeak_path() -> str:
    """The espeak-ng executable, or a `DataError` with the install command."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise DataError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu; it pulls "
                        "espeak-ng-data and libespeak-ng1). gvlab.data.speech synthesises its utterances with it.")
    return path


def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """The audio cache (created): `folder`, else `$GVLAB_SPEECH_CACHE`, else `$XDG_CACHE_HOME/gvlab/espeak`
    (default `~/.cache/gvlab/espeak`, as `gvlab.compile_cache`), else `<tempdir>/gvlab-espeak` where the user cache
    cannot be written. A folder given explicitly (argument or variable) that cannot be created is an error."""
    chosen = folder or os.environ.get(CACHE_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for path in (Path(base) / "gvlab" / "espeak", Path(tempfile.gettempdir()) / "gvlab-espeak"):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise DataError(f"no writable folder for the espeak-ng audio cache: set ${CACHE_ENV}")


def read_wav_bytes(data: bytes) -> np.ndarray:
    """16-bit mono PCM samples of a WAV stream as float32 in [-1, 1].

    espeak-ng writes `--stdout` before it knows the length, so the RIFF and data sizes are placeholders: the
    samples are everything after the `data` chunk header.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError("espeak-ng did not return a WAV stream")
    at = 12
    while at + 8 <= len(data):
        chunk, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if chunk == b"fmt ":
            channels, rate = int.from_bytes(data[at + 10:at + 12], "little"), int.from_bytes(data[at + 12:at + 16],
                                                                                            "little")
            bits = int.from_bytes(data[at + 22:at + 24], "little")
            if (channels, rate, bits) != (1, SAMPLE_RATE, 16):
                raise DataError(f"expected 16-bit mono {SAMPLE_RATE} Hz audio, got {bits}-bit x{channels} {rate} Hz")
        if chunk == b"data":
            body = data[at + 8:]
            body = body[:len(body) - len(body) % 2]
            return np.frombuffer(body, "<i2").astype(np.float32) / 32768.0
        at += 8 + size
    raise DataError("WAV stream without a data chunk")


def synthesise(text: str, pitch: int, rate: int, voice: str = VOICE,
               folder: str | os.PathLike | None = None) -> np.ndarray:
    """Audio of `text` spoken at espeak-ng pitch `pitch` (0-99) and rate `rate` (words/min), cached on disk."""
    if not (0 <= pitch <= 99 and 80 <= rate <= 450):
        raise ValueError(f"pitch must be in 0..99 and rate in 80..450 words/min, got {pitch}, {rate}")
    name = hashlib.sha1(f"{voice}|{pitch}|{rate}|{text}".encode()).hexdigest()[:20]
    path = cache_dir(folder) / f"{name}.wav"
    if not path.exists():
        out = subprocess.run([espeak_path(), "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", text],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise DataError(f"espeak-ng failed on {text!r}: {out.stderr.decode(errors='replace')[:200]}")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(out.stdout)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return read_wav_bytes(path.read_bytes())


def encode_text(text: str) -> np.ndarray:
    """Character ids (1..27; 0 is padding)."""
    return np.array([ALPHABET.index(c) + 1 for c in text], np.int32)


def draw_prompts(seed: int, num: int, words=(2, 4)) -> dict[str, np.ndarray | list[str]]:
    """`num` (text, pitch, rate) triples, each factor independent: texts of 2-4 random words, uniform pitch/rate."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(words[0], words[1] + 1))) for _ in range(num)]
    pitch = rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1, num)
    rate = rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1, num)
    return {"text": texts, "pitch": pitch.astype(np.int32), "rate": rate.astype(np.int32)}


def corpus(texts, pitch, rate, *, voice: str = VOICE, folder=None, workers: int = 2) -> dict[str, np.ndarray]:
    """Synthesise every (text, pitch, rate): zero-padded audio, lengths and padded character ids.

    Returns `{"audio": [B, S] float32, "num_samples": [B], "text": Padded([B, L] int32, mask), "pitch": [B],
    "rate": [B]}` (host NumPy arrays).
    """
    espeak_path()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        audio = list(pool.map(lambda a: synthesise(*a, voice=voice, folder=folder), zip(texts, pitch, rate)))
    padded = pad(audio)
    return {"audio": padded.values, "num_samples": padded.mask.sum(-1).astype(np.int32),
            "text": pad([encode_text(t) for t in texts]), "pitch": np.asarray(pitch, np.float32),
            "rate": np.asarray(rate, np.float32)}
