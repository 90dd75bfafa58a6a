"""The U-Net denoiser of `gvlab.nn.unet`: training step and sampler, gvlab (jit, `lax.scan`) vs PyTorch eager.

The network: `UNet(channels=(32, 64, 64))` on 32x32x1 images (776,929 parameters), and the same architecture
written in PyTorch (NCHW, `torch.nn` layers) with identical layer sizes; the parameter counts are asserted equal
and the JAX parameters are copied into the torch network, so both compute the same function.

Measured, in one run:

(a) training step: batch 32, eps-prediction MSE on fixed random images x0 ~ N(0, 1), t ~ U(0, 1), eps ~ N(0, 1),
    x_t = alpha_t x0 + sigma_t eps on the VP-linear schedule (`gvlab.diffusion.schedules`, t in [0, 1]); forward,
    backward and an Adam update (lr 1e-4, b1 0.9, b2 0.999, eps 1e-8 on both sides). gvlab: one jitted
    `step(state, x0, key) -> (state, loss)` that draws t and eps from `fold_in(key, step)` and donates its state.
    torch: the same, with `torch.rand` / `torch.randn`, `loss.backward()` and `torch.optim.Adam` (default
    implementation). Time per step.
(b) sampling: 16 Euler steps of the probability-flow ODE dx/dt = f(t) x + 1/2 g(t)^2 eps_hat / sigma_t from t = 1 to
    t_min = 1e-3 on a batch of 64 from x_1 ~ N(0, I); the schedule coefficients are precomputed on the time grid
    and shared. gvlab: the loop as `lax.scan` inside one jitted function (noise drawn inside); torch: a Python loop
    under `torch.no_grad()`. Samples per second.

Correctness comes first: on identical inputs the two networks' outputs, the loss and its gradients (one
evaluation, no update) and a 16-step sampler run are compared, and the run stops if they disagree. Compilation
(JAX) and the first call (torch) are reported separately. After an untimed warm-up, `--repeats` rounds are
interleaved (order alternated); each round times `--steps` training steps and `--sampler-calls` sampler calls of
each implementation. The table gives medians over rounds (best in brackets) and the ratios torch time / gvlab
time (> 1: gvlab faster).

torch runs with `torch.set_num_threads(--torch-threads)` (default 2, the cores of the reference machine) and, when
that is more than one, with 1 thread as well: on a machine shared with other work torch's OpenMP threads wait for each
other at every parallel op and the 2-thread step can be ten times slower than usual (seen here while a test suite ran
beside it), which the 1-thread column and the load average printed before and after make visible. XLA's CPU client
uses the usable cores (in practice these convolutions keep about one core busy: see the "cpu use" row).

`--torch-device cuda` (on a machine with an NVIDIA GPU, a CUDA build of torch and of jaxlib) compares gvlab on JAX's
default device, the GPU, with torch on CUDA: the torch network, the parameters copied from JAX, the inputs, the Adam
state and the random draws (`torch.Generator` on the device) live on the GPU; every timed torch call ends with
`torch.cuda.synchronize()` (the gvlab calls with `block_until_ready`), and the torch column is `torch-cuda`, with
no 1-thread column (threads matter only on the CPU). The agreement check runs there too, at full float32 precision
on both sides (`jax.default_matmul_precision("highest")`, torch's `allow_tf32` flags off); the timing then uses
each side's default precision: JAX's default lets XLA use TF32 for float32 convolutions and matmuls on Ampere and
later GPUs, torch by default uses TF32 for cuDNN convolutions (`torch.backends.cudnn.allow_tf32`) but not for
matmuls (`torch.backends.cuda.matmul.allow_tf32`). The JSON's "machine" records the torch device, the GPU's name
and JAX's device kind; the headline keys are the same on every device.

    pip install -e '.[bench]'   # torch; a CPU build is enough (a CUDA build for --torch-device cuda)
    python benchmarks/bench_unet.py [--quick] [--steps 10] [--repeats 5] [--json out.json] [--torch-device cuda]
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from gvlab.diffusion.schedules import Schedule  # noqa: E402
from gvlab.nn.conv import count_params  # noqa: E402
from gvlab.nn.unet import UNet, init_unet  # noqa: E402
from gvlab.train import parallel  # noqa: E402
from benchmarks.torch_unet import TorchUNet, torch_state_dict  # noqa: E402
from benchmarks.torch_device import devices, full_float32, parse_torch_device, torch_sync  # noqa: E402

# Agreement required before timing (float32; relative to the largest magnitude of the compared array).
OUTPUT_RTOL = 1e-4
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3
SAMPLE_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Problem:
    """Sizes and settings of the benchmark (defaults: the issue's; `--quick` shrinks the batches and the sampler)."""

    channels: tuple[int, ...] = (32, 64, 64)
    num_classes: int | None = None
    image_size: int = 32
    image_channels: int = 1
    train_batch: int = 32
    lr: float = 1e-4
    sampler_steps: int = 16
    sampler_batch: int = 64
    seed: int = 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.image_channels)


