"""The byte-level Transformer of `gvlab.nn.transformer`: train-step throughput vs PyTorch eager, and the vmapped
learning-rate sweep vs sequential runs.

The model is the one of `instability/qk_layernorm` (d 64, 2 layers, 2 heads, MLP 256, pre-LN, RoPE, qk-layernorm,
no biases, vocabulary 256), sequences of 64 bytes, batch 16, loss CE + 1e-4 (log Z)^2. The PyTorch version is the
same architecture written with `torch.nn` (GELU tanh approximation like Flax's default); the JAX parameters are
copied into it and the loss and gradients are compared before anything is timed (the run stops if they differ).

Measured, in one run:
(a) train step (forward, backward, clipping, AdamW with independent decay): gvlab's `make_train_step` jitted with
    donation vs torch eager (`clip_grad_norm_`, `torch.optim.Adam` at lr eta s_t, then theta *= 1 - s_t lambda).
    Tokens per second (batch x sequence / step time).
(b) learning-rate sweep: 5 members (the experiment's learning rates) as one `vmap`ped step vs 5 runs of the single
    jitted step one after another (same compiled program: the learning rate lives in the optimiser state). Time
    per step of all 5 members.
Measured on a quiet machine (2 CPU cores, load 1.2, defaults `--steps 20 --repeats 3`): (a) gvlab 66.4k
tokens/s (15.4 ms/step) vs torch eager 74.0k tokens/s (13.8 ms): ratio 0.90, PyTorch slightly faster; (b) vmapped
5-LR sweep 111 ms/step vs 78 ms for the 5 runs one after another: ratio 0.70, i.e. the vmapped program is *slower*
per step on XLA:CPU at this size; its gains are one compile per architecture and one program to checkpoint, not
speed (on CPU). Under load (6-10, other jobs running) torch's two OpenMP threads suffered most and the ratio of
(a) was 4.8 in gvlab's favour: only quiet-machine numbers compare implementations.
Medians over `--repeats` interleaved rounds of `--steps` steps; ratios > 1 mean gvlab (or the vmapped sweep) is
faster. torch uses `--torch-threads` threads (default 2). On a shared machine the numbers are inflated: the load
average is printed before and after.

`--torch-device cuda` (on a machine with an NVIDIA GPU, a CUDA build of torch and of jaxlib) compares gvlab on JAX's
default device, the GPU, with torch on CUDA: the torch model, the parameters copied from JAX, the tokens and the
Adam state live on the GPU, and the timed torch loop ends with `torch.cuda.synchronize()` (the gvlab loops with
`jax.block_until_ready`). The agreement check runs there too, at full float32 precision on both sides
(`jax.default_matmul_precision("highest")`, torch's `allow_tf32` flags off); the timing then uses each side's
default precision: JAX's default lets XLA use TF32 for float32 matmuls on Ampere and later GPUs, torch by default
does not for matmuls (`torch.backends.cuda.matmul.allow_tf32` False; cuDNN's flag is on but no convolution runs
here). `--json` writes the medians, the ratios (`torch_over_gvlab_train_median`,
`sequential_over_vmapped_median`) and the machine (torch device, GPU name, JAX's device kind).

    python benchmarks/bench_transformer.py [--steps 20] [--repeats 3] [--json out.json] [--torch-device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gvlab.train.members import over_runs  # noqa: E402
from gvlab.nn.transformer import LAYERNORM_EPS, TransformerConfig, make_language_model  # noqa: E402
from gvlab.train.optimizers import independent_adamw, set_hyperparams  # noqa: E402
from gvlab.train.step import init_state, make_train_step  # noqa: E402
from benchmarks.torch_device import full_float32, parse_torch_device, torch_sync  # noqa: E402

CONFIG = TransformerConfig(width=64, depth=2, num_heads=2, mlp_width=256, qk_layernorm=True)
BATCH, LENGTH, Z_LOSS, TOTAL_STEPS, WARMUP = 16, 64, 1e-4, 300, 30
LEARNING_RATES = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def _rope_torch(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:  # x: [B, T, H, Dh]
    half, length = x.shape[-1] // 2, x.shape[1]
    freqs = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = torch.arange(length, dtype=torch.float32, device=x.device)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles)[:, None, :], torch.sin(angles)[:, None, :]
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class TorchTransformer(torch.nn.Module):
    """The same network in PyTorch; parameters are loaded from the Flax tree (`load`)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d, h = cfg.width, cfg.head_width
        self.embed = torch.nn.Embedding(cfg.vocab_size, d)

        def ln(n):
            return torch.nn.LayerNorm(n, eps=LAYERNORM_EPS, bias=False)

        self.blocks = torch.nn.ModuleList()
        for _ in range(cfg.depth):
            block = torch.nn.ModuleDict({
                "attention_norm": ln(d), "query": torch.nn.Linear(d, d, bias=False),
                "key": torch.nn.Linear(d, d, bias=False), "value": torch.nn.Linear(d, d, bias=False),
                "query_norm": ln(h), "key_norm": ln(h), "out": torch.nn.Linear(d, d, bias=False),
                "mlp_norm": ln(d), "mlp_in": torch.nn.Linear(d, cfg.mlp_width, bias=False),
                "mlp_out": torch.nn.Linear(cfg.mlp_width, d, bias=False)})
            self.blocks.append(block)
        self.final_norm = ln(d)
        self.unembed = torch.nn.Linear(d, cfg.vocab_size, bias=False)
        length = LENGTH
        self.register_buffer("mask", torch.tril(torch.ones(length, length, dtype=torch.bool)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = self.embed(tokens)
        b, t, _ = x.shape
        for blk in self.blocks:
            y = blk["attention_norm"](x)
            q = blk["query_norm"](blk["query"](y).view(b, t, cfg.num_heads, cfg.head_width))
            k = blk["key_norm"](blk["key"](y).view(b, t, cfg.num_heads, cfg.head_width))
            v = blk["value"](y).view(b, t, cfg.num_heads, cfg.head_width)
            q, k = _rope_torch(q, cfg.rope_base), _rope_torch(k, cfg.rope_base)
            logits = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(cfg.head_width)
            weights = torch.softmax(logits.masked_fill(~self.mask[:t, :t], float("-inf")), dim=-1)
            x = x + blk["out"](torch.einsum("bhts,bshk->bthk", weights, v).reshape(b, t, cfg.width))
            x = x + blk["mlp_out"](F.gelu(blk["mlp_in"](blk["mlp_norm"](x)), approximate="tanh"))
        return self.unembed(self.final_norm(x))

    def load(self, params) -> None:
        """Copies the Flax parameters into the module's parameters (on whatever device the module is)."""
        p = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), params["params"])
        with torch.no_grad():
            self.embed.weight.copy_(p["embed"]["embedding"])
            self.final_norm.weight.copy_(p["final_norm"]["scale"])
            self.unembed.weight.copy_(p["unembed"]["kernel"].T)
            for i, blk in enumerate(self.blocks):
                src = p[f"block_{i}"]
                for name in ("attention_norm", "mlp_norm"):
                    blk[name].weight.copy_(src[name]["scale"])
                for name in ("query_norm", "key_norm"):
                    blk[name].weight.copy_(src["attention"][name]["scale"])
                for name in ("query", "key", "value", "out"):
                    blk[name].weight.copy_(src["attention"][name]["kernel"].T)
                for name in ("mlp_in", "mlp_out"):
                    blk[name].weight.copy_(src[name]["kernel"].T)


