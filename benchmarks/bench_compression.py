"""Compression encode/decode throughput: `gvlab.compression` (jit) against a PyTorch eager implementation.

The computation (McQuic's UMG quantiser, `gvlab.compression.mixture`): latents y [N, m, d] (N latent vectors, m = 2
codebooks of K = 16 codewords, d = 8):

* encode: logits l_jk = log pi_jk - kappa_j ||y_j - c_jk||^2, symbols k* = argmax_k l_jk, the likelihood bits
  -log2 pi_{j,k*}, then constriction's range coder with the categorical pi_j (float64, floored) -> bytes;
* decode: constriction's range decoder -> symbols -> codewords y_hat_j = c_{j,k*}.

The quantisation / likelihood part runs in gvlab (one jitted function each way) or in PyTorch eager (float32,
`torch.set_num_threads` = the CPU cores JAX uses, no `torch.compile`) on identical inputs; the entropy coder is the
same `gvlab.compression.coding` (constriction) in both, so the ratio isolates the array code and the end-to-end
numbers show how much of the time the coder takes. Correctness first: symbols, bits and decoded vectors must agree
before anything is timed. Each part is timed in interleaved rounds whose order rotates (`benchmarks/rounds.py`);
throughput in vectors/s (one latent vector = 16 pixels in `compression/mcquic`) and torch / gvlab time ratios.

    pip install -e '.[bench]'   # torch, CPU build
    python benchmarks/bench_compression.py [--vectors 65536] [--calls 5] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import rounds  # noqa: E402
from gvlab.compression import coding, mixture  # noqa: E402
from gvlab.compression import quantisers as vq  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Problem:
    vectors: int = 65536
    groups: int = 2
    codebook_size: int = 16
    dim: int = 8
    seed: int = 0


def make_inputs(prob: Problem):
    """Latents, codebooks, mixture logits and log precisions (numpy float32), drawn once."""
    rng = np.random.default_rng(prob.seed)
    y = rng.normal(size=(prob.vectors, prob.groups, prob.dim)).astype(np.float32)
    codebooks = rng.normal(size=(prob.groups, prob.codebook_size, prob.dim)).astype(np.float32)
    log_weights = rng.normal(size=(prob.groups, prob.codebook_size)).astype(np.float32)
    log_precision = np.array([0.5, -0.3][: prob.groups], np.float32)
    return y, codebooks, log_weights, log_precision


def jax_functions():
    """(encode_arrays, decode_arrays), jitted: (y, c, w, lp) -> (symbols, bits, pi); (symbols, c) -> y_hat."""

    def encode(y, codebooks, log_weights, log_precision):
        symbols = mixture.map_indices(y, codebooks, log_weights, log_precision)
        log_pi = jax.nn.log_softmax(log_weights, -1)
        bits = -jnp.sum(jnp.take_along_axis(jnp.broadcast_to(log_pi, symbols.shape + log_pi.shape[-1:]),
                                            symbols[..., None], -1)) / jnp.log(2.0)
        return symbols, bits, jnp.exp(log_pi)

    return jax.jit(encode), jax.jit(vq.lookup)


class TorchCodec:
    """The same two array functions in PyTorch eager."""

    def __init__(self, codebooks, log_weights, log_precision):
        self.c = torch.from_numpy(codebooks)
        self.w = torch.from_numpy(log_weights)
        self.lp = torch.from_numpy(log_precision)

    def encode(self, y):
        y = torch.from_numpy(y)
        cross = torch.einsum("nmd,mkd->nmk", y, self.c)
        dist = (y * y).sum(-1, keepdim=True) - 2 * cross + (self.c * self.c).sum(-1)
        log_pi = torch.log_softmax(self.w, -1)
        logits = log_pi - torch.clamp(torch.exp(self.lp), min=mixture.MIN_PRECISION)[:, None] * dist
        symbols = logits.argmax(-1)
        bits = -torch.gather(log_pi.expand(symbols.shape + log_pi.shape[-1:]), -1, symbols[..., None]).sum()
        return symbols.numpy(), float(bits / np.log(2.0)), torch.exp(log_pi).numpy()

    def decode(self, symbols):
        s = torch.from_numpy(np.asarray(symbols, np.int64))
        return self.c[torch.arange(self.c.shape[0]), s].numpy()


def _probs(pi, n):
    return np.broadcast_to(np.asarray(pi, np.float64)[None], (n,) + pi.shape).reshape(-1, pi.shape[-1])


def check_agreement(prob: Problem, inputs) -> dict:
    """Symbols, likelihood bits and decoded vectors of the two implementations; raises on disagreement."""
    y, c, w, lp = inputs
    enc, dec = jax_functions()
    s_jax, bits_jax, pi = (np.asarray(a) for a in enc(y, c, w, lp))
    torch_codec = TorchCodec(c, w, lp)
    s_torch, bits_torch, _ = torch_codec.encode(y)
    flipped = float(np.mean(s_jax != s_torch))  # ties within float32 rounding only
    if flipped > 1e-4:
        raise AssertionError(f"symbols differ on {flipped:.2%} of the vectors")
    stream = coding.encode(s_jax.reshape(-1), _probs(pi, prob.vectors))
    decoded = coding.decode(stream, _probs(pi, prob.vectors)).reshape(s_jax.shape)
    if not np.array_equal(decoded, s_jax):
        raise AssertionError("the bitstream did not decode to the symbols")
    y_jax, y_torch = np.asarray(dec(jnp.asarray(decoded), c)), torch_codec.decode(decoded)
    np.testing.assert_allclose(y_jax, y_torch, rtol=0, atol=0)
    if abs(bits_jax - bits_torch) > 1e-4 * abs(bits_jax):
        raise AssertionError(f"likelihood bits differ: {bits_jax} vs {bits_torch}")
    return {"flipped_fraction": flipped, "bits": float(bits_jax), "payload_bits": coding.payload_bits(stream)}


def contenders(prob: Problem, inputs, threads: int) -> tuple[dict[str, dict], float]:
    """`{part: {"gvlab": fn, "torch-<threads>thr": fn}}` for quantise, encode (quantise + range coder), dequantise
    and decode (range decoder + dequantise), all on the same inputs and the same stream; and gvlab's compile time."""
    y, c, w, lp = inputs
    enc, dec = jax_functions()
    t0 = time.perf_counter()
    s, _, pi = (np.asarray(a) for a in jax.block_until_ready(enc(y, c, w, lp)))
    jax.block_until_ready(dec(jnp.asarray(s), c))
    compile_s = time.perf_counter() - t0
    probs = _probs(pi, prob.vectors)
    stream = coding.encode(s.reshape(-1), probs)
    torch_codec = TorchCodec(c, w, lp)
    name = f"torch-{threads}thr"

    def jax_encode():
        symbols = np.asarray(enc(y, c, w, lp)[0])
        return coding.encode(symbols.reshape(-1), probs)

    def torch_encode():
        return coding.encode(torch_codec.encode(y)[0].reshape(-1), probs)

    def decoded():
        return coding.decode(stream, probs).reshape(s.shape)

    parts = {
        "quantise": {"gvlab": lambda: enc(y, c, w, lp), name: lambda: torch_codec.encode(y)},
        "encode": {"gvlab": jax_encode, name: torch_encode},
        "dequantise": {"gvlab": lambda: dec(jnp.asarray(s), c), name: lambda: torch_codec.decode(s)},
        "decode": {"gvlab": lambda: dec(jnp.asarray(decoded()), c), name: lambda: torch_codec.decode(decoded())},
    }
    return parts, compile_s


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=65536)
    parser.add_argument("--calls", type=int, default=5, help="calls per implementation per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    threads, machine = rounds.machine(torch)
    prob = Problem(vectors=args.vectors)
    inputs = make_inputs(prob)
    agreement = check_agreement(prob, inputs)
    print(f"agreement ({prob.vectors} vectors): {agreement}")
    parts, compile_s = contenders(prob, inputs, threads)
    report = {"problem": dataclasses.asdict(prob), "machine": machine, "agreement": agreement, "parts": {}}
    for part, fns in parts.items():
        print(f"--- {part}")
        report["parts"][part] = rounds.compare(fns, calls=args.calls, repeats=args.repeats, batch=prob.vectors,
                                               unit="vectors", what=part, threads=threads,
                                               base={"compile_s": compile_s})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