SCHEDULE = Schedule("vp_linear")


def sampler_grid(prob: Problem) -> dict[str, np.ndarray]:
    """Time grid t_0 = 1 > ... > t_N = t_min and the PF-ODE coefficients at t_0 .. t_{N-1} (float32 numpy)."""
    ts = np.linspace(SCHEDULE.t_max, SCHEDULE.t_min, prob.sampler_steps + 1, dtype=np.float32)
    t = jnp.asarray(ts[:-1])
    return {"t": ts[:-1], "dt": np.diff(ts).astype(np.float32), "f": np.asarray(SCHEDULE.drift_coefficient(t)),
            "g2_over_2sigma": np.asarray(0.5 * SCHEDULE.diffusion_squared(t) / SCHEDULE.sigma(t))}


# ----------------------------------------------------------------------------------------------- gvlab (JAX)


def jax_params(prob: Problem):
    """Initial parameters, with the zero-initialised output convolution given small random values (the same in
    both implementations), so that outputs and every gradient are non-trivial to compare."""
    init_key, out_key = jax.random.split(jax.random.key(prob.seed))
    params = init_unet(UNet(prob.channels, prob.num_classes), init_key, prob.image_shape)
    out = params["params"]["out"]
    kernel_key, bias_key = jax.random.split(out_key)
    out["kernel"] = 0.1 * jax.random.normal(kernel_key, out["kernel"].shape) / math.sqrt(9 * prob.channels[0])
    out["bias"] = 0.01 * jax.random.normal(bias_key, out["bias"].shape)
    return params


def jax_loss(prob: Problem):
    model = UNet(prob.channels, prob.num_classes)

    def loss(params, x0, t, eps):
        x_t = SCHEDULE.marginal(x0, t, eps)
        return jnp.mean((model.apply(params, x_t, t) - eps) ** 2)

    return loss


def jax_train_step(prob: Problem, params, x0, mesh=None):
    """(compiled step, initial state, compile seconds); state = (params, opt_state, step).

    With a `mesh` (several CPU devices, `--cpu-devices`), the batch is split over its devices and the state
    replicated, as `gvlab.fit` does (`gvlab.train.parallel`); x0 must then be placed with `batch_sharding(mesh)`.
    """
    loss_fn = jax_loss(prob)
    tx = optax.adam(prob.lr)

    def step(state, x0, key):
        params, opt_state, count = state
        t_key, eps_key = jax.random.split(jax.random.fold_in(key, count))
        t = jax.random.uniform(t_key, x0.shape[:1])
        eps = jax.random.normal(eps_key, x0.shape)
        if mesh is not None:
            t, eps = parallel.constrain_batch((t, eps), mesh)
        loss, grads = jax.value_and_grad(loss_fn)(params, x0, t, eps)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, count + 1), loss

    params = jax.tree.map(jnp.copy, params)  # the step donates its state: keep the caller's parameters alive
    state = (params, tx.init(params), jnp.zeros((), jnp.int32))
    if mesh is not None:
        state = parallel.put(state, parallel.replicated(mesh))
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, x0, jax.random.key(1)).compile()
    return compiled, state, time.perf_counter() - t0


