"""The Triton kernel modules import on any machine (CPU-only, without triton) and fail clearly there."""

from __future__ import annotations

import pytest
import torch


def test_triton_modules_import_and_refuse_cpu_tensors_clearly(monkeypatch):
    from rom.kernels import triton_conv, triton_scan

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    u = torch.randn(1, 4, 8)
    A = -torch.ones(4, 16)
    B = torch.randn(1, 16, 8)
    # without triton: ImportError naming the module; with triton but CPU tensors: ValueError naming the device
    with pytest.raises((ImportError, ValueError), match="triton|CUDA"):
        triton_scan.selective_scan_triton(u, u, A, B, B)
    with pytest.raises((ImportError, ValueError), match="triton|CUDA"):
        triton_conv.causal_conv1d_triton(u, torch.randn(4, 4))
