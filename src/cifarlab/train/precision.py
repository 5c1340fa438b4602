"""Device and numeric precision: what ``auto`` means on this machine."""

from __future__ import annotations

import contextlib

import torch

from cifarlab.errors import CifarlabError


def resolve_device(requested: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise CifarlabError(f"--device {requested}: no CUDA device is visible; use --device cpu")
    device = torch.device(requested)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:  # else: a traceback, after the data
        visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise CifarlabError(f"--device {requested}: this machine shows {visible}; pick one of them")
    return device


def cpu_supports_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX-512 BF16 or AMX), so autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def gpu_has_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: Ampere (compute capability 8.0) on. torch.cuda.is_bf16_supported()
    also says yes to older GPUs, where torch emulates bf16 (a T4 or V100: fp16 is fast)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(requested: str, device: torch.device, channels_last: bool) -> str:
    """Pick fp32/bf16/fp16; ``auto`` takes bf16 only where it is measured to be faster."""
    if requested == "fp16" and device.type != "cuda":
        raise CifarlabError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if gpu_has_bf16(device) else "fp16"
    # bf16 in NCHW layout was slower than fp32 here; with channels_last it is 1.3-2x faster.
    return "bf16" if cpu_supports_bf16() and channels_last else "fp32"


def explain_precision(requested: str, precision: str, device: torch.device) -> str:
    """``precision`` as a run's first line names it: with why, when ``auto`` picked it."""
    if requested != "auto":
        return precision
    if device.type == "cuda":
        return f"{precision} (auto)"
    if precision == "bf16":
        return "bf16 (auto: this CPU computes bf16 natively)"
    if cpu_supports_bf16():
        return "fp32 (auto: bf16 pays only with channels_last)"
    return "fp32 (auto: this CPU has no native bf16)"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype activations are computed in: fp32, bf16 or fp16."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for a forward pass (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype(precision))
