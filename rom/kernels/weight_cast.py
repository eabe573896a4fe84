"""A weight cast to the matmul dtype whose backward casts the gradient back through a vectorised kernel.

Under bf16 autocast an fp32 weight is cast to bf16 for its matmul, and its bf16 gradient is cast back to
fp32 in the backward. torch runs that bf16 -> fp32 copy through its generic dtype-converting kernel
(``unrolled_elementwise_kernel``, not vectorised): for a RoM layer's expert banks, 8x the dense layer's
weights (50M elements at d_model 1024), those casts took 0.31 ms of the layer's 5.2 ms forward+backward on an
H200. The Triton backend does it with 16-byte loads and stores instead (rom.kernels.triton_cast).

    cast_weight(w, dtype, backend)    forward w.to(dtype); backward the gradient cast to w.dtype (exact)
    upcast_reference(t, dtype)        t.to(dtype): the semantics of the "upcast" op
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rom.kernels.registry import get_impl


def upcast_reference(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype`` (a widening cast is exact)."""
    return t.to(dtype)


class _CastWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, dtype: torch.dtype, backend: str) -> Tensor:  # type: ignore[override]
        ctx.weight_dtype, ctx.backend = weight.dtype, backend
        return weight.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        # upcast takes any strides (a strided gradient goes to Tensor.to, which keeps them)
        return get_impl("upcast", ctx.backend, grad.device)(grad, ctx.weight_dtype), None, None


def cast_weight(weight: Tensor, dtype: torch.dtype, backend: str = "auto") -> Tensor:
    """``weight.to(dtype)`` with the gradient cast back by the ``upcast`` op of ``backend``."""
    if weight.dtype == dtype:
        return weight
    if torch.jit.is_tracing():
        return weight.to(dtype)
    return _CastWeight.apply(weight, dtype, backend)


__all__ = ["cast_weight", "upcast_reference"]
