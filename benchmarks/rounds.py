"""Interleaved timing rounds against a reference, shared by the throughput benchmarks (`bench_pgd.py`,
`bench_discrete_diffusion.py`): the machine's description, warm-up, rounds whose order rotates (so a slow phase of a
shared machine does not land on one contender), and the best / median ratios of each PyTorch variant to gvlab."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def time_calls(fn: Callable, count: int, block: Callable) -> float:
    """Wall seconds per call over `count` back-to-back calls; `block(out)` waits for the last one."""
    t0 = time.perf_counter()
    out = None
    for _ in range(count):
        out = fn()
    block(out)
    return (time.perf_counter() - t0) / count


def interleaved(fns: dict[str, Callable], calls: int, repeats: int, block: dict[str, Callable]) -> dict:
    """`{name: [seconds per call, one per round]}` after two warm-up calls each; round r starts at name r."""
    names = list(fns)
    for name in names:
        time_calls(fns[name], 2, block[name])
    seconds = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(time_calls(fns[name], calls, block[name]))
    return seconds


def against_gvlab(seconds: dict[str, list[float]], batch: int, unit: str, threads: int) -> dict:
    """Rates (`unit` per second), the fastest torch variant and its best / median time over gvlab's."""
    best = {name: min(ts) for name, ts in seconds.items()}
    median = {name: statistics.median(ts) for name, ts in seconds.items()}
    fastest = min((n for n in seconds if n.startswith("torch")), key=lambda n: best[n])
    return {f"{unit}_per_s": {n: [batch / t for t in ts] for n, ts in seconds.items()},
            "best_s": best, "median_s": median, "fastest_torch": fastest,
            "torch_over_gvlab_min": best[fastest] / best["gvlab"],
            "torch_over_gvlab_median": median[fastest] / median["gvlab"],
            "torch_same_threads_over_gvlab_min": best[f"torch-{threads}thr"] / best["gvlab"]}


def print_rates(results: dict, batch: int, unit: str, what: str) -> None:
    """One line per contender (rate per round, best, median), then the ratio of the fastest torch to gvlab."""
    for name, rates in results[f"{unit}_per_s"].items():
        line = " ".join(f"{v:9.0f}" for v in rates)
        print(f"  {name:12s} {line}   best {batch / results['best_s'][name]:9.0f}  "
              f"median {batch / results['median_s'][name]:9.0f}")
    print(f"  {results['fastest_torch']} / gvlab (time per {what}): {results['torch_over_gvlab_min']:.2f}x (best), "
          f"{results['torch_over_gvlab_median']:.2f}x (median)")


def machine(torch) -> tuple[int, dict]:
    """Give torch every usable core, print the machine's description to stderr, return (threads, description)."""
    import sys

    import jax

    threads = cpu_threads()
    torch.set_num_threads(threads)
    described = {"cpu": cpu_name(), "cores_usable": threads, "jax": jax.__version__, "torch": torch.__version__,
                 "backend": jax.default_backend()}
    print(" ".join(f"{k} {v}," for k, v in described.items()).rstrip(","), file=sys.stderr)
    return threads, described


def compare(contenders: dict[str, Callable], *, calls: int, repeats: int, batch: int, unit: str, what: str,
            threads: int, base: dict, json_path=None) -> dict:
    """Time gvlab (the "gvlab" contender, blocked on its result) against torch variants in interleaved rounds,
    print the rates and ratios, add them to `base` (problem, machine, agreement, compile time) and write JSON."""
    import json

    import jax

    block = {name: jax.block_until_ready if name == "gvlab" else (lambda _: None) for name in contenders}
    load_before = os.getloadavg()
    seconds = interleaved(contenders, calls, repeats, block)
    load_after = os.getloadavg()
    results = {**base, "loadavg_before": load_before, "loadavg_after": load_after,
               **against_gvlab(seconds, batch, unit, threads)}
    print(f"compile: gvlab {base.get('compile_s', float('nan')):.2f} s (excluded); load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {threads} cores")
    print(f"{unit}/s ({calls} {what}s of {batch} {unit} per round, {repeats} rounds)")
    print_rates(results, batch, unit, what)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))
    return results
