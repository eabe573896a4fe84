"""Which floating-point precision a forward pass runs in, shared by training and evaluation."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from rom.config import Precision


def autocast_context(device: torch.device, precision: Precision) -> Any:
    """bf16 autocast on CUDA for auto/bf16, on CPU only when bf16 is asked for; fp32 otherwise."""
    if precision == Precision.FP32 or (precision == Precision.AUTO and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def precision_name(device: torch.device, precision: Precision) -> str:
    if precision == Precision.FP32 or (precision == Precision.AUTO and device.type != "cuda"):
        return "fp32"
    return "bf16"
