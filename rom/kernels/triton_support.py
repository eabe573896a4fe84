"""The optional ``triton`` import shared by the Triton kernel modules.

triton is optional: CPU-only installs must still import rom.kernels, so the kernel modules take ``triton``,
``tl`` and ``HAS_TRITON`` from here and define their kernels only ``if HAS_TRITON``; ``check_launchable``
is their common entry check.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised on CPU-only machines
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAS_TRITON = False


def cdiv(a: int, b: int) -> int:
    """Ceiling division for host-side grid sizes. (``triton.cdiv`` is a constexpr function: calling it from
    Python goes through Triton's wrapper, several microseconds per call on a launch-bound host.)"""
    return -(-a // b)


def interpreting() -> bool:
    """Triton's CPU interpreter is on: the kernels then run on CPU tensors (the interpreter tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_launchable(t: torch.Tensor, caller: str) -> None:
    """Raise ImportError without triton, ValueError for a tensor the kernels cannot run on (not on CUDA, unless
    interpreting)."""
    if not HAS_TRITON:
        raise ImportError(f"{caller}: triton is not installed; use backend='reference'")
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(f"{caller}: expected CUDA tensors, got {t.device}")


__all__ = ["HAS_TRITON", "cdiv", "check_launchable", "interpreting", "tl", "triton"]
