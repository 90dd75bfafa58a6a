"""The PyTorch eager quantiser of `benchmarks/bench_compression.py` computes what gvlab computes (small sizes).

Skipped when torch is not installed (it comes with the [bench] extra, not with [test]).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compression.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass resolves annotations through it)."""
    if "bench_compression" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_compression", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_compression"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_compression"]


def test_torch_quantiser_agrees_with_gvlab_and_the_bitstream_round_trips():
    bench = _bench()
    prob = bench.Problem(vectors=512)
    report = bench.check_agreement(prob, bench.make_inputs(prob))  # raises on disagreement
    assert report["flipped_fraction"] == 0.0
    assert 0 <= report["payload_bits"] - report["bits"] <= 96
