"""PGD attack throughput: `gvlab.attacks.pgd` (jit) against a PyTorch eager implementation of the same attack.

The attack (Madry et al. 2018; `gvlab.attacks.gradient.pgd`): L-infinity PGD on the softmax cross-entropy of an
MLP classifier 64 -> 128 -> 10 (ReLU), eps = 0.2, step eps/4, 10 steps, inputs kept in [0, 1], one restart from a
uniform random start; a batch of digits (`gvlab.data.digits`, c / 16, the training images tiled to `--batch`).
One attack = the whole PGD run on the batch, returning the adversarial inputs; throughput is examples per second.

The implementations, on identical inputs:

* gvlab: `jax.jit(lambda x, y, key: pgd(predict, x, y, key, ...))` with the classifier's flax parameters closed
  over; the random start is drawn inside the compiled attack, from the key.
* PyTorch eager (float32, `torch.set_num_threads` = the CPU cores JAX uses, no `torch.compile`): the same steps
  written directly (delta <- clip(delta + alpha sign(grad), -eps, eps), then clip(x + delta, 0, 1) - x), the
  same weights (copied from the flax parameters) and the same random start (drawn on the JAX side exactly as
  `pgd` draws it, `uniform(fold_in(key, 0)) * eps`, and handed to torch: torch gets it for free).
* PyTorch eager with 1 thread (when more cores are usable): on a shared machine torch's thread pool can be slower
  than one thread; the headline ratio uses the faster torch variant, the same-threads ratio is printed too.

Correctness first: the adversarial examples of the two implementations are compared (and the run stops if they
disagree beyond float32 rounding: a sign of a gradient coordinate within rounding of zero may flip, so at most
`MAX_FLIPPED` of the coordinates may differ, each by at most 2 steps) before anything is timed. Compilation (JAX) is
reported separately. After an untimed warm-up, rounds of `--attacks` attacks per implementation are interleaved
(order rotated each round); examples/s per round, the best and the median, and the ratio torch time / gvlab time
are printed.

    pip install -e '.[bench]'   # torch, CPU build
    python benchmarks/bench_pgd.py [--batch 1024] [--attacks 10] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import rounds  # noqa: E402
from gvlab.attacks import pgd  # noqa: E402
from gvlab.data import digits as digits_data  # noqa: E402
from gvlab.defenses import make_classifier  # noqa: E402

MAX_FLIPPED = 1e-3  # fraction of coordinates allowed to differ (a gradient sign within rounding of zero)
ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Problem:
    """Sizes and settings of the benchmarked attack (defaults: the issue's digits setting)."""

    batch: int = 1024
    hidden: tuple[int, ...] = (128,)
    eps: float = 0.2
    steps: int = 10
    seed: int = 0

    @property
    def step_size(self) -> float:
        return self.eps / 4


def make_inputs(prob: Problem):
    """(flax params, predict, x [B, 8, 8], y [B], key): the same for every implementation."""
    counts, labels = digits_data.split_counts("train")
    reps = -(-prob.batch // len(labels))
    x = np.tile(digits_data.to_representation(counts, "unit"), (reps, 1, 1))[: prob.batch]
    y = np.tile(labels, reps)[: prob.batch]
    method, predict = make_classifier(prob.hidden, 10)
    init_key, attack_key = jax.random.split(jax.random.key(prob.seed))
    params = method.init(init_key, {"x": jnp.asarray(x[:1]), "y": jnp.asarray(y[:1])})
    return params, predict, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), attack_key


def jax_attack(prob: Problem, params, predict, x, y, key):
    """(compiled attack (x, y, key) -> x_adv, compile seconds)."""
    def attack(x, y, key):
        return pgd(lambda v: predict(params, v), x, y, key, prob.eps, prob.step_size, prob.steps,
                   bounds=(0.0, 1.0))

    t0 = time.perf_counter()
    compiled = jax.jit(attack).lower(x, y, key).compile()
    return compiled, time.perf_counter() - t0


def random_start(prob: Problem, x, key) -> np.ndarray:
    """The start `pgd` draws for restart 0 (`gradient._random_start`, L-infinity), clipped to the input range."""
    start = jax.random.uniform(jax.random.fold_in(key, 0), x.shape, x.dtype, -1.0, 1.0) * prob.eps
    return np.array(jnp.clip(x + start, 0.0, 1.0) - x)  # a writable copy, for torch.from_numpy


class TorchAttack:
    """The same PGD in PyTorch eager: an `nn.Sequential` MLP with the flax weights, the start handed over."""

    def __init__(self, prob: Problem, params, x, y, key, threads: int | None = None):
        self.prob, self.threads = prob, threads
        layers = []
        dense = params["params"]
        for i in range(len(prob.hidden) + 1):
            kernel = np.asarray(dense[f"dense_{i}"]["kernel"])
            linear = torch.nn.Linear(*kernel.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
                linear.bias.copy_(torch.from_numpy(np.array(dense[f"dense_{i}"]["bias"])))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).requires_grad_(False)
        self.x = torch.from_numpy(np.asarray(x).reshape(len(x), -1).copy())
        self.y = torch.from_numpy(np.asarray(y).astype(np.int64))
        self.start = torch.from_numpy(random_start(prob, x, key).reshape(len(x), -1))
        self.shape = tuple(x.shape)

    def __call__(self) -> torch.Tensor:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        eps, alpha, x = self.prob.eps, self.prob.step_size, self.x
        delta = self.start.clone()
        for _ in range(self.prob.steps):
            delta.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(self.model(x + delta), self.y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0.0, 1.0) - x
        return (x + delta).reshape(self.shape)


def agreement(reference, other, prob: Problem) -> dict:
    """Coordinates where two adversarial batches differ by more than ATOL, and the largest difference."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    diff = np.abs(a - b)
    return {"flipped_fraction": float(np.mean(diff > ATOL)), "max_abs_diff": float(diff.max()),
            "max_allowed_diff": 2 * prob.step_size, "coordinates": int(diff.size)}


def check_agreement(prob: Problem, x_jax, x_torch) -> dict:
    report = agreement(x_jax, x_torch, prob)
    if not (report["flipped_fraction"] <= MAX_FLIPPED and report["max_abs_diff"] <= 2 * prob.step_size + ATOL):
        raise AssertionError(f"gvlab and torch PGD disagree: {report}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--attacks", type=int, default=10, help="attacks per implementation per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    prob = Problem(batch=args.batch)
    threads, machine = rounds.machine(torch)

    params, predict, x, y, key = make_inputs(prob)
    compiled, compile_s = jax_attack(prob, params, predict, x, y, key)
    attacks = {"gvlab": lambda: compiled(x, y, key), f"torch-{threads}thr": TorchAttack(prob, params, x, y, key,
                                                                                        threads)}
    if threads > 1:
        attacks["torch-1thr"] = TorchAttack(prob, params, x, y, key, 1)
    report = check_agreement(prob, attacks["gvlab"](), attacks[f"torch-{threads}thr"]())
    print(f"agreement (batch {prob.batch}, PGD-{prob.steps}, eps {prob.eps}): {report}")

    return rounds.compare(attacks, calls=args.attacks, repeats=args.repeats, batch=prob.batch, unit="examples",
                          what="attack", threads=threads, json_path=args.json,
                          base={"problem": dataclasses.asdict(prob), "machine": machine, "agreement": report,
                                "compile_s": compile_s})


if __name__ == "__main__":
    main()
