"""The BCOO sparse layer of `benchmarks/bench_ssvi.py` computes what the masked dense layer computes (small sizes):
the same output for the same noise, and the same gradients with respect to the active mu and rho values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ssvi.py"


def _bench():
    if "bench_ssvi" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_ssvi", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_ssvi"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_ssvi"]


def test_bcoo_layer_equals_the_masked_dense_layer_forward_and_backward():
    bench = _bench()
    params, mask, indices, x, eps = bench.sparse_layer(jax.random.key(0), 24, 16, 0.1, 8)
    assert indices.shape == (38, 2) and int(mask.sum()) == 38  # k = round(0.1 * 384)
    rows, cols = indices[:, 0], indices[:, 1]
    mu_values, rho_values = params["mu"][rows, cols], params["rho"][rows, cols]
    maskf = mask.astype(jnp.float32)
    dense = bench.masked_forward(params["mu"], params["rho"], params["bias"], maskf, x, eps)
    bcoo = bench.bcoo_forward(mu_values, rho_values, params["bias"], indices, (24, 16), x, eps)
    np.testing.assert_allclose(bcoo, dense, rtol=1e-5, atol=1e-6)
    # The reference equals the library layer with the same noise (eps drawn inside `layers.dense` from its key).
    mean_IxO, var_IxO = params["mu"] * maskf, jax.nn.softplus(params["rho"]) ** 2 * maskf
    np.testing.assert_allclose(dense, x @ mean_IxO + params["bias"][None, :] + jnp.sqrt(x**2 @ var_IxO + 1e-8) * eps,
                               rtol=1e-6)

    def loss_dense(m, r):
        return jnp.sum(bench.masked_forward(m, r, params["bias"], maskf, x, eps) ** 2)

    def loss_bcoo(m, r):
        return jnp.sum(bench.bcoo_forward(m, r, params["bias"], indices, (24, 16), x, eps) ** 2)

    grad_mu, grad_rho = jax.grad(loss_dense, argnums=(0, 1))(params["mu"], params["rho"])
    sparse_mu, sparse_rho = jax.grad(loss_bcoo, argnums=(0, 1))(mu_values, rho_values)
    np.testing.assert_allclose(sparse_mu, grad_mu[rows, cols], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sparse_rho, grad_rho[rows, cols], rtol=1e-4, atol=1e-6)
    # Negative control: the unmasked dense layer gives another output.
    unmasked = bench.masked_forward(params["mu"], params["rho"], params["bias"], jnp.ones_like(maskf), x, eps)
    assert np.max(np.abs(np.asarray(unmasked - bcoo))) > 1e-2
