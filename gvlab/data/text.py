"""Byte-level text from Python's own standard-library sources: a corpus that ships with every Python, no download.

The corpus concatenates, in sorted path order, every `.py` file under a fixed list of standard-library packages
(`json`, `email`, `http`, `asyncio` by default: about 1.1 MB on CPython 3.11), read as bytes (vocabulary 256).
The first `1 - validation_fraction` of the bytes train, the rest validate, so the split is deterministic and the
two parts share no window. The exact bytes depend on the Python version; `Corpus.files` records what was read.

Batches are random windows of `length + 1` bytes (inputs and next-byte targets), a pure function of `(key, step)`.

Examples:
    >>> corpus = load_stdlib_corpus(packages=("json",))
    >>> corpus.files[0]
    'json/__init__.py'
    >>> corpus.train.dtype, bool(corpus.train.size > 10 * corpus.validation.size)
    (dtype('uint8'), True)
    >>> source = window_batches(corpus.train, batch_size=4, length=16)
    >>> source.batch(source.arrays, jax.random.key(0), jnp.asarray(3))["tokens"].shape
    (4, 17)
"""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, UInt8

from gvlab.errors import ConfigError
from gvlab.types import Batch, DataSource, PRNGKey

DEFAULT_PACKAGES = ("json", "email", "http", "asyncio")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Train and validation bytes, and the files (relative to the stdlib folder) they came from, in order."""

    train: np.ndarray
    validation: np.ndarray
    files: tuple[str, ...]


def load_stdlib_corpus(packages: tuple[str, ...] = DEFAULT_PACKAGES, validation_fraction: float = 0.05) -> Corpus:
    """Concatenate the sorted `.py` files of `packages` from this Python's standard library and split them.

    Raises:
        ConfigError: a package is not a folder of the standard library, or the fraction is not in (0, 1).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for package in packages:
        folder = root / package
        if not folder.is_dir():
            raise ConfigError(f"{package!r} is not a package folder of the standard library at {root}")
        files.extend(sorted(folder.rglob("*.py")))
    data = np.frombuffer(b"".join(path.read_bytes() for path in files), dtype=np.uint8)
    cut = int(round(len(data) * (1.0 - validation_fraction)))
    return Corpus(train=data[:cut].copy(), validation=data[cut:].copy(),
                  files=tuple(path.relative_to(root).as_posix() for path in files))


def window_batches(tokens: UInt8[np.ndarray, " N"], batch_size: int, length: int) -> DataSource:
    """Random windows of `length + 1` tokens: `batch(arrays, key, step) = {"tokens": int32 [batch_size, length + 1]}`.

    Window starts are uniform over the corpus, drawn from `fold_in(key, step)`; the corpus travels as the source's
    `arrays` (an argument of the compiled step, not a constant).
    """
    if length + 1 > len(tokens):
        raise ConfigError(f"length {length} needs at least {length + 1} tokens, the corpus has {len(tokens)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    num_starts = len(tokens) - length

    def batch(arrays, key: PRNGKey, step: jax.Array) -> Batch:
        starts = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, num_starts)
        return {"tokens": gather_windows(arrays["tokens"], starts, length + 1)}

    return DataSource(arrays={"tokens": jnp.asarray(tokens)}, batch=batch)


def gather_windows(tokens: UInt8[Array, " N"], starts: Int[Array, " B"], size: int) -> Int[Array, "B S"]:
    """`tokens[start : start + size]` for every start, as int32."""
    return jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(tokens, s, size))(starts).astype(jnp.int32)


def evenly_spaced_windows(tokens: UInt8[np.ndarray, " N"], count: int, length: int) -> Int[np.ndarray, "C S"]:
    """`count` fixed windows of `length + 1` tokens spread evenly over `tokens` (a deterministic validation set).

    Built on the host with NumPy (no device program to compile), as int32.
    """
    if length + 1 > len(tokens):
        raise ConfigError(f"length {length} needs at least {length + 1} tokens, the corpus has {len(tokens)}")
    starts = np.linspace(0, len(tokens) - length - 1, count).astype(np.int64)
    return np.asarray(tokens)[starts[:, None] + np.arange(length + 1)[None, :]].astype(np.int32)
