"""Widening cast (bf16 / fp16 -> fp32) of a contiguous tensor in Triton: 16-byte loads and stores.

The "upcast" op of the Triton backend (semantics: rom.kernels.weight_cast.upcast_reference). torch's own
bf16 -> fp32 copy is its generic dtype-converting kernel; this one moves the same bytes at close to the copy
bandwidth. Other dtype pairs and strided tensors go to ``Tensor.to``.
"""

from __future__ import annotations

import os

import torch

from rom.kernels.triton_support import HAS_TRITON, tl, triton

_BLOCK = 4096
_NUM_WARPS = 8  # 16 elements per thread: two 16-byte bf16 loads, four 16-byte fp32 stores
_WIDENING = {(torch.bfloat16, torch.float32), (torch.float16, torch.float32)}

if HAS_TRITON:

    @triton.jit
    def _upcast_kernel(src_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(out_ptr + offs, tl.load(src_ptr + offs, mask=m).to(out_ptr.dtype.element_ty), mask=m)


def upcast_triton(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``; bf16 / fp16 -> fp32 of a contiguous CUDA tensor in one Triton pass."""
    if not HAS_TRITON:
        raise ImportError("rom.kernels.triton_cast: triton is not installed; use backend='reference'")
    on_device = t.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    if (t.dtype, dtype) not in _WIDENING or not t.is_contiguous() or t.numel() == 0 or not on_device:
        return t.to(dtype)
    out = torch.empty(t.shape, dtype=dtype, device=t.device)
    n = t.numel()
    _upcast_kernel[(triton.cdiv(n, _BLOCK),)](t, out, n, BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return out


__all__ = ["upcast_triton", "HAS_TRITON"]