def jax_sample_from(prob: Problem):
    """`(params, x_1 [B, H, W, C]) -> x_{t_min}`: the Euler PF-ODE loop as a `lax.scan`."""
    model = UNet(prob.channels, prob.num_classes)
    grid = {k: jnp.asarray(v) for k, v in sampler_grid(prob).items()}

    def sample_from(params, x):
        def body(x, g):
            eps_hat = model.apply(params, x, jnp.broadcast_to(g["t"], x.shape[:1]))
            return x + g["dt"] * (g["f"] * x + g["g2_over_2sigma"] * eps_hat), None

        return jax.lax.scan(body, x, grid)[0]

    return sample_from


def jax_sampler(prob: Problem, params, mesh=None):
    """(compiled `(params, key) -> samples`, compile seconds); the initial noise is drawn inside (split over the
    devices of `mesh` when given; `params` must then be replicated on it)."""
    sample_from = jax_sample_from(prob)

    def sample(params, key):
        x = jax.random.normal(key, (prob.sampler_batch, *prob.image_shape))
        return sample_from(params, x if mesh is None else parallel.constrain_batch(x, mesh))

    t0 = time.perf_counter()
    compiled = jax.jit(sample).lower(params, jax.random.key(2)).compile()
    return compiled, time.perf_counter() - t0


# -------------------------------------------------------------------------------------------- PyTorch eager


def torch_model(prob: Problem, params, device: torch.device | str = "cpu") -> TorchUNet:
    """The torch network on `device`, holding a copy of the JAX parameters (`load_state_dict(strict=True)`: same
    layers)."""
    model = TorchUNet(prob.image_channels, prob.channels, prob.num_classes).to(device)
    model.load_state_dict(torch_state_dict(params), strict=True)
    return model


def torch_loss(model: TorchUNet, grid_alpha_sigma, x0, t, eps):
    alpha, sigma = grid_alpha_sigma(t)
    x_t = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
    return torch.mean((model(x_t, t) - eps) ** 2)


def torch_alpha_sigma(t):
    """VP-linear alpha_t, sigma_t in torch (as `Schedule("vp_linear")`)."""
    s = SCHEDULE
    alpha = torch.exp(-0.5 * (s.beta_min * t + 0.5 * (s.beta_max - s.beta_min) * t**2))
    return alpha, torch.sqrt(-torch.expm1(2 * torch.log(alpha)))



def synced(call, device: torch.device):
    """`call` followed by `torch_sync(device)` on CUDA, so that the clock is read after the work is done (the gvlab
    calls block with `block_until_ready`); `call` itself on the CPU."""
    if device.type != "cuda":
        return call

    def run():
        out = call()
        torch_sync(device)
        return out

    return run



