"""Device selection and mixed precision that works the same on CPU and GPU."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from ulfine.config import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device = '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device = '{name}': ulfine runs on cpu or cuda only; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = '{name}' but no CUDA device is available; use device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device = '{name}' but only {torch.cuda.device_count()} CUDA device(s) exist "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16/fp16 autocast on the given device; fp32 (or fp16 on CPU, which is slow) runs plain."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("train.precision = 'fp16' is not supported on CPU; use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
