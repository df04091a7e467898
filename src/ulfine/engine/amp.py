"""Device selection and mixed precision that works the same on CPU and GPU."""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from ulfine.config import ConfigError

logger = logging.getLogger(__name__)

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


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs at speed on ``device``: a GPU that supports it, or a CPU with oneDNN bf16
    kernels (AVX-512 / AMX). Elsewhere (e.g. an AVX2-only CPU) bf16 matmuls are emulated and run
    50-100x slower than fp32."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation flag and reports native support only
            return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where it runs natively, else fp32. An explicit bf16 is kept (it changes
    the numbers, so it is the user's choice) with a warning where it is emulated."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        logger.warning("train.precision = 'bf16' but this %s has no native bf16: it is emulated and runs "
                       "many times slower than fp32 (train.precision=auto picks fp32 here)", device.type)
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16/fp16 autocast on the given device; fp32 (or fp16 on CPU, which is slow) runs plain."""
    if precision == "auto":
        precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("train.precision = 'fp16' is not supported on CPU; use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
