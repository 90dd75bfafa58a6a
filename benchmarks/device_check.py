"""The device check: what a machine with one accelerator runs once, in under 8 minutes, into one JSON file.

    bash benchmarks/device_check.sh [OUT_DIR]     # installs gvlab with --no-deps into the machine's Python, then this

Steps, each a subprocess with its own time limit, its wall time and outcome recorded (a step that fails or times out
is recorded and the next one runs):

1. the environment: JAX's backend and devices, torch's CUDA device, versions;
2. the test files that matter on a device (train loop, SDE, diffusion samplers, inverse operators, U-Net,
   Transformer) on the accelerator, float32 matrix products at full precision (`JAX_DEFAULT_MATMUL_PRECISION=highest`:
   the tests' tolerances are float32's, and TF32 is JAX's default on NVIDIA GPUs);
3. the four benchmarks (`bench_fit`, and `bench_unet`, `bench_transformer`, `bench_fractional_sde` against PyTorch on
   the same device, `--torch-device cuda`), each writing its JSON, whose headline ratios are copied;
4. `gvlab reproduce vae/digits --profile quick` and `gvlab reproduce diffusion/principles --profile quick`, timed,
   with their claims.

The JSON (`OUT_DIR/device_check.json`) holds every step's command, seconds, return code and the tail of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_TESTS = ["tests/test_train.py", "tests/test_sde.py", "tests/test_diffusion_samplers.py",
                "tests/test_inverse_operators.py", "tests/test_unet.py", "tests/test_transformer.py"]
# cuda on the device machine; GVLAB_DEVICE_CHECK_TORCH=cpu dry-runs the script's mechanics on a machine without one.
TORCH_DEVICE = os.environ.get("GVLAB_DEVICE_CHECK_TORCH", "cuda")
BENCHMARKS = {  # name -> (arguments, {headline: key of its JSON}); torch time / gvlab time but for fit
    "fit": (["--steps", "500", "--seed-steps", "200", "--repeats", "2"], {"fit / bare loop": "fit_over_bare_min"}),
    "unet": (["--torch-device", TORCH_DEVICE, "--steps", "10", "--repeats", "3"],
             {"train step": "torch_over_gvlab_train_median", "sampler": "torch_over_gvlab_sample_median"}),
    "transformer": (["--torch-device", TORCH_DEVICE, "--steps", "20", "--repeats", "3"],
                    {"train step": "torch_over_gvlab_train_median",
                     "sequential / vmapped lr sweep": "sequential_over_vmapped_median"}),
    "fractional_sde": (["--torch-device", TORCH_DEVICE, "--steps", "20", "--repeats", "3"],
                       {"train step (diffrax)": "torch_over_diffrax_median"}),
}
# JAX takes 75% of GPU memory at start by default; torch shares the GPU with it in the benchmarks.
SHARED_GPU = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
EXPERIMENTS = ["vae/digits", "diffusion/principles"]


BUDGET_S = float(os.environ.get("GVLAB_DEVICE_CHECK_BUDGET", 450))  # the whole check, machine start excluded: every step's limit is cut to what is left of it
_DEADLINE = time.perf_counter() + BUDGET_S


def step(record: dict, name: str, command: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run one step; record its command, seconds, return code and the end of its output."""
    start = time.perf_counter()
    timeout = max(1.0, min(timeout, _DEADLINE - start))
    try:
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc, output = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
        output = output.decode() if isinstance(output, bytes) else output
    seconds = time.perf_counter() - start
    record[name] = {"command": " ".join(command), "seconds": round(seconds, 1), "rc": rc, "tail": output[-4000:]}
    print(f"[device check] {name}: rc {rc}, {seconds:.0f} s", file=sys.stderr, flush=True)
    return record[name]


def environment() -> dict:
    probe = ("import json, jax, torch, flax, optax, diffrax, orbax.checkpoint as ocp;"
             "d = jax.devices()[0];"
             "print(json.dumps({'jax': jax.__version__, 'backend': jax.default_backend(),"
             "'device_kind': d.device_kind, 'device_count': jax.device_count(), 'torch': torch.__version__,"
             "'torch_cuda': torch.cuda.is_available(),"
             "'torch_device': torch.cuda.get_device_name() if torch.cuda.is_available() else None,"
             "'flax': flax.__version__, 'optax': optax.__version__, 'diffrax': diffrax.__version__,"
             "'orbax': ocp.__version__, 'python': __import__('sys').version.split()[0]}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": done.stderr[-2000:]}


def main(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(), "steps": {}}
    print(f"[device check] {report['environment']}", file=sys.stderr, flush=True)
    steps = report["steps"]
    tests = step(steps, "tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                                  "--junitxml", str(out / "tests.xml"), *DEVICE_TESTS], timeout=150,
                 env={"JAX_DEFAULT_MATMUL_PRECISION": "highest", "GVLAB_COMPILE_CACHE": "0"})
    tests["summary"] = next((line for line in reversed(tests["tail"].splitlines()) if " in " in line), "")
    ratios: dict = {}
    for name, (args, headline) in BENCHMARKS.items():
        path = out / f"bench_{name}.json"
        result = step(steps, f"bench_{name}", [sys.executable, f"benchmarks/bench_{name}.py", *args,
                                               "--json", str(path)], timeout=120, env=SHARED_GPU)
        if result["rc"] == 0 and path.exists():
            data = json.loads(path.read_text())
            ratios[name] = {label: data.get(key) for label, key in headline.items()}
    report["torch_over_gvlab"] = ratios
    for name in EXPERIMENTS:
        workdir = out / "runs" / name.replace("/", "_")
        result = step(steps, f"reproduce {name}", [sys.executable, "-m", "gvlab.cli", "reproduce", name,
                                                   "--profile", "quick", "--workdir", str(workdir), "--quiet"],
                      timeout=150, env={"GVLAB_COMPILE_CACHE": "0"})
        summary = workdir / "report.json"
        if summary.exists():
            data = json.loads(summary.read_text())
            result["claims"] = [{"metric": c["metric"], "measured": c["measured"], "passed": c["passed"]}
                                for c in data["claims"]]
            result["wall_s"] = data["timing"]["wall_s"]
    (out / "device_check.json").write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "device_check")
