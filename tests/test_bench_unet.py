"""`benchmarks/bench_unet.py` runs (quick mode) and prints its ratios; its torch U-Net is gvlab's U-Net.

Skipped when torch is not installed (it comes with the [bench] extra, not with [test]). No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_unet.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass resolves annotations through it)."""
    if "bench_unet" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_unet", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_unet"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_unet"]


def test_networks_have_equal_parameter_counts():
    import jax

    from gvlab.nn.unet import UNet

    bench = _bench()
    for prob in (bench.Problem(), bench.Problem(channels=(8, 16), num_classes=5, image_channels=3)):
        model = UNet(prob.channels, prob.num_classes)
        shapes = jax.eval_shape(model.init, jax.random.key(0),
                                jax.ShapeDtypeStruct((1, *prob.image_shape), jax.numpy.float32),
                                jax.ShapeDtypeStruct((1,), jax.numpy.float32))
        n_jax = sum(s.size for s in jax.tree.leaves(shapes))
        tmodel = bench.TorchUNet(prob.image_channels, prob.channels, prob.num_classes)
        assert n_jax == sum(p.numel() for p in tmodel.parameters()), prob
        # Same layers, not only the same total: every flax array has a torch array of the same size.
        torch_sizes = {name: p.numel() for name, p in tmodel.named_parameters()}
        flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
        flax_sizes = {".".join([k.key for k in path][:-1] + ["bias" if path[-1].key == "bias" else "weight"]):
                      s.size for path, s in flat}
        assert flax_sizes == torch_sizes


def test_quick_run_prints_ratios(capsys):
    bench = _bench()
    threads = torch.get_num_threads()
    results = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads  # the benchmark restores torch's thread count
    assert results["parameters"]["gvlab"] == results["parameters"]["torch"]
    assert re.search(r"train step, batch \d+ \[ms/step\].*\d+\.\d+x", out), out
    assert re.search(r"sampler, \d+ Euler steps x batch \d+ \[samples/s\].*\d+\.\d+x", out), out
    for key in ("torch_over_gvlab_train_median", "torch_over_gvlab_sample_median"):
        assert results[key] > 0
