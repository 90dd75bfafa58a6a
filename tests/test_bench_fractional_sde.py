"""The PyTorch eager step of `benchmarks/bench_fractional_sde.py` computes what gvlab computes (small sizes).

Skipped when torch is not installed (it comes with the [bench] extra, not with [test]).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fractional_sde.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass resolves annotations through it)."""
    if "bench_fractional_sde" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_fractional_sde", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_fractional_sde"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_fractional_sde"]


def test_torch_step_matches_gvlab_diffrax_and_scan():
    bench = _bench()
    # K = 5 on gamma_max = 20 keeps both branches of the incomplete-gamma port (series and continued fraction).
    prob = bench.Problem(dim=3, num_terms=5, hidden=(16, 16), num_steps=40, batch=4, num_obs=4)
    params, keys, obs = bench.make_inputs(prob)
    diffrax_step, _ = bench.jax_step(prob, "diffrax", params, keys, obs)
    scan_step, _ = bench.jax_step(prob, "scan", params, keys, obs)
    report = bench.check_agreement(prob, {
        "diffrax": lambda: diffrax_step(params, keys, obs),
        "scan": lambda: scan_step(params, keys, obs),
        "torch": bench.TorchStep(prob, params, keys, obs),
    }, verbose=False)  # raises on disagreement
    torch_vs_jax = report["diffrax vs torch"]
    assert torch_vs_jax["loss_rel"] < 1e-5, torch_vs_jax
    assert torch_vs_jax["grad_max_rel"] < 2e-4, torch_vs_jax
    # Every parameter array gets a gradient, including the Hurst logit through omega(H).
    assert all(v["max_abs"] > 0 for v in torch_vs_jax["per_array"].values()), torch_vs_jax["per_array"]


def test_torch_omega_port_matches_gvlab_with_its_hurst_derivative():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gvlab.sde import fractional

    bench = _bench()
    prob = bench.Problem()
    for hurst in (0.05, 0.3, 0.5, 0.8, 0.95):
        logit = float(np.log(hurst) - np.log1p(-hurst))

        def omegas_jax(lg):
            return fractional.optimal_coefficients(jax.nn.sigmoid(lg), fractional.gamma_grid(5, 20.0), 1.0, "type1")

        ref, ref_grad = omegas_jax(jnp.float32(logit)), jax.jacobian(omegas_jax)(jnp.float32(logit))
        lg = torch.tensor(logit, dtype=torch.float32, requires_grad=True)
        _, omegas, _ = bench.torch_coefficients(prob, {"hurst_logit": lg, "log_scale": torch.zeros(())})
        grad = torch.stack([torch.autograd.grad(omegas[k], lg, retain_graph=True)[0] for k in range(5)])
        # Two float32 LU solves of a system with condition number ~5e2: compare relative to the largest entry.
        np.testing.assert_allclose(omegas.detach().numpy(), ref, rtol=0, atol=2e-4 * float(np.max(np.abs(ref))))
        np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=0, atol=2e-4 * float(np.max(np.abs(ref_grad))))
