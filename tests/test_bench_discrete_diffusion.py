"""The PyTorch eager sampler of `benchmarks/bench_discrete_diffusion.py` computes gvlab's samples (small sizes).

Skipped when torch is not installed (it comes with the [bench] extra, not with [test]).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_discrete_diffusion.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass resolves annotations through it)."""
    if "bench_discrete_diffusion" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_discrete_diffusion", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_discrete_diffusion"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_discrete_diffusion"]


def test_torch_sampler_replays_gvlab_samples_from_the_same_noise():
    bench = _bench()
    prob = bench.Problem(batch=40, steps=4, hidden=(32,), class_features=8)
    path, net, params, labels, key = bench.make_inputs(prob)
    compiled, _ = bench.jax_sampler(prob, path, net, params, labels, key)
    x_jax = compiled(params, key)
    replay = bench.TorchSampler(prob, path, net, params, labels, noise=bench.gvlab_noise(prob, path, key))
    report = bench.check_agreement(x_jax, replay().numpy())  # raises on disagreement
    assert report["different_sequences"] <= bench.MAX_DIFFERENT
    assert x_jax.shape == (40, 64) and int(np.max(x_jax)) < prob.tokens  # no [MASK] left
    # Negative control: the noise of another key gives other samples, which the check rejects.
    other = bench.TorchSampler(prob, path, net, params, labels,
                               noise=bench.gvlab_noise(prob, path, jax.random.key(123)))().numpy()
    with pytest.raises(AssertionError, match="disagree"):
        bench.check_agreement(x_jax, other)
    # The self-drawn torch sampler runs and returns tokens.
    own = bench.TorchSampler(prob, path, net, params, labels)()
    assert tuple(own.shape) == (40, 64) and int(own.max()) < prob.tokens
