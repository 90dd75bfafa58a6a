"""One run over two processes through `jax.distributed` (`gvlab run --distributed`), for real on this machine.

Two local processes (coordinator on 127.0.0.1, gloo collectives on CPU), each with 2 CPU devices, run
`vae/digits` (smoke) as one data-parallel fit over 4 devices; the same run in this process on its 4 forced CPU
devices is the reference. Only the order of the gradient all-reduce differs (gloo sums across processes, XLA:CPU
within one), so parameters agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import jax
import numpy as np

import gvlab
from gvlab.train.ckpt import Checkpointer
from tests.test_cli import ROOT, _env

OVERRIDES = {"train.ckpt_every": 10}  # two checkpoints (steps 10 and 20) of the smoke run's 20 steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(workdir, step: int) -> list[np.ndarray]:
    checkpointer = Checkpointer(workdir / "ckpt", keep=10)
    try:
        state = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    return [np.asarray(x) for x in jax.tree.leaves(state["params"])]


def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
    assert jax.device_count() == 4, "conftest forces 4 CPU devices"
    two = tmp_path / "two_processes"
    env = _env()
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env.update(JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="2")
    command = [sys.executable, "-m", "gvlab.cli", "run", "vae/digits", "--profile", "smoke", "--workdir", str(two),
               "--distributed", "--set", *(f"{k}={v}" for k, v in OVERRIDES.items())]
    processes = [subprocess.Popen(command, cwd=ROOT, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    # The outcome is printed once, by process 0 (gloo's own connection lines go to every process's stdout).
    assert "claims hold" in outputs[0][0] and "claims hold" not in outputs[1][0]

    one = tmp_path / "one_process"
    gvlab.get("vae/digits", profile="smoke", overrides=OVERRIDES).run(workdir=one, progress=False)

    # Process 0 alone wrote the files: one row per logged step, as in the single-process run.
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    reference_rows = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["seed"]) for r in rows] == [(r["step"], r["seed"]) for r in reference_rows]
    # The checkpoints, written through orbax's multi-host path, hold the same parameters up to rounding.
    final_two, final_one = _checkpoint(two, 20), _checkpoint(one, 20)
    for a, b in zip(final_two, final_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Negative control: the same comparison tells ten steps of training apart.
    earlier_one = _checkpoint(one, 10)
    assert not all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(final_two, earlier_one))
    results_two = json.loads((two / "report.json").read_text())["results"]
    results_one = json.loads((one / "report.json").read_text())["results"]
    assert results_two.keys() == results_one.keys()
    for name in results_one:
        np.testing.assert_allclose(results_two[name], results_one[name], rtol=1e-4, err_msg=name)
