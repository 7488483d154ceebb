"""Devices and compute precision: parsed and checked once, for the API and every command."""

from __future__ import annotations

import torch

from loftr_core.errors import ConfigError

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device (``"auto"``: CUDA when available, else the CPU) and check it exists here.

    Raises:
        ConfigError: not a device string, CUDA/MPS requested but unavailable, or a GPU index
            beyond the number of GPUs.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={device!r} is not a valid torch device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={str(device)!r} requested but CUDA is not available; use 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device={str(device)!r} but only {count} CUDA device(s) exist (cuda:0..{count - 1})"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={str(device)!r} requested but MPS is not available; use 'cpu'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={str(device)!r} is not supported; use 'cpu', 'cuda' or 'mps'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Check that ``dtype`` (``"fp32"``, ``"bf16"``, ``"fp16"`` or a torch dtype) runs on ``device``.

    Raises:
        ConfigError: unknown name, fp16 on CPU, bf16 on a GPU without bf16 support.
    """
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        resolved = _DTYPES[dtype.lower()]
    else:
        raise ConfigError(f"dtype={dtype!r} is not supported; choose one of fp32, bf16, fp16")
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype={resolved} is not supported; choose one of fp32, bf16, fp16")
    if resolved == torch.float16 and device.type == "cpu":
        raise ConfigError(
            "dtype fp16 is not supported on the CPU (slow or missing kernels); use bf16 or fp32 "
            "on the CPU, or fp16 on a CUDA device"
        )
    if resolved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype bf16 is not supported by {device}; use fp16 or fp32")
    return resolved
