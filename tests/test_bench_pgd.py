"""The PyTorch eager PGD of `benchmarks/bench_pgd.py` computes the adversarial examples gvlab computes (small sizes).

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

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pgd.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass resolves annotations through it)."""
    if "bench_pgd" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_pgd", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_pgd"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_pgd"]


def test_torch_pgd_gives_gvlab_adversarial_examples_from_the_same_start():
    bench = _bench()
    prob = bench.Problem(batch=64, hidden=(32,), steps=5)
    params, predict, x, y, key = bench.make_inputs(prob)
    compiled, _ = bench.jax_attack(prob, params, predict, x, y, key)
    x_jax = compiled(x, y, key)
    x_torch = bench.TorchAttack(prob, params, x, y, key)().numpy()
    report = bench.check_agreement(prob, x_jax, x_torch)  # raises on disagreement
    assert report["flipped_fraction"] <= bench.MAX_FLIPPED, report
    # The attack stays in the eps-ball and the input range, and it did move the inputs.
    moved = np.abs(np.asarray(x_jax) - np.asarray(x))
    assert np.all(moved <= prob.eps + 1e-6) and np.min(x_jax) >= 0.0 and np.max(x_jax) <= 1.0
    assert np.mean(moved > 1e-6) > 0.3
    # Negative control: another start (another key) gives other adversarial examples, which the check rejects.
    other = bench.TorchAttack(prob, params, x, y, jax.random.key(123))().numpy()
    with pytest.raises(AssertionError, match="disagree"):
        bench.check_agreement(prob, x_jax, other)