def _set_threads(threads: int | None) -> None:
    """`torch.set_num_threads` when another implementation changed it (microseconds, against steps of 0.1 s)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class TorchTrainStep:
    """One step: draw t and eps, loss, backward, Adam update (default implementation of `torch.optim.Adam`)."""

    def __init__(self, prob: Problem, params, x0_nhwc, threads: int | None = None,
                 device: torch.device | str = "cpu"):
        self.threads, self.device = threads, torch.device(device)
        self.model = torch_model(prob, params, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=prob.lr, betas=(0.9, 0.999), eps=1e-8)
        x0 = torch.from_numpy(np.array(np.asarray(x0_nhwc).transpose(0, 3, 1, 2)))  # writable, contiguous
        self.x0 = x0.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(prob.seed)

    def __call__(self):
        _set_threads(self.threads)
        t = torch.rand(self.x0.shape[0], generator=self.generator, device=self.device)
        eps = torch.randn(self.x0.shape, generator=self.generator, device=self.device)
        loss = torch_loss(self.model, torch_alpha_sigma, self.x0, t, eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


class TorchSampler:
    """The Euler PF-ODE sampler, a Python loop under `torch.no_grad()`."""

    def __init__(self, prob: Problem, params, threads: int | None = None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.prob, self.model, self.threads = prob, torch_model(prob, params, self.device), threads
        self.grid = [tuple(float(v) for v in row) for row in zip(*(sampler_grid(prob)[k] for k in
                                                                 ("t", "dt", "f", "g2_over_2sigma")))]
        self.generator = torch.Generator(device=self.device).manual_seed(prob.seed)

    @torch.no_grad()
    def sample_from(self, x):
        batch = x.shape[0]
        for t, dt, f, g2_over_2sigma in self.grid:
            eps_hat = self.model(x, torch.full((batch,), t, device=x.device))
            x = x + dt * (f * x + g2_over_2sigma * eps_hat)
        return x

    def __call__(self):
        _set_threads(self.threads)
        p = self.prob
        x = torch.randn((p.sampler_batch, p.image_channels, p.image_size, p.image_size), generator=self.generator,
                        device=self.device)
        return self.sample_from(x)


# ------------------------------------------------------------------------------------------------ agreement


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def check_agreement(prob: Problem, params, verbose: bool = True, device: torch.device | str = "cpu") -> dict:
    """Outputs, loss, gradients and a sampler run of both implementations on identical inputs; raises on mismatch.

    torch runs on `device`; both sides compute at full float32 precision (`full_float32`)."""
    device = torch.device(device)
    with full_float32(device):
        return _check_agreement(prob, params, verbose, device)


def _check_agreement(prob: Problem, params, verbose: bool, device: torch.device) -> dict:
    rng = np.random.default_rng(prob.seed + 1)
    batch = 4
    x0 = rng.standard_normal((batch, *prob.image_shape)).astype(np.float32)
    eps = rng.standard_normal((batch, *prob.image_shape)).astype(np.float32)
    t = np.array([0.05, 0.3, 0.6, 0.95], np.float32)
    nchw = lambda a: torch.from_numpy(np.array(a.transpose(0, 3, 1, 2))).to(device)  # noqa: E731
    t_torch = torch.from_numpy(t).to(device)
    model = UNet(prob.channels, prob.num_classes)
    tmodel = torch_model(prob, params, device)

    out_jax = jax.jit(model.apply)(params, jnp.asarray(x0), jnp.asarray(t))
    with torch.no_grad():
        out_torch = tmodel(nchw(x0), t_torch).cpu().numpy().transpose(0, 2, 3, 1)

    loss_jax, grads_jax = jax.jit(jax.value_and_grad(jax_loss(prob)))(params, jnp.asarray(x0), jnp.asarray(t),
                                                                      jnp.asarray(eps))
    loss_torch = torch_loss(tmodel, torch_alpha_sigma, nchw(x0), t_torch, nchw(eps))
    loss_torch.backward()
    loss_torch = loss_torch.detach().cpu()
    grads_torch = {name: p.grad.cpu().numpy() for name, p in tmodel.named_parameters()}
    grad_rel = {}
    for name, g in torch_state_dict({"params": grads_jax["params"]}).items():
        grad_rel[name] = _rel(g.numpy(), grads_torch[name])

    x1 = rng.standard_normal((batch, *prob.image_shape)).astype(np.float32)
    samples_jax = jax.jit(jax_sample_from(prob))(params, jnp.asarray(x1))
    samples_torch = TorchSampler(prob, params, device=device).sample_from(nchw(x1))
    samples_torch = samples_torch.cpu().numpy().transpose(0, 2, 3, 1)

    report = {"output_rel": _rel(out_jax, out_torch),
              "loss": [float(loss_jax), float(loss_torch)],
              "loss_rel": abs(float(loss_jax) - float(loss_torch)) / abs(float(loss_jax)),
              "grad_max_rel": max(grad_rel.values()), "grad_worst_array": max(grad_rel, key=grad_rel.get),
              "grad_zero_arrays": [k for k, v in grads_torch.items() if not np.any(v)],
              "sample_rel": _rel(samples_jax, samples_torch)}
    if verbose:
        print(f"  output max|diff|/max|out| {report['output_rel']:.1e}; loss {report['loss'][0]:.6f} vs "
              f"{report['loss'][1]:.6f} (rel {report['loss_rel']:.1e}); gradients: worst array "
              f"{report['grad_worst_array']} max|diff|/max|g| {report['grad_max_rel']:.1e}; "
              f"{prob.sampler_steps}-step samples max|diff|/max|x| {report['sample_rel']:.1e}")
    failures = [f"{name} {report[key]:.2e} > {tol}" for name, key, tol in
                [("output", "output_rel", OUTPUT_RTOL), ("loss", "loss_rel", LOSS_RTOL),
                 ("gradient", "grad_max_rel", GRAD_RTOL), ("samples", "sample_rel", SAMPLE_RTOL)]
                if not report[key] <= tol]
    if report["grad_zero_arrays"]:
        failures.append(f"zero gradients: {report['grad_zero_arrays']}")
    if failures:
        raise AssertionError("gvlab and torch disagree: " + "; ".join(failures))
    return report


# ---------------------------------------------------------------------------------------------------- timing


def time_calls(call, n: int) -> tuple[float, float]:
    """(wall seconds per call, process CPU seconds per wall second) over `n` back-to-back calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / n, cpu / wall


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine(torch_threads: int, device: torch.device | str = "cpu") -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores_usable": cpu_threads(), "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "torch": torch.__version__, "torch_threads": torch_threads,
            "backend": jax.default_backend(), "platform": platform.platform(), **devices(device)}



