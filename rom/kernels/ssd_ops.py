"""Mamba-2's SSD scan as a kernel op (see rom.kernels.reference.ssd for its semantics).

Implementations (rom.kernels.registry): "reference" (pure torch, the semantics) everywhere, and "triton" on CUDA
where flash-linear-attention is installed (``pip install fla-core``, the ``fla`` extra): rom.kernels.fla_ops runs
the scan as fla's scalar-decay gated linear attention. "auto" picks "triton" on CUDA with fla, else the
reference.
"""

from __future__ import annotations

from torch import Tensor

from rom.kernels.registry import get_impl


def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
             dt_bias: Tensor | None = None, chunk_size: int = 256, backend: str = "auto") -> Tensor:
    """x (b, L, H, P), dt (b, L, H) before softplus, A (H,), B and C (b, L, G, N), D and dt_bias (H,) ->
    y (b, L, H, P)."""
    return get_impl("ssd_scan", backend, x.device)(x, dt, A, B, C, D, dt_bias, chunk_size)
