"""One SSVI step against one dense VI step (analytic FLOPs and measured time), and where a sparse (BCOO) layer pays.

1. Training step: the Bayesian MLP of `bnn/ssvi` (64 -> 400 -> 400 -> 10, batch 64), `gvlab.bayes.ssvi` at
   densities 0.05 / 0.1 (support updates every 50 steps, so the timed steps include the updates' share) against
   dense mean-field VI (the reference, density 1), Adam. Analytic FLOPs of one sampled forward pass
   (`gvlab.bayes.mlp.forward_flops`, batch 64) and the measured time of one jitted step (block_until_ready,
   median over repeats). Masks are dense arrays: the sparse step does the dense work plus the masking and the
   support updates, so no wall-clock saving is expected on XLA; the FLOP ratio is what a sparse kernel could reach.
2. Layer: the local-reparameterisation forward of one sparse layer, out = x (mu*M) + sqrt(x^2 (sigma^2*M) + 1e-8)
   eps, as masked dense matmuls (the reference) and with `jax.experimental.sparse` BCOO weights holding only
   the nnz active entries (mean and variance values), forward and forward+backward (gradients with respect to the
   active mu and rho values), at densities 0.05 / 0.1, over layer sizes and batch sizes; the ratio
   dense time / BCOO time says where BCOO pays on this CPU (> 1).

Compilation is excluded; after an untimed warm-up, the variants are interleaved per repeat, each repeat timing
`--calls` calls; medians (and minima) per call are reported.

    python benchmarks/bench_ssvi.py [--repeats 5] [--calls 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.experimental import sparse  # noqa: E402

from gvlab.bayes import layers, mlp, ssvi  # noqa: E402
from gvlab.data import digits  # noqa: E402
from gvlab.train import init_state  # noqa: E402

SIZES = [(64, 400), (400, 400), (400, 10)]


def step_fn(density: float, batch: dict):
    """(jitted step, state) of SSVI at `density` (1.0: dense VI) on the `bnn/ssvi` MLP."""
    model = mlp.Config(hidden=(400, 400), num_classes=10, num_data=1497, prior_std=0.1, kl_weight=0.01)
    method = ssvi.make(ssvi.Config(model=model, density=density, update_every=50, t_end=1000))
    tx = optax.adam(1e-3)
    state = init_state(method, tx, jax.random.key(0), batch)
    return jax.jit(method.make_step(tx), donate_argnums=0), state


def time_calls(fn, calls: int) -> float:
    t0 = time.perf_counter()
    out = None
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / calls


def sparse_layer(key, in_dim: int, out_dim: int, density: float, batch: int):
    """A layer with a random support of k = density I O entries: (masked dense params, BCOO indices, x, eps)."""
    params = layers.init_dense(key, in_dim, out_dim, init_std=0.05)
    mask = ssvi.random_masks(jax.random.fold_in(key, 1), {"dense_0": params}, density)["dense_0"]
    indices = jnp.argwhere(mask, size=ssvi.support_size((in_dim, out_dim), density))  # [nnz, 2]
    x = jax.random.uniform(jax.random.fold_in(key, 2), (batch, in_dim))
    eps = jax.random.normal(jax.random.fold_in(key, 3), (batch, out_dim))
    return params, mask, indices, x, eps


def masked_forward(mu, rho, bias, mask, x, eps):
    """The reference: `layers.dense_from_moments` on the masked moments, with the given noise."""
    mean_IxO, var_IxO = mu * mask, jnp.square(jax.nn.softplus(rho)) * mask
    return x @ mean_IxO + bias[None, :] + jnp.sqrt(jnp.square(x) @ var_IxO + layers.VARIANCE_FLOOR) * eps


def bcoo_forward(mu_values, rho_values, bias, indices, shape, x, eps):
    """The same output with BCOO weights holding only the active (mu, sigma^2) values (`indices` [nnz, 2])."""
    mean = sparse.BCOO((mu_values, indices), shape=shape)
    var = sparse.BCOO((jnp.square(jax.nn.softplus(rho_values)), indices), shape=shape)
    return (x @ mean) + bias[None, :] + jnp.sqrt((jnp.square(x) @ var) + layers.VARIANCE_FLOOR) * eps


def layer_programs(in_dim: int, out_dim: int, density: float, batch: int):
    """{name: zero-argument callable} for the masked dense and BCOO layer, forward and forward+backward."""
    params, mask, indices, x, eps = sparse_layer(jax.random.key(0), in_dim, out_dim, density, batch)
    mu_values, rho_values = params["mu"][indices[:, 0], indices[:, 1]], params["rho"][indices[:, 0], indices[:, 1]]
    shape = (in_dim, out_dim)
    dense_fwd = jax.jit(masked_forward)
    bcoo_fwd = jax.jit(bcoo_forward, static_argnums=4)
    dense_grad = jax.jit(jax.grad(lambda m, r, *a: jnp.sum(masked_forward(m, r, *a) ** 2), argnums=(0, 1)))
    bcoo_grad = jax.jit(jax.grad(lambda m, r, *a: jnp.sum(bcoo_forward(m, r, *a) ** 2), argnums=(0, 1)),
                        static_argnums=4)
    dense_args = (params["mu"], params["rho"], params["bias"], mask.astype(jnp.float32), x, eps)
    bcoo_args = (mu_values, rho_values, params["bias"], indices, shape, x, eps)
    return {"dense_forward": lambda: dense_fwd(*dense_args), "bcoo_forward": lambda: bcoo_fwd(*bcoo_args),
            "dense_backward": lambda: dense_grad(*dense_args), "bcoo_backward": lambda: bcoo_grad(*bcoo_args)}


def interleaved(programs: dict, repeats: int, calls: int) -> dict:
    for fn in programs.values():  # compile and warm up
        jax.block_until_ready(fn())
    times = {name: [] for name in programs}
    for _ in range(repeats):
        for name, fn in programs.items():
            times[name].append(time_calls(fn, calls))
    return {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--layer-sizes", type=int, nargs="+", default=[400, 1024, 2048, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "step": {}, "layer": []}

    data = digits.digits("train", "unit")
    batch = {"x": data["x"][:64].reshape(64, -1), "y": data["y"][:64]}
    dense_flops = mlp.forward_flops(SIZES, [i * o for i, o in SIZES], batch_size=64)["sampled"]
    states, programs = {}, {}
    for density in (1.0, 0.1, 0.05):
        step, states[density] = step_fn(density, batch)

        def call(step=step, density=density):
            states[density], metrics = step(states[density], batch, jax.random.key(1))
            return metrics["loss"]

        programs[f"density{density}"] = call
    timing = interleaved(programs, args.repeats, args.calls * 5)  # 100 steps per repeat: two support updates
    for density in (1.0, 0.1, 0.05):
        flops = mlp.forward_flops(SIZES, [ssvi.support_size(s, density) for s in SIZES], batch_size=64)["sampled"]
        t = timing[f"density{density}"]
        results["step"][str(density)] = {**t, "forward_flops": flops, "flops_ratio": flops / dense_flops,
                                         "time_ratio_vs_dense": t["median_s"] / timing["density1.0"]["median_s"]}
        ratio = results["step"][str(density)]["time_ratio_vs_dense"]
        print(f"step density {density:4}: {1e3 * t['median_s']:.3f} ms (min {1e3 * t['min_s']:.3f}), time / dense "
              f"{ratio:.2f}, forward FLOPs / dense {flops / dense_flops:.3f}")

    for size in args.layer_sizes:
        for density in (0.05, 0.1):
            for batch_size in args.batches:
                t = interleaved(layer_programs(size, size, density, batch_size), args.repeats, args.calls)
                row = {"size": size, "density": density, "batch": batch_size,
                       **{f"{k}_ms": 1e3 * v["median_s"] for k, v in t.items()},
                       "forward_speedup": t["dense_forward"]["median_s"] / t["bcoo_forward"]["median_s"],
                       "backward_speedup": t["dense_backward"]["median_s"] / t["bcoo_backward"]["median_s"]}
                results["layer"].append(row)
                print(f"layer {size}x{size} density {density} batch {batch_size}: forward dense "
                      f"{row['dense_forward_ms']:.3f} ms / BCOO {row['bcoo_forward_ms']:.3f} ms = "
                      f"{row['forward_speedup']:.2f}x; fwd+bwd dense {row['dense_backward_ms']:.3f} / BCOO "
                      f"{row['bcoo_backward_ms']:.3f} = {row['backward_speedup']:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
