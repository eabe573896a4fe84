"""The optional ``triton`` import shared by the Triton kernel modules.

triton is optional: CPU-only installs must still import rom.kernels, so the kernel modules take ``triton``,
``tl`` and ``HAS_TRITON`` from here and define their kernels only ``if HAS_TRITON``.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised on CPU-only machines
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "tl", "triton"]
