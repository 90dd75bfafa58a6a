"""What the PyTorch-comparison benchmarks share about torch's device (`--torch-device cpu|cuda`)."""

from __future__ import annotations

import contextlib

import jax
import torch


def torch_sync(device: torch.device) -> None:
    """Wait for the kernels queued on `device` (CUDA runs them asynchronously); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def full_float32(device: torch.device):
    """Both implementations at full float32 precision, for the agreement checks: on a GPU JAX's default precision
    lets XLA use TF32 for float32 convolutions and matmuls, and torch's `allow_tf32` flags may do so on CUDA.
    Inside: `jax.default_matmul_precision("highest")` when JAX runs on an accelerator (it applies to programs traced
    inside), torch's cuBLAS and cuDNN TF32 flags off when torch runs on CUDA; the previous settings (the defaults,
    used for timing) are restored on exit. Nothing changes when both run on the CPU."""
    with contextlib.ExitStack() as stack:
        if jax.default_backend() != "cpu":
            stack.enter_context(jax.default_matmul_precision("highest"))
        if device.type == "cuda":
            flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

            def restore():
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

            stack.callback(restore)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield


def devices(device: torch.device | str) -> dict:
    """The torch device (and its name on CUDA) and the kind of JAX's default device."""
    device = torch.device(device)
    info = {"torch_device": str(device)}
    if device.type == "cuda":
        info["torch_device_name"] = torch.cuda.get_device_name(device)
    info["jax_device_kind"] = jax.devices()[0].device_kind
    return info


def parse_torch_device(parser, value: str) -> torch.device:
    """`--torch-device`: cpu, or cuda where torch sees a GPU (otherwise the parser's error)."""
    device = torch.device(value)
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--torch-device {device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--torch-device {device}: torch.cuda.is_available() is False (a CPU build of torch?)")
    return device
