"""Real bitstreams: entropy coding of quantised symbols with `constriction` (the only module that imports it).

`constriction` (Bamler 2022, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS): a Statistician's
Perspective"; version 0.5) provides a range coder (`stream.queue`, first in first out) and an ANS coder
(`stream.stack`, last in first out). Every symbol i is coded with `stream.model.Categorical(perfect=False)` and its
own probability row p_i (the model's own probabilities, in float64, floored at `FLOOR` and renormalised so that no
symbol has zero probability: a zero would make an observed symbol uncodable). The ideal code length is
sum_i -log2 p_i[s_i]; the range coder spends a few 32-bit words more (its termination), so

    len(payload) in bits <= sum_i -log2 p_i[s_i] (1 + eps) + FLUSH_BITS                                   (overhead)

with eps the relative cost of quantising the probabilities to the coder's fixed-point precision and FLUSH_BITS =
64 the end-of-stream constant: constriction's default range coder has 32-bit words and a 64-bit state whose range
stays >= 2^32 (constriction `notes/range-coding.md`, "Internal Coder State"), so sealing writes the resolved words
plus at most the 2 words of the state (one suffices: a point of the final interval is one word followed by zeros).

A bitstream is `HEADER_BYTES` of header (symbol count and alphabet size, two uint32) then the coder's words.
Symbols and probabilities are numpy arrays: coding is sequential host code and does not run under jit.
"""

from __future__ import annotations

import numpy as np

from gvlab.errors import ConfigError

FLOOR = 1e-9
HEADER_BYTES = 8  # uint32 symbol count + uint32 alphabet size
FLUSH_BITS = 64  # the range coder's end-of-stream constant: at most its 64-bit state (2 words of 32 bits)


def _constriction():
    try:
        import constriction
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("gvlab.compression.coding needs `constriction` (>= 0.4): `pip install constriction` "
                          "(it is locked in requirements.lock)") from error
    return constriction


def floored(probs, floor: float = FLOOR) -> np.ndarray:
    """float64 rows max(p, floor) / sum: every symbol codable, rows summing to 1."""
    p = np.maximum(np.asarray(probs, np.float64), floor)
    return p / p.sum(-1, keepdims=True)


def ideal_bits(symbols, probs, floor: float = FLOOR) -> float:
    """sum_i -log2 p_i[s_i] under the floored rows (the likelihood rate the coder is compared with)."""
    symbols, p = _check(symbols, probs)
    p = floored(p, floor)
    return float(-np.log2(p[np.arange(len(symbols)), symbols]).sum())


def _check(symbols, probs) -> tuple[np.ndarray, np.ndarray]:
    symbols = np.asarray(symbols).reshape(-1)
    probs = np.asarray(probs)
    if probs.ndim == 1:
        probs = np.broadcast_to(probs, (len(symbols), probs.shape[0]))
    if probs.ndim != 2 or probs.shape[0] != len(symbols):
        raise ConfigError(f"need one probability row per symbol: {len(symbols)} symbols, probs {probs.shape}")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= probs.shape[1]):
        raise ConfigError(f"symbols must lie in 0..{probs.shape[1] - 1}, got {symbols.min()}..{symbols.max()}")
    return symbols.astype(np.int32), probs


def encode(symbols, probs, coder: str = "range", floor: float = FLOOR) -> bytes:
    """The bitstream (header + payload) of `symbols` [N] under `probs` [N, A] (or one row [A] shared by all).

    Args:
        symbols: integers in 0..A-1, any shape (flattened in C order).
        probs: the model's probabilities, one row per symbol or one shared row.
        coder: "range" (queue, FIFO) or "ans" (stack, LIFO).
    """
    cn = _constriction()
    symbols, probs = _check(symbols, probs)
    p = floored(probs, floor)
    family = cn.stream.model.Categorical(perfect=False)
    if coder == "range":
        encoder = cn.stream.queue.RangeEncoder()
        encoder.encode(symbols, family, p)
    elif coder == "ans":
        encoder = cn.stream.stack.AnsCoder()
        encoder.encode_reverse(symbols, family, p)  # reversed, so that decoding pops them in order
    else:
        raise ConfigError(f"coder must be 'range' or 'ans', got {coder!r}")
    payload = np.asarray(encoder.get_compressed(), np.uint32)
    header = np.array([len(symbols), p.shape[1]], np.uint32)
    return header.tobytes() + payload.tobytes()


def decode(stream: bytes, probs, coder: str = "range", floor: float = FLOOR) -> np.ndarray:
    """The symbols [N] (int32) of a bitstream from `encode` under the same `probs`."""
    cn = _constriction()
    count, alphabet = np.frombuffer(stream[:HEADER_BYTES], np.uint32)
    probs = np.asarray(probs)
    if probs.ndim == 1:
        probs = np.broadcast_to(probs, (int(count), probs.shape[0]))
    if probs.shape != (count, alphabet):
        raise ConfigError(f"the stream holds {count} symbols of alphabet {alphabet}; probs have shape {probs.shape}")
    payload = np.frombuffer(stream[HEADER_BYTES:], np.uint32).copy()
    family = cn.stream.model.Categorical(perfect=False)
    p = floored(probs, floor)
    if coder == "range":
        return np.asarray(cn.stream.queue.RangeDecoder(payload).decode(family, p), np.int32)
    if coder == "ans":
        return np.asarray(cn.stream.stack.AnsCoder(payload).decode(family, p), np.int32)
    raise ConfigError(f"coder must be 'range' or 'ans', got {coder!r}")


def payload_bits(stream: bytes) -> int:
    """Bits of the stream after the header (its coded symbols)."""
    return 8 * (len(stream) - HEADER_BYTES)
