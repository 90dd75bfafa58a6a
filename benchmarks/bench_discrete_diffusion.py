"""Discrete-diffusion sampling throughput: `gvlab.diffusion.discrete.ancestral_sample` (jit) against PyTorch eager.

The computation (`experiments/discrete/cdcd.py`'s sampler): VQ-Diffusion's mask-and-replace path with K = 4 tokens
+ [MASK], 64 positions, T = 10 steps; an x0-parameterised class-conditional `TimeMLP` (one-hot x_t, sinusoidal
t / T, class embedding, SiLU, hidden 256 x 2, random weights); each step computes the x0 logits, the reverse
p(x_{t-1} | x_t) in log space (closed form, `MaskAndReplace.reverse`) and draws x_{t-1} by Gumbel-max. One
sample call = `--batch` sequences from all-[MASK]-like x_T to x_0; throughput is sequences per second.

The implementations, on identical inputs:

* gvlab: `jax.jit(lambda params, key: ancestral_sample(...))`, the Gumbel noise drawn inside from the key.
* PyTorch eager (float32, `torch.set_num_threads` = the cores JAX uses, no `torch.compile`): the same formulas
  written directly, the same weights (copied from the flax parameters); it draws its own Gumbel noise
  (-log(-log u)) when timed. For the correctness check it is handed the x_T and the Gumbel noise that gvlab draws
  (`fold_in(key, t)`, as `ancestral_sample` draws them) and must return the same tokens: a Gumbel-max near-tie within
  float32 rounding may flip one token and change the rest of that chain, so at most `MAX_DIFFERENT` of the
  sequences may differ.
* PyTorch eager with 1 thread (when more cores are usable), as in `bench_pgd.py`.

Compilation (JAX) is reported separately. After an untimed warm-up, rounds of `--calls` sample calls per
implementation are interleaved (order rotated each round); the ratio torch time / gvlab time is printed.

    pip install -e '.[bench]'   # torch, CPU build
    python benchmarks/bench_discrete_diffusion.py [--batch 500] [--calls 5] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import rounds  # noqa: E402
from gvlab.diffusion import discrete  # noqa: E402
from gvlab.nn import TimeMLP  # noqa: E402

MAX_DIFFERENT = 0.02  # fraction of sequences allowed to differ (a Gumbel-max near-tie within rounding)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Sizes of the benchmarked sampler (defaults: the experiment's setting)."""

    batch: int = 500
    tokens: int = 4
    length: int = 64
    steps: int = 10
    hidden: tuple[int, ...] = (256, 256)
    class_features: int = 64
    seed: int = 0


def make_inputs(prob: Problem):
    """(path, net, params, labels [B], key): the same for every implementation."""
    path = discrete.MaskAndReplace(prob.tokens, prob.steps)
    net = TimeMLP(out_features=prob.length * prob.tokens, hidden=prob.hidden, num_classes=10,
                  class_features=prob.class_features)
    init_key, key = jax.random.split(jax.random.key(prob.seed))
    labels = jnp.arange(prob.batch, dtype=jnp.int32) % 10
    params = net.init(init_key, jnp.zeros((1, prob.length * (prob.tokens + 1))), jnp.zeros((1,)), labels[:1])
    return path, net, params, labels, key


def jax_sampler(prob: Problem, path, net, params, labels, key):
    """(compiled sampler (params, key) -> x0 [B, L], compile seconds)."""
    def sample(params, key):
        def x0_logits(x_t, t):
            out = net.apply(params, jax.nn.one_hot(x_t, prob.tokens + 1).reshape(x_t.shape[0], -1),
                            t.astype(jnp.float32) / prob.steps, labels)
            return out.reshape(x_t.shape + (prob.tokens,))
        return discrete.ancestral_sample(path, x0_logits, key, (prob.batch, prob.length))

    t0 = time.perf_counter()
    compiled = jax.jit(sample).lower(params, key).compile()
    return compiled, time.perf_counter() - t0


def gvlab_noise(prob: Problem, path, key):
    """The x_T and per-step Gumbel noise `ancestral_sample` draws from `key` (step t: `fold_in(key, t)`)."""
    shape = (prob.batch, prob.length)
    x_T = path.prior_sample(jax.random.fold_in(key, 0), shape)
    gumbel = {t: np.asarray(jax.random.gumbel(jax.random.fold_in(key, t), shape + (prob.tokens + 1,)))
              for t in range(1, prob.steps + 1)}
    return np.asarray(x_T), gumbel