def torch_loss(model: TorchTransformer, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    log_z = torch.logsumexp(logits, dim=-1)
    xent = (log_z - logits.gather(-1, tokens[:, 1:, None])[..., 0]).mean()
    return xent + Z_LOSS * (log_z**2).mean()


def multiplier(step: int) -> float:
    """s_t of `gvlab.train.optimizers.warmup_cosine_multiplier` (final multiplier ~0 here)."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    return 0.5 * (1 + math.cos(math.pi * min((step - WARMUP) / (TOTAL_STEPS - WARMUP), 1.0)))


def torch_step(model, optimizer, tokens, step: int, lr: float, weight_decay: float = 1e-4) -> float:
    s = multiplier(step)
    for group in optimizer.param_groups:
        group["lr"] = lr * s
    optimizer.zero_grad(set_to_none=True)
    loss = torch_loss(model, tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0 - s * weight_decay)  # independent decay
    return loss.item()




def machine(torch_threads: int, device: torch.device) -> dict:
    """Versions, threads and devices (for `--json`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cores_usable": cores, "python": platform.python_version(), "jax": jax.__version__,
            "torch": torch.__version__, "torch_threads": torch_threads, "backend": jax.default_backend(),
            "platform": platform.platform(), "torch_device": str(device)}
    if device.type == "cuda":
        info["torch_device_name"] = torch.cuda.get_device_name(device)
    info["jax_device_kind"] = jax.devices()[0].device_kind
    return info


def _median_time(fn, steps: int) -> float:
    t0 = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--torch-device", default="cpu",
                        help="torch's device: cpu, or cuda on a machine with an NVIDIA GPU (JAX uses its default)")
    parser.add_argument("--json", type=Path, help="write the timings and ratios here")
    args = parser.parse_args(argv)
    device = parse_torch_device(parser, args.torch_device)
    torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    print(f"jax {jax.__version__}, torch {torch.__version__}, load average {load_before}")
    info = machine(args.torch_threads, device)
    if device.type == "cuda":
        print(f"torch on {device} ({info['torch_device_name']}), JAX on {jax.devices()[0]} "
              f"({info['jax_device_kind']})")

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (BATCH, LENGTH + 1)).astype(np.int32)
    batch = {"tokens": jnp.asarray(tokens)}
    method = make_language_model(CONFIG, Z_LOSS)
    tx = independent_adamw(LEARNING_RATES[2], total_steps=TOTAL_STEPS, warmup_steps=WARMUP)
    step_fn = make_train_step(method, tx)
    state = init_state(method, tx, jax.random.key(0), batch)

    # Correctness: same loss and gradients on the same parameters and tokens (full float32 on a GPU).
    model = TorchTransformer(CONFIG).to(device)
    model.load(state.params)
    torch_tokens = torch.from_numpy(tokens).long().to(device)
    with full_float32(device):
        loss_t = torch_loss(model, torch_tokens)
        loss_t.backward()
        (loss_j, _), grads = jax.value_and_grad(method.loss, has_aux=True)(state.params, batch, None, 0)
        np.testing.assert_allclose(loss_t.item(), float(loss_j), rtol=1e-4)
        np.testing.assert_allclose(model.unembed.weight.grad.cpu().numpy().T, grads["params"]["unembed"]["kernel"],
                                   rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(model.blocks[0]["query"].weight.grad.cpu().numpy().T,
                                   grads["params"]["block_0"]["attention"]["query"]["kernel"], rtol=1e-3,
                                   atol=1e-6)
    print(f"agreement: loss {loss_t.item():.6f} (torch) vs {float(loss_j):.6f} (gvlab); gradients match")

    key = jax.random.key(1)
    jit_step = jax.jit(step_fn, donate_argnums=0)
    t0 = time.perf_counter()
    state, _ = jit_step(state, batch, key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATES[2], betas=(0.9, 0.95), eps=1e-8)
    torch_step(model, optimizer, torch_tokens, 0, LEARNING_RATES[2])  # warm-up
    torch_sync(device)

    # (b) the sweep: members differ only in opt_state.hyperparams["learning_rate"].
    lrs = jnp.asarray(LEARNING_RATES, jnp.float32)
    members = jax.vmap(lambda lr: state.replace(opt_state=set_hyperparams(state.opt_state, learning_rate=lr)))(lrs)
    singles = [jax.tree.map(lambda x, i=i: x[i], members) for i in range(len(LEARNING_RATES))]
    vmapped = jax.jit(jax.vmap(step_fn, in_axes=(0, None, None)), donate_argnums=0)
    members, _ = vmapped(members, batch, key)
    jax.block_until_ready(members)
    # fit's other mode for members (train.members="sequential"): the same per-run step under lax.map, one program.
    mapped = jax.jit(over_runs(step_fn, (0, None, None), "sequential"), donate_argnums=0)
    mapped_members = jax.tree.map(jnp.copy, members)
    mapped_members, _ = mapped(mapped_members, batch, key)
    jax.block_until_ready(mapped_members)

    def run_jax(n):
        nonlocal state
        for _ in range(n):
            state, metrics = jit_step(state, batch, key)
        jax.block_until_ready(state)

    def run_torch(n):
        for i in range(n):
            torch_step(model, optimizer, torch_tokens, i, LEARNING_RATES[2])
        torch_sync(device)  # the clock is read after the queued CUDA kernels finish (nothing on the CPU)

    def run_vmapped(n):
        nonlocal members
        for _ in range(n):
            members, _ = vmapped(members, batch, key)
        jax.block_until_ready(members)

    def run_mapped(n):
        nonlocal mapped_members
        for _ in range(n):
            mapped_members, _ = mapped(mapped_members, batch, key)
        jax.block_until_ready(mapped_members)

    def run_sequential(n):
        for i in range(len(singles)):
            for _ in range(n):
                singles[i], _ = jit_step(singles[i], batch, key)
        jax.block_until_ready(singles)

    times = {name: [] for name in ("gvlab", "torch", "vmapped", "mapped", "sequential")}
    for r in range(args.repeats):
        order = [("gvlab", run_jax), ("torch", run_torch)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            times[name].append(_median_time(fn, args.steps))
        times["vmapped"].append(_median_time(run_vmapped, args.steps))
        times["mapped"].append(_median_time(run_mapped, args.steps))
        times["sequential"].append(_median_time(run_sequential, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens_per_step = BATCH * LENGTH
    torch_label = "torch eager" if device.type == "cpu" else f"torch eager ({device})"
    print(f"compile (gvlab step): {compile_s:.2f} s")
    print(f"(a) train step: gvlab {tokens_per_step / med['gvlab']:,.0f} tokens/s ({1e3 * med['gvlab']:.2f} ms), "
          f"{torch_label} {tokens_per_step / med['torch']:,.0f} tokens/s ({1e3 * med['torch']:.2f} ms); "
          f"ratio torch/gvlab time {med['torch'] / med['gvlab']:.2f}")
    print(f"(b) sweep of {len(LEARNING_RATES)} LRs per step: vmapped {1e3 * med['vmapped']:.2f} ms, sequential "
          f"{1e3 * med['sequential']:.2f} ms; ratio sequential/vmapped {med['sequential'] / med['vmapped']:.2f}; "
          f"lax.map in one program (train.members='sequential') {1e3 * med['mapped']:.2f} ms, ratio "
          f"mapped/vmapped time {med['mapped'] / med['vmapped']:.2f}")
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    torch_name = "torch-cuda" if device.type == "cuda" else f"torch-{args.torch_threads}thr"
    results = {
        "machine": info, "loadavg_before": load_before, "loadavg_after": load_after,
        "steps": args.steps, "repeats": args.repeats, "batch": BATCH, "length": LENGTH,
        "agreement": {"loss": [float(loss_j), loss_t.item()]}, "compile_s": compile_s,
        "torch_name": torch_name, "s_per_step": times, "median_s_per_step": med,
        "tokens_per_s_median": {"gvlab": tokens_per_step / med["gvlab"], torch_name: tokens_per_step / med["torch"]},
        # The headlines: (a) torch time / gvlab time per train step, (b) 5 sequential runs / the vmapped sweep.
        "torch_over_gvlab_train_median": med["torch"] / med["gvlab"],
        "sequential_over_vmapped_median": med["sequential"] / med["vmapped"],
        "mapped_over_vmapped_median": med["mapped"] / med["vmapped"],
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
