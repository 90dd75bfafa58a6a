"""One ELBO + gradient step of the fractional latent SDE: gvlab (diffrax and `lax.scan`) vs plain PyTorch eager.

The computation (`gvlab.models.fractional_sde`, Daems et al. 2024): D = 8 latent dimensions, each driven by
MA-fBM of type I with K = 5 OU processes on the grid gamma_max = 20; learned Hurst index H = sigmoid(logit)
(omega(H) by the linear solve A omega = b of `gvlab.sde.fractional.optimal_coefficients`, differentiated
through) and learned noise scale; control MLP (sin t, cos t, X, sqrt(2 gamma_k) Y^k) -> 128 -> 128 -> D with tanh;
100 Euler-Maruyama steps on [0, 1] from x0 = 0, batch 64; 10 equally spaced observations (t = 0.1 .. 1) of fixed
synthetic targets with Gaussian noise 0.1. Loss = -mean over the batch of [sum_i log N(o_i; X_{t_i}, 0.1^2) - path
KL]. One step = loss and gradient w.r.t. all parameters (MLP, Hurst logit, log scale); no optimiser update.

The implementations of that step, compared on identical inputs:

* gvlab, `solver="diffrax"`: `jax.jit(jax.value_and_grad(loss))`, the model's `sample` vmapped over the batch;
* gvlab, `solver="scan"`: the same with the `lax.scan` Euler-Maruyama reference;
* PyTorch eager (float32, `torch.set_num_threads` = the CPU cores JAX uses, no `torch.compile`): the same maths
  written directly, batched over the examples with a Python loop over the steps, the same parameter values
  (copied from the JAX ones) and the same random numbers (Brownian increments and Y_0 draws are drawn on the JAX
  side exactly as the model draws them from its per-example keys, and handed to torch). The gvlab step draws
  them itself, inside the timed program; torch gets them for free.
* PyTorch eager with 1 thread (when more cores are usable): on a machine shared with other work, torch's
  OpenMP/BLAS threads wait for each other at every parallel op and the multi-threaded step can be several times
  slower; the headline ratio uses whichever torch variant is faster, and the same-threads ratio is printed too.

omega(H) in torch: `torch.special.gammaincc` has no derivative in its first argument (torch 2.13 raises
"the derivative for 'igammac: input' is not implemented"), so the torch side ports gvlab's own incomplete-gamma
evaluation (power series below z = 2, 40-term continued fraction above) to torch ops, which autograd
differentiates in H through `torch.lgamma` exactly as JAX does.

The parameters are the model's initial ones except the zero-initialised output layer of the control, which gets
small random values (the same in both), so that every parameter has a non-zero gradient to compare; the H starts
at 0.3. The cost of a step does not depend on these values.

Correctness comes first: losses and gradients of gvlab-diffrax, gvlab-scan and torch are compared (and the run stops if
they disagree) before anything is timed. Compilation (JAX) and the first call (torch) are reported separately.
After an untimed warm-up, rounds of `--steps` steps of each implementation are interleaved (order rotated each
round); steps/s per round, best (minimum time) and median, the process CPU seconds per wall second (how many
cores a step really kept busy) and the load average are printed, with the ratios torch/gvlab-diffrax (target >= 3)
and gvlab-diffrax/gvlab-scan in time per step (target <= 1.5).

`--torch-device cuda` (on a machine with an NVIDIA GPU, a CUDA build of torch and of jaxlib) compares gvlab on JAX's
default device, the GPU, with torch on CUDA: the parameters copied from JAX, the noise and the observations live on
the GPU and every tensor the torch step creates is made there; each timed round of torch steps ends with
`torch.cuda.synchronize()` (the gvlab rounds with `jax.block_until_ready`), the torch implementation is
`torch-cuda` and there is no 1-thread variant (threads matter only on the CPU; the JSON keys stay the same, with
`fastest_torch` = `torch-cuda`). The agreement check runs there too, at full float32 precision on both sides: the
gvlab steps it runs are compiled under `jax.default_matmul_precision("highest")` and torch's `allow_tf32` flags are
off; the timing then uses each side's default precision: JAX's default lets XLA use TF32 for float32 matmuls on
Ampere and later GPUs, torch by default does not for matmuls (`torch.backends.cuda.matmul.allow_tf32` False).
The JSON's "machine" records the torch device, the GPU's name and JAX's device kind.

    pip install -e '.[bench]'   # torch; a CPU build is enough (a CUDA build for --torch-device cuda)
    python benchmarks/bench_fractional_sde.py [--steps 20] [--repeats 5] [--json out.json] [--torch-device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gvlab.models import fractional_sde  # noqa: E402
from gvlab.sde.solve import brownian_increments  # noqa: E402
from benchmarks.torch_device import devices, full_float32, parse_torch_device, torch_sync  # noqa: E402

# Agreement required before timing: float32 with 100 steps of accumulation.
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3  # max |g_jax - g_torch| over a parameter array, relative to max |g| of that array


@dataclasses.dataclass(frozen=True)
class Problem:
    """Sizes and settings of the benchmarked step (defaults: the issue's)."""

    dim: int = 8
    num_terms: int = 5
    gamma_max: float = 20.0
    hurst: float = 0.3  # initial H (learned)
    horizon: float = 1.0  # omega_horizon: the simulated interval [0, 1]
    hidden: tuple[int, ...] = (128, 128)
    num_steps: int = 100
    batch: int = 64
    num_obs: int = 10
    obs_noise: float = 0.1
    seed: int = 0

    @property
    def dt(self) -> float:
        return 1.0 / self.num_steps

    @property
    def obs_every(self) -> int:
        if self.num_steps % self.num_obs:
            raise ValueError("num_steps must be a multiple of num_obs")
        return self.num_steps // self.num_obs


# ----------------------------------------------------------------------------------------------- gvlab (JAX)


def model_config(prob: Problem, solver: str) -> fractional_sde.Config:
    return fractional_sde.Config(dim=prob.dim, num_terms=prob.num_terms, gamma_max=prob.gamma_max, kind="type1",
                                 omega_horizon=prob.horizon, hurst=prob.hurst, learn_hurst=True, learn_scale=True,
                                 hidden=prob.hidden, context_dim=0, solver=solver)


def make_inputs(prob: Problem):
    """(params, per-example keys [B], observations [B, M, D]), identical for every implementation."""
    init_key, last_key, data_key = jax.random.split(jax.random.key(prob.seed), 3)
    params = fractional_sde.make_model(model_config(prob, "scan")).init(init_key)
    last = params["control"]["params"][f"dense_{len(prob.hidden)}"]
    k_kernel, k_bias = jax.random.split(last_key)
    last["kernel"] = 0.5 / math.sqrt(prob.hidden[-1]) * jax.random.normal(k_kernel, last["kernel"].shape)
    last["bias"] = 0.1 * jax.random.normal(k_bias, last["bias"].shape)
    keys = jax.random.split(data_key, prob.batch)
    rng = np.random.default_rng(prob.seed)
    ts = np.arange(1, prob.num_obs + 1) / prob.num_obs
    amp = rng.uniform(0.5, 1.5, (prob.batch, 1, prob.dim))
    phase = rng.uniform(0.0, 2 * np.pi, (prob.batch, 1, prob.dim))
    obs = amp * np.sin(2 * np.pi * ts[None, :, None] + phase) + prob.obs_noise * rng.standard_normal(
        (prob.batch, prob.num_obs, prob.dim))
    return params, keys, jnp.asarray(obs, jnp.float32)


def jax_loss(prob: Problem, solver: str):
    model = fractional_sde.make_model(model_config(prob, solver))
    obs_index = jnp.arange(1, prob.num_obs + 1) * prob.obs_every
    context = jnp.zeros((prob.num_steps, 0), jnp.float32)

    def loss(params, keys, obs):
        def one(key, o):
            path = model.sample(params, key, jnp.zeros((prob.dim,), jnp.float32), context, prob.num_steps, prob.dt)
            log_lik = fractional_sde.observation_log_likelihood(path.ys[:, :, 0], o, obs_index, prob.obs_noise)
            return log_lik - path.kl[-1]

        return -jnp.mean(jax.vmap(one)(keys, obs))

    return loss


def jax_step(prob: Problem, solver: str, params, keys, obs):
    """(compiled value-and-grad step, compile seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(jax_loss(prob, solver))).lower(params, keys, obs).compile()
    return compiled, time.perf_counter() - t0


def drawn_noise(prob: Problem, keys) -> tuple[np.ndarray, np.ndarray]:
    """The model's own random numbers: increments [B, N, D] and the standard normals of Y_0 [B, D, K].

    Replicates `fractional_sde.make_model(...).sample` (split the example key into (Y_0 key, noise key)) and
    `mafbm.initial_state` (Y_0 = eps @ chol(C)^T); the loss agreement below checks that the replica is exact.
    """

    def one(key):
        y0_key, noise_key = jax.random.split(key)
        increments = brownian_increments(noise_key, prob.num_steps, prob.dt, (prob.dim,), jnp.float32)
        return increments, jax.random.normal(y0_key, (prob.dim, prob.num_terms), jnp.float32)

    increments, eps = jax.jit(jax.vmap(one))(keys)
    return np.asarray(increments), np.asarray(eps)


def to_numpy(value) -> np.ndarray:
    """A JAX array, numpy array or torch tensor (on any device) as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def flat(tree) -> dict[str, np.ndarray]:
    """{"control/params/dense_0/kernel": array, ..., "hurst_logit": array, "log_scale": array}."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): to_numpy(v) for path, v in leaves}


# -------------------------------------------------------------------------------------------- PyTorch eager


def _t_psi(x):
    """psi(x) = x - 1 + e^-x, by its series for x < 0.1 (as `fractional._psi`)."""
    small = x < 0.1
    xs, xl = torch.where(small, x, 0.0), torch.where(small, 1.0, x)
    series = torch.zeros_like(xs)
    for k in range(12, 1, -1):
        series = series * (-xs) + 1.0 / math.factorial(k)
    return torch.where(small, xs * xs * series, xl + torch.expm1(-xl))


def _t_ez_p_series(a, z, first: int = 0):
    """e^z P(a, z) = sum_n z^(a+n) / Gamma(a+n+1), 32 terms from n = `first` (as `fractional._ez_p_series`)."""
    n = torch.arange(first, first + 32, dtype=z.dtype, device=z.device)
    return torch.exp((a + n) * torch.log(z)[:, None] - torch.lgamma(a + n + 1.0)).sum(-1)


def _t_ez_q_fraction(a, z):
    """e^z Q(a, z) by the 40-term even contraction of Legendre's continued fraction (as `fractional`)."""
    tail = z + (2.0 * 40 + 1.0) - a
    for n in range(40, 0, -1):
        tail = z + (2.0 * n - 1.0) - a - n * (n - a) / tail
    return torch.exp(a * torch.log(z) - torch.lgamma(a)) / tail


def _t_type1_b_factor(alpha, x):
    """beta(alpha, x) of the type-I b_k (as `fractional._type1_b_factor`), differentiable in alpha."""
    small = x < 2.0
    xs, xl = torch.where(small, x, 1.0), torch.where(small, 2.0, x)
    k = torch.arange(3.0, 27.0, 2.0, dtype=x.dtype, device=x.device)
    sinh_minus_x = torch.exp(k * torch.log(xs)[:, None] - torch.lgamma(k + 1.0)).sum(-1)
    series = _t_ez_p_series(alpha, xs, first=1) - 2.0 * sinh_minus_x
    direct = 2.0 * xl - torch.exp(alpha * torch.log(xl) - torch.lgamma(alpha + 1.0)) + torch.exp(-xl)
    return torch.where(small, series, direct - _t_ez_q_fraction(alpha, xl))


def torch_coefficients(prob: Problem, p: dict):
    """(gammas, omegas(H), noise scale), as `fractional_sde.make_model(...).coefficients` for type I; on the device
    of the parameters."""
    device = p["hurst_logit"].device
    hurst = torch.sigmoid(p["hurst_logit"])
    alpha = hurst + 0.5
    gammas = (torch.tensor(prob.gamma_max, dtype=torch.float32, device=device)
              ** torch.linspace(-1.0, 1.0, prob.num_terms, device=device))
    x = gammas * prob.horizon
    h = _t_psi(x) / gammas
    a_matrix = (h[:, None] + h[None, :]) / (gammas[:, None] + gammas[None, :])
    b = gammas ** (-alpha - 1.0) * _t_type1_b_factor(alpha, x)
    omegas = torch.linalg.solve(a_matrix, b)
    unit = torch.sqrt(torch.exp(torch.lgamma(2.0 * hurst + 1.0)) * torch.sin(math.pi * hurst))
    return gammas, omegas, torch.exp(p["log_scale"]) * unit


def torch_loss(prob: Problem, p: dict, increments, eps, obs):
    """The loss, batched; `increments` [N, B, D] (step-major), `eps` [B, D, K], `obs` [B, M, D]; on their device."""
    device = eps.device
    gammas, omegas, scale = torch_coefficients(prob, p)
    batch, dim, dt = eps.shape[0], prob.dim, prob.dt
    cov = 1.0 / (gammas[:, None] + gammas[None, :])
    chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(prob.num_terms, device=device))
    y = eps @ chol.T  # stationary start of the OU processes, [B, D, K]
    x = torch.zeros(batch, dim, device=device)
    omega_gamma, noise_scale = omegas * gammas, scale * omegas.sum()
    y_scale = torch.sqrt(2.0 * gammas)  # the control sees Y^k standardised by its stationary std 1/sqrt(2 gamma_k)
    t = torch.arange(prob.num_steps, dtype=torch.float32, device=device) * dt
    time_features = torch.stack([torch.sin(t), torch.cos(t)], -1)  # [N, 2]
    layers = [(p[f"control/params/dense_{i}/kernel"], p[f"control/params/dense_{i}/bias"])
              for i in range(len(prob.hidden) + 1)]
    kl = torch.zeros(batch, device=device)
    picked = []
    for n in range(prob.num_steps):
        z = torch.cat([x[:, :, None], y * y_scale], -1).reshape(batch, -1)
        h = torch.cat([time_features[n].expand(batch, 2), z], 1)
        for kernel, bias in layers[:-1]:
            h = torch.tanh(torch.addmm(bias, h, kernel))
        u = torch.addmm(layers[-1][1], h, layers[-1][0])  # control, [B, D]
        dw = increments[n]
        # X: [-s sum_k omega_k gamma_k Y^k + s sum(omega) u] dt + s sum(omega) dW; Y^k: (-gamma_k Y^k + u) dt + dW.
        x, y = (x + (noise_scale * u - scale * (y @ omega_gamma)) * dt + noise_scale * dw,
                y + (u[:, :, None] - y * gammas) * dt + dw[:, :, None])
        kl = kl + (0.5 * dt) * (u * u).sum(-1)
        if (n + 1) % prob.obs_every == 0:
            picked.append(x)
    xs = torch.stack(picked, 1)  # [B, M, D]
    sigma = prob.obs_noise
    log_lik = (-0.5 * ((obs - xs) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum((1, 2))
    return -(log_lik - kl).mean()


class TorchStep:
    """Loss and gradients w.r.t. all parameters in PyTorch eager, from copies of the JAX parameters and noise.

    `threads`: `torch.set_num_threads` for this step (set on each call if another step changed it; the call is
    microseconds against a step of tens of milliseconds). `device`: where the parameters, the noise and the
    observations live, and so where the step runs (it returns tensors there; CUDA work is asynchronous).
    """

    def __init__(self, prob: Problem, params, keys, obs, threads: int | None = None,
                 device: torch.device | str = "cpu"):
        self.prob, self.threads, self.device = prob, threads, torch.device(device)
        self.params = {name: torch.tensor(v, dtype=torch.float32, device=self.device, requires_grad=True)
                       for name, v in flat(params).items()}
        increments, eps = drawn_noise(prob, keys)
        self.increments = torch.from_numpy(np.ascontiguousarray(increments.transpose(1, 0, 2))).to(self.device)
        self.eps = torch.from_numpy(np.array(eps)).to(self.device)
        self.obs = torch.from_numpy(np.array(obs)).to(self.device)

    def __call__(self):
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        loss = torch_loss(self.prob, self.params, self.increments, self.eps, self.obs)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        return loss.detach(), dict(zip(self.params, grads))


# ------------------------------------------------------------------------------------------------ agreement


def agreement(reference: tuple, other: tuple) -> dict:
    """Loss relative difference and per-array gradient differences of `other` against `reference`.

    Both are (loss, {name: grad}) with numpy-convertible values.
    """
    loss_a, grads_a = float(reference[0]), {k: np.asarray(v, np.float64) for k, v in reference[1].items()}
    loss_b, grads_b = float(other[0]), {k: np.asarray(v, np.float64) for k, v in other[1].items()}
    per_array = {}
    for name, ga in grads_a.items():
        diff = np.max(np.abs(ga - grads_b[name].reshape(ga.shape)))
        per_array[name] = {"max_abs": float(np.max(np.abs(ga))), "max_abs_diff": float(diff),
                           "rel": float(diff / max(np.max(np.abs(ga)), 1e-30))}
    norm = lambda gs: math.sqrt(sum(float(np.sum(g**2)) for g in gs.values()))  # noqa: E731
    diff_norm = math.sqrt(sum(float(np.sum((grads_a[k] - grads_b[k].reshape(grads_a[k].shape)) ** 2))
                              for k in grads_a))
    return {"loss": [loss_a, loss_b], "loss_rel": abs(loss_a - loss_b) / abs(loss_a),
            "grad_norm": [norm(grads_a), norm(grads_b)], "grad_diff_norm_rel": diff_norm / norm(grads_a),
            "grad_max_rel": max(v["rel"] for v in per_array.values()), "per_array": per_array}


def check_agreement(prob: Problem, steps: dict, verbose: bool = True) -> dict:
    """Run each step once, compare with the first, raise if any loss or gradient disagrees."""
    outputs = {}
    for name, step in steps.items():
        loss, grads = step()
        outputs[name] = (to_numpy(loss), flat(grads))  # flat: the torch dict is already flat, same names
    names = list(outputs)
    report = {f"{names[0]} vs {b}": agreement(outputs[names[0]], outputs[b]) for b in names[1:]}
    for label, r in report.items():
        if verbose:
            print(f"  {label}: loss {r['loss'][0]:.6f} vs {r['loss'][1]:.6f} (rel {r['loss_rel']:.1e}); "
                  f"grad norm {r['grad_norm'][0]:.6g} vs {r['grad_norm'][1]:.6g}, |diff|/|g| "
                  f"{r['grad_diff_norm_rel']:.1e}, worst array max|diff|/max|g| {r['grad_max_rel']:.1e}")
            for arr, v in r["per_array"].items():
                print(f"      {arr:32s} max|g| {v['max_abs']:10.4g}  max|diff| {v['max_abs_diff']:9.2e}  "
                      f"rel {v['rel']:.1e}")
        if not (r["loss_rel"] <= LOSS_RTOL and r["grad_max_rel"] <= GRAD_RTOL):
            raise AssertionError(f"{label} disagree: loss rel {r['loss_rel']:.2e} (tol {LOSS_RTOL}), gradient "
                                 f"worst rel {r['grad_max_rel']:.2e} (tol {GRAD_RTOL})")
    return report


# ---------------------------------------------------------------------------------------------------- timing




def time_steps(step, steps: int, block) -> tuple[float, float]:
    """(wall seconds per step, process CPU seconds per wall second) over `steps` back-to-back calls; `block(out)`
    waits for the last one (and, on one device stream, all before it) before the clock is read."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = None
    for _ in range(steps):
        out = step()
    block(out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / steps, cpu / wall


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine(device: torch.device | str = "cpu") -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores_usable": cpu_threads(), "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "diffrax": diffrax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "backend": jax.default_backend(), "platform": platform.platform(), **devices(device)}



def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per implementation per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--torch-device", default="cpu",
                        help="torch's device: cpu, or cuda on a machine with an NVIDIA GPU (JAX uses its default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = parse_torch_device(parser, args.torch_device)
    prob = Problem(batch=args.batch)
    # XLA's CPU client sizes its intra-op pool to the usable cores; torch gets the same. On a loaded machine
    # torch's OpenMP/BLAS threads wait for each other at every parallel op, so a 1-thread torch is timed too.
    threads = cpu_threads()
    torch.set_num_threads(threads)
    info = machine(device)
    print(" ".join(f"{k} {v}," for k, v in info.items()).rstrip(","), file=sys.stderr)

    params, keys, obs = make_inputs(prob)
    diffrax_step, diffrax_compile = jax_step(prob, "diffrax", params, keys, obs)
    scan_step, scan_compile = jax_step(prob, "scan", params, keys, obs)
    t0 = time.perf_counter()
    torch_step = TorchStep(prob, params, keys, obs, threads, device)
    torch_step()
    torch_sync(device)
    torch_first = time.perf_counter() - t0
    torch_name = "torch-cuda" if device.type == "cuda" else f"torch-{threads}thr"
    steps = {"gvlab-diffrax": lambda: diffrax_step(params, keys, obs),
             "gvlab-scan": lambda: scan_step(params, keys, obs),
             torch_name: torch_step}
    if threads > 1 and device.type == "cpu":
        steps["torch-1thr"] = TorchStep(prob, params, keys, obs, 1)
    # The clock is read after the work is done: gvlab blocks on its outputs, torch on CUDA synchronises.
    block = {name: jax.block_until_ready if name.startswith("gvlab") else (lambda _: torch_sync(device))
             for name in steps}

    print(f"\nagreement (D {prob.dim}, K {prob.num_terms}, {prob.num_steps} steps, batch {prob.batch}; "
          f"tolerances: loss {LOSS_RTOL:g}, gradient {GRAD_RTOL:g} relative)")
    check_steps = {k: v for k, v in steps.items() if k != "torch-1thr"}
    with full_float32(device):
        if jax.default_backend() != "cpu":
            # The timed programs were compiled at JAX's default precision (TF32 on a GPU): check programs compiled
            # at "highest" instead (the entries keep their places in the dict).
            check_diffrax, _ = jax_step(prob, "diffrax", params, keys, obs)
            check_scan, _ = jax_step(prob, "scan", params, keys, obs)
            check_steps["gvlab-diffrax"] = lambda: check_diffrax(params, keys, obs)
            check_steps["gvlab-scan"] = lambda: check_scan(params, keys, obs)
        report = check_agreement(prob, check_steps)

    # One untimed round first (thread pools, caches, allocator), then interleaved rounds with the order rotated, so
    # that drifts in machine load hit every implementation; the minimum over rounds is the least disturbed
    # estimate, the median is shown too.
    load_before = os.getloadavg()
    names = list(steps)
    for name in names:
        time_steps(steps[name], max(2, args.steps // 4), block[name])
    seconds = {name: [] for name in names}
    cpu_use = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            per_step, cpu = time_steps(steps[name], args.steps, block[name])
            seconds[name].append(per_step)
            cpu_use[name].append(cpu)
    load_after = os.getloadavg()

    best = {name: min(ts) for name, ts in seconds.items()}
    median = {name: statistics.median(ts) for name, ts in seconds.items()}
    fastest_torch = min((n for n in names if n.startswith("torch")), key=lambda n: best[n])
    results = {
        "problem": dataclasses.asdict(prob),
        "machine": info,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "agreement": report,
        "compile_s": {"gvlab-diffrax": diffrax_compile, "gvlab-scan": scan_compile},
        "torch_first_call_s": torch_first,
        "steps_per_s": {name: [1.0 / t for t in ts] for name, ts in seconds.items()},
        "cpu_per_wall": cpu_use,
        "fastest_torch": fastest_torch,
        "torch_over_diffrax_min": best[fastest_torch] / best["gvlab-diffrax"],
        "torch_over_diffrax_median": median[fastest_torch] / median["gvlab-diffrax"],
        "torch_same_threads_over_diffrax_min": best[torch_name] / best["gvlab-diffrax"],
        "torch_same_threads_over_diffrax_median": median[torch_name] / median["gvlab-diffrax"],
        "diffrax_over_scan_min": best["gvlab-diffrax"] / best["gvlab-scan"],
        "diffrax_over_scan_median": median["gvlab-diffrax"] / median["gvlab-scan"],
        "torch_over_scan_min": best[fastest_torch] / best["gvlab-scan"],
    }
    print(f"\ncompile: gvlab-diffrax {diffrax_compile:.1f} s, gvlab-scan {scan_compile:.1f} s; torch first call "
          f"{torch_first:.2f} s (all excluded below)")
    print(f"\nsteps/s ({args.steps} steps per round, {args.repeats} interleaved rounds; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {info['cores_usable']} cores; "
          "cpu = process CPU s per wall s, median)")
    for name in names:
        rates = " ".join(f"{v:7.2f}" for v in results["steps_per_s"][name])
        print(f"  {name:14s} {rates}   best {1 / best[name]:7.2f}  median {1 / median[name]:7.2f}  "
              f"cpu {statistics.median(cpu_use[name]):.2f}")
    print(f"  {fastest_torch} / gvlab-diffrax (time per step): {results['torch_over_diffrax_min']:.2f}x (best), "
          f"{results['torch_over_diffrax_median']:.2f}x (median); target >= 3")
    if fastest_torch != torch_name:
        print(f"  {torch_name} / gvlab-diffrax (time per step): "
              f"{results['torch_same_threads_over_diffrax_min']:.2f}x (best), "
              f"{results['torch_same_threads_over_diffrax_median']:.2f}x (median)")
    print(f"  gvlab-diffrax / gvlab-scan (time per step): {results['diffrax_over_scan_min']:.2f}x (best), "
          f"{results['diffrax_over_scan_median']:.2f}x (median); target <= 1.5")
    print(f"  {fastest_torch} / gvlab-scan (time per step): {results['torch_over_scan_min']:.2f}x (best)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