class TorchSampler:
    """The same sampler in PyTorch eager with the flax weights; `noise=(x_T, gumbel)` replays gvlab's draws."""

    def __init__(self, prob: Problem, path, net, params, labels, threads: int | None = None, noise=None):
        self.prob, self.threads, self.noise = prob, threads, noise
        p = params["params"]
        tensor = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
        self.layers = [(tensor(p[f"dense_{i}"]["kernel"]), tensor(p[f"dense_{i}"]["bias"]))
                       for i in range(len(prob.hidden))]
        self.out = (tensor(p["out"]["kernel"]), tensor(p["out"]["bias"]))
        self.class_embedding = tensor(p["class_embedding"]["embedding"])[torch.from_numpy(np.array(labels))]
        self.frequencies = torch.exp(torch.linspace(0.0, 1.0, net.num_frequencies) * math.log(net.max_frequency))
        tables = path.tables()
        log = lambda v: torch.from_numpy(np.log(np.maximum(v, 1e-30)).astype(np.float32))  # noqa: E731
        self.log = {"bar_alpha": log(tables["bar_alpha"]), "bar_beta": log(tables["bar_beta"]),
                    "bar_gamma": log(tables["bar_gamma"]), "bar_stay": log(tables["bar_alpha"] + tables["bar_beta"]),
                    "stay": log(tables["alpha"] + tables["beta"]), "beta": log(tables["beta"]),
                    "gamma": log(tables["gamma"])}
        bar_gamma = tables["bar_gamma"][-1]
        self.prior = log(np.concatenate([np.full(prob.tokens, (1 - bar_gamma) / prob.tokens), [bar_gamma]]))

    def x0_logits(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        b, k = x_t.shape[0], self.prob.tokens
        angles = (t / self.prob.steps) * self.frequencies
        time_features = torch.cat([torch.sin(angles), torch.cos(angles)]).expand(b, -1)
        onehot = torch.nn.functional.one_hot(x_t, k + 1).reshape(b, -1).float()
        h = torch.cat([onehot, time_features, self.class_embedding], dim=1)
        for kernel, bias in self.layers:
            h = torch.nn.functional.silu(h @ kernel + bias)
        return (h @ self.out[0] + self.out[1]).reshape(b, -1, k)

    def reverse(self, x_t: torch.Tensor, logits: torch.Tensor, t: int) -> torch.Tensor:
        """log p(x_{t-1} | x_t), the closed form of `MaskAndReplace.reverse`."""
        k, lz, L = self.prob.tokens, discrete.LOG_ZERO, self.log
        x = x_t.unsqueeze(-1)
        is_mask = x == k
        i = torch.arange(k)
        cumulative = torch.where(is_mask, L["bar_gamma"][t], torch.where(i == x, L["bar_stay"][t], L["bar_beta"][t]))
        log_w = torch.log_softmax(logits, -1) - cumulative
        log_w = torch.cat([log_w, torch.full_like(log_w[..., :1], lz)], -1)
        real_mass = torch.logsumexp(log_w[..., :k], -1, keepdim=True)  # q_pred(w, t - 1)
        real = torch.logaddexp(log_w[..., :k] + L["bar_alpha"][t - 1], real_mass + L["bar_beta"][t - 1])
        mask = torch.logaddexp(log_w[..., k:], real_mass + L["bar_gamma"][t - 1])
        j = torch.arange(k + 1)
        from_real = torch.where(j == x, L["stay"][t], torch.where(j < k, L["beta"][t], torch.tensor(lz)))
        from_mask = torch.where(j < k, L["gamma"][t], torch.tensor(0.0))
        step = torch.where(is_mask, from_mask, from_real)
        return torch.clamp(torch.log_softmax(step + torch.cat([real, mask], -1), -1), lz, 0.0)

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        shape = (self.prob.batch, self.prob.length)
        if self.noise is None:
            x = torch.distributions.Categorical(logits=self.prior).sample(shape)
        else:
            x = torch.from_numpy(self.noise[0].astype(np.int64))
        for t in range(self.prob.steps, 0, -1):
            log_p = self.reverse(x, self.x0_logits(x, t), t)
            if self.noise is None:
                gumbel = -torch.log(-torch.log(torch.rand_like(log_p).clamp_min(1e-30)) + 1e-30)
            else:
                gumbel = torch.from_numpy(self.noise[1][t])
            x = torch.argmax(log_p + gumbel, -1)
        return x


def check_agreement(x_jax, x_torch) -> dict:
    different = np.any(np.asarray(x_jax) != np.asarray(x_torch), axis=-1)
    report = {"different_sequences": float(np.mean(different)), "sequences": int(different.size)}
    if report["different_sequences"] > MAX_DIFFERENT:
        raise AssertionError(f"gvlab and torch samplers disagree: {report}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--calls", type=int, default=5, help="sample calls per implementation per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    prob = Problem(batch=args.batch)
    threads, machine = rounds.machine(torch)

    path, net, params, labels, key = make_inputs(prob)
    compiled, compile_s = jax_sampler(prob, path, net, params, labels, key)
    replay = TorchSampler(prob, path, net, params, labels, threads, noise=gvlab_noise(prob, path, key))
    report = check_agreement(compiled(params, key), replay())
    print(f"agreement (batch {prob.batch}, T = {prob.steps}): {report}")
    samplers = {"gvlab": lambda: compiled(params, key),
                f"torch-{threads}thr": TorchSampler(prob, path, net, params, labels, threads)}
    if threads > 1:
        samplers["torch-1thr"] = TorchSampler(prob, path, net, params, labels, 1)
    return rounds.compare(samplers, calls=args.calls, repeats=args.repeats, batch=prob.batch, unit="sequences",
                          what="call", threads=threads, json_path=args.json,
                          base={"problem": dataclasses.asdict(prob), "machine": machine, "agreement": report,
                                "compile_s": compile_s})


if __name__ == "__main__":
    main()