def parameter_counts(prob: Problem, params) -> tuple[int, int]:
    """(gvlab, torch) parameter counts; the torch network is built fresh (its own initialisation)."""
    tmodel = TorchUNet(prob.image_channels, prob.channels, prob.num_classes)
    return count_params(params), sum(p.numel() for p in tmodel.parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short run: batches of 8, 4 sampler steps, 2 rounds (checks that it works)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per implementation per round")
    parser.add_argument("--sampler-calls", type=int, default=2, help="sampler calls per implementation per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="also time gvlab with the batch split over this many CPU devices (jax_num_cpu_devices; "
                             "XLA:CPU before jaxlib 0.11 runs each convolution on one thread)")
    parser.add_argument("--torch-device", default="cpu",
                        help="torch's device: cpu, or cuda on a machine with an NVIDIA GPU (JAX uses its default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.torch_device = parse_torch_device(parser, args.torch_device)
    if args.quick:
        prob = Problem(train_batch=8, sampler_steps=4, sampler_batch=8)
        args.steps, args.sampler_calls, args.repeats = 2, 1, 2
    else:
        prob = Problem()
    if args.cpu_devices > 1:  # before JAX starts its CPU client
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        return _run(prob, args)
    finally:
        torch.set_num_threads(threads_before)


def _run(prob: Problem, args) -> dict:
    device = args.torch_device
    info = machine(args.torch_threads, device)
    print(" ".join(f"{k} {v}," for k, v in info.items()).rstrip(","), file=sys.stderr)
    params = jax_params(prob)
    n_jax, n_torch = parameter_counts(prob, params)
    print(f"UNet(channels={prob.channels}) on {'x'.join(map(str, prob.image_shape))}: parameters gvlab {n_jax:,}, "
          f"torch {n_torch:,}")
    if n_jax != n_torch:
        raise AssertionError(f"parameter counts differ: gvlab {n_jax}, torch {n_torch}")

    print("\nagreement (identical parameters and inputs; tolerances: output "
          f"{OUTPUT_RTOL:g}, loss {LOSS_RTOL:g}, gradient {GRAD_RTOL:g}, samples {SAMPLE_RTOL:g}, relative)")
    report = check_agreement(prob, params, device=device)

    x0 = jnp.asarray(np.random.default_rng(prob.seed).standard_normal((prob.train_batch, *prob.image_shape)),
                     jnp.float32)
    train_compiled, state, train_compile = jax_train_step(prob, params, x0)
    sample_compiled, sample_compile = jax_sampler(prob, params)
    train_key, sample_key = jax.random.key(1), jax.random.key(2)
    jax_state = {"state": state, "calls": 0}

    def jax_train():
        jax_state["state"], loss = train_compiled(jax_state["state"], x0, train_key)
        return loss

    def jax_sample():
        jax_state["calls"] += 1
        return sample_compiled(params, jax.random.fold_in(sample_key, jax_state["calls"]))

    t0 = time.perf_counter()
    torch_train = synced(TorchTrainStep(prob, params, x0, args.torch_threads, device), device)
    torch_train()
    torch_train_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch_sample = synced(TorchSampler(prob, params, args.torch_threads, device), device)
    torch_sample()
    torch_sample_first = time.perf_counter() - t0

    split = None  # gvlab with the batch split over several CPU devices (--cpu-devices), as `fit` would run it
    if args.cpu_devices > 1 and jax.default_backend() == "cpu":
        mesh = parallel.data_mesh(args.cpu_devices)
        x0_split = jax.device_put(x0, parallel.batch_sharding(mesh))
        params_split = parallel.put(params, parallel.replicated(mesh))
        split_train, split_state, _ = jax_train_step(prob, params, x0_split, mesh)
        split_sample, _ = jax_sampler(prob, params_split, mesh)
        split = {"state": split_state, "calls": 0, "name": f"gvlab-{args.cpu_devices}dev"}

        def split_train_call():
            split["state"], loss = split_train(split["state"], x0_split, train_key)
            return loss.block_until_ready()

        def split_sample_call():
            split["calls"] += 1
            return split_sample(params_split, jax.random.fold_in(sample_key, split["calls"])).block_until_ready()

    # On CUDA every torch call ends with torch.cuda.synchronize() (`synced`), as every gvlab call blocks.
    torch_name = "torch-cuda" if device.type == "cuda" else f"torch-{args.torch_threads}thr"
    calls = {("train", "gvlab"): lambda: jax_train().block_until_ready(),
             ("train", torch_name): torch_train,
             ("sample", "gvlab"): lambda: jax_sample().block_until_ready(),
             ("sample", torch_name): torch_sample}
    if args.torch_threads > 1 and device.type == "cpu":
        # On a machine shared with other work torch's OpenMP threads wait for each other at every parallel op, and
        # the multi-threaded run can be several times slower than one thread: time one thread too.
        calls[("train", "torch-1thr")] = TorchTrainStep(prob, params, x0, 1)
        calls[("sample", "torch-1thr")] = TorchSampler(prob, params, 1)
    if split is not None:
        calls[("train", split["name"])] = split_train_call
        calls[("sample", split["name"])] = split_sample_call
    impls = list(dict.fromkeys(impl for _, impl in calls))
    per_round = {"train": args.steps, "sample": args.sampler_calls}
    # An untimed warm-up round (thread pools, allocator), then rounds in alternating order so that drifts in the
    # machine's load hit every implementation.
    load_before = os.getloadavg()
    for (task, _), call in calls.items():
        time_calls(call, max(1, per_round[task] // 2))
    seconds = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    order = list(calls)
    for r in range(args.repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            wall, use = time_calls(calls[k], per_round[k[0]])
            seconds[k].append(wall)
            cpu[k].append(use)
    load_after = os.getloadavg()
    median = {k: statistics.median(v) for k, v in seconds.items()}
    best = {k: min(v) for k, v in seconds.items()}
    ratio = {k: median[k] / median[(k[0], "gvlab")] for k in calls if k[1] != "gvlab"}
    ratio_best = {k: best[k] / best[(k[0], "gvlab")] for k in calls if k[1] != "gvlab"}

    print(f"\ncompile: gvlab train step {train_compile:.1f} s, sampler {sample_compile:.1f} s; torch first call: "
          f"train step {torch_train_first:.2f} s, sampler {torch_sample_first:.2f} s (all excluded below)")
    print(f"\n{args.repeats} interleaved rounds of {args.steps} train steps and {args.sampler_calls} sampler calls; "
          f"median (best); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
          f"{info['cores_usable']} cores; cpu = process CPU s per wall s (median)")
    labels = {"train": f"train step, batch {prob.train_batch} [ms/step]",
              "sample": f"sampler, {prob.sampler_steps} Euler steps x batch {prob.sampler_batch} [samples/s]"}
    cells = {"": [impl for impl in impls] + [f"{impl}/gvlab" for impl in impls[1:]]}
    for task, label in labels.items():
        if task == "train":
            value = {impl: (1e3 * median[(task, impl)], 1e3 * best[(task, impl)]) for impl in impls}
        else:
            value = {impl: (prob.sampler_batch / median[(task, impl)], prob.sampler_batch / best[(task, impl)])
                     for impl in impls}
        cells[label] = ([f"{value[impl][0]:.1f} ({value[impl][1]:.1f})" for impl in impls]
                        + [f"{ratio[(task, impl)]:.2f}x ({ratio_best[(task, impl)]:.2f}x)" for impl in impls[1:]])
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    cells["cpu use, train / sampler"] = [f"{cpu_median[('train', impl)]:.2f} / {cpu_median[('sample', impl)]:.2f}"
                                         for impl in impls]
    width = max(map(len, cells))
    print("  (ratios: torch time / gvlab time; > 1: gvlab faster)")
    for label, row in cells.items():
        print(f"  {label:{width}s}" + "".join(f"{cell:>19s}" for cell in row))
    results = {
        "problem": dataclasses.asdict(prob), "machine": info, "parameters": {"gvlab": n_jax, "torch": n_torch},
        "agreement": report, "loadavg_before": load_before, "loadavg_after": load_after,
        "compile_s": {"train": train_compile, "sample": sample_compile},
        "torch_first_call_s": {"train": torch_train_first, "sample": torch_sample_first},
        "train_s_per_step": {impl: seconds[("train", impl)] for impl in impls},
        "sampler_samples_per_s": {impl: [prob.sampler_batch / s for s in seconds[("sample", impl)]] for impl in impls},
        "cpu_per_wall": {f"{task}/{impl}": v for (task, impl), v in cpu.items()},
        "torch_over_gvlab": {f"{task}/{impl}": {"median": ratio[(task, impl)], "best": ratio_best[(task, impl)]}
                             for task, impl in ratio},
        # The headline: torch with --torch-threads threads (on the CPU) or on CUDA (--torch-device cuda).
        "torch_over_gvlab_train_median": ratio[("train", torch_name)],
        "torch_over_gvlab_sample_median": ratio[("sample", torch_name)],
    }
    if split is not None:  # torch time / the split gvlab's time
        name = split["name"]
        for task in ("train", "sample"):
            results[f"torch_over_{name.replace('-', '_')}_{task}_median"] = (median[(task, torch_name)]
                                                                              / median[(task, name)])
        key = f"torch_over_{name.replace('-', '_')}"
        print(f"  {torch_name}/{name}: train {results[key + '_train_median']:.2f}x, "
              f"sampler {results[key + '_sample_median']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
