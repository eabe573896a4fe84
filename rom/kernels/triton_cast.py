"""Widening cast (bf16 / fp16 -> fp32) of a contiguous tensor in Triton: 16-byte loads and stores.

The "upcast" and "upcast_add" ops of the Triton backend (semantics: rom.kernels.reference.weight_cast's
``upcast_reference`` and ``upcast_add_reference``; the second adds the cast into an fp32 gradient). torch's own
bf16 -> fp32 copy is its generic dtype-converting kernel; this one moves the same bytes at close to the copy
bandwidth. Other dtype pairs and tensors with gaps go to ``Tensor.to``.
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, interpreting, tl, triton

_BLOCK = 4096
_NUM_WARPS = 8  # 16 elements per thread: two 16-byte bf16 loads, four 16-byte fp32 stores
_WIDENING = {(torch.bfloat16, torch.float32), (torch.float16, torch.float32)}

if HAS_TRITON:

    @triton.jit
    def _upcast_kernel(src_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(out_ptr + offs, tl.load(src_ptr + offs, mask=m).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _upcast_add_kernel(src_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        acc = tl.load(out_ptr + offs, mask=m) + tl.load(src_ptr + offs, mask=m).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offs, acc, mask=m)


def _dense(t: torch.Tensor) -> bool:
    """Contiguous up to a permutation of its dimensions (a transposed view of a contiguous tensor, say): its
    elements fill one block of memory, so a flat pass over it visits each exactly once."""
    if t.is_contiguous():
        return True
    order = sorted(range(t.dim()), key=lambda i: t.stride(i), reverse=True)
    return t.permute(order).is_contiguous()


def upcast_triton(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``; bf16 / fp16 -> fp32 of a dense CUDA tensor in one Triton pass, strides kept (as ``to``)."""
    if not HAS_TRITON:
        raise ImportError("rom.kernels.triton_cast: triton is not installed; use backend='reference'")
    on_device = t.device.type == "cuda" or interpreting()
    if (t.dtype, dtype) not in _WIDENING or not _dense(t) or t.numel() == 0 or not on_device:
        return t.to(dtype)
    out = torch.empty_like(t, dtype=dtype)  # same strides as t (t is dense)
    n = t.numel()
    _upcast_kernel[(cdiv(n, _BLOCK),)](t, out, n, BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return out


def upcast_add_triton(out: torch.Tensor, t: torch.Tensor) -> None:
    """``out += t`` (t bf16 / fp16 widened to out's fp32) in one pass; other cases go to ``Tensor.add_``."""
    if not HAS_TRITON:
        raise ImportError("rom.kernels.triton_cast: triton is not installed; use backend='reference'")
    on_device = t.device.type == "cuda" or interpreting()
    if ((t.dtype, out.dtype) not in _WIDENING or not (t.is_contiguous() and out.is_contiguous())
            or t.shape != out.shape or t.numel() == 0 or not on_device):
        out.add_(t.to(out.dtype))
        return
    n = t.numel()
    _upcast_add_kernel[(cdiv(n, _BLOCK),)](t, out, n, BLOCK=_BLOCK, num_warps=_NUM_WARPS)


__all__ = ["upcast_add_triton", "upcast_triton", "HAS_TRITON"]
