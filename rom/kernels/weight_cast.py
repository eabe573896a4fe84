"""A weight cast to the matmul dtype whose backward casts the gradient back through a vectorised kernel.

Under bf16 autocast an fp32 weight is cast to bf16 for its matmul, and its bf16 gradient is cast back to
fp32 in the backward. torch runs that bf16 -> fp32 copy through its generic dtype-converting kernel
(``unrolled_elementwise_kernel``, not vectorised), a visible share of a RoM layer's step for its expert banks
(8x the dense layer's weights; docs/gpu_kernels.md has the figure). The Triton backend does it with 16-byte
loads and stores instead (rom.kernels.triton_cast).

    cast_weight(w, dtype, backend)    forward w.to(dtype); backward the gradient cast to w.dtype (exact)
    op "upcast":      t.to(dtype)                 (semantics: rom.kernels.reference.weight_cast)
    op "upcast_add":  out += t in out's dtype

Inside ``weight_grads_accumulate_in_place()`` (what a CUDA-graph capture of a training step uses, see
rom.train.cuda_graph) the backward adds the cast gradient straight into an existing ``w.grad`` in one pass
and hands autograd no gradient for ``w``. Outside it autograd's AccumulateGrad would run a second pass over
the fp32 gradient (read it, read the new one, write it back): for the RoM banks that is 0.6 GB per step.
Only where every ``.grad`` is a fixed tensor and nothing hooks gradient accumulation (DDP does): the option
is off by default and ``CapturedStep`` turns it on for its capture only.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import torch
from torch import Tensor

from rom.kernels.registry import get_impl

_ACCUMULATE_IN_PLACE = contextvars.ContextVar("rom_weight_grads_accumulate_in_place", default=False)


@contextlib.contextmanager
def weight_grads_accumulate_in_place() -> Iterator[None]:
    """Forward passes inside: cast_weight's backward adds into the weight's existing .grad (module docstring)."""
    token = _ACCUMULATE_IN_PLACE.set(True)
    try:
        yield
    finally:
        _ACCUMULATE_IN_PLACE.reset(token)


class _CastWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, dtype: torch.dtype, backend: str) -> Tensor:  # type: ignore[override]
        ctx.weight_dtype, ctx.backend = weight.dtype, backend
        # decided here: the backward may run on autograd's device thread, which does not see the context var
        grad = weight.grad if weight.is_leaf and _ACCUMULATE_IN_PLACE.get() else None
        in_place = grad is not None and grad.dtype == weight.dtype and grad.shape == weight.shape
        ctx.accumulate_into = weight if in_place else None
        return weight.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        if ctx.accumulate_into is not None:
            get_impl("upcast_add", ctx.backend, grad.device)(ctx.accumulate_into.grad, grad)
            return None, None, None  # already accumulated: autograd gets no gradient to add again
        # upcast takes any strides (a strided gradient goes to Tensor.to, which keeps them)
        return get_impl("upcast", ctx.backend, grad.device)(grad, ctx.weight_dtype), None, None


def cast_weight(weight: Tensor, dtype: torch.dtype, backend: str = "auto") -> Tensor:
    """``weight.to(dtype)`` with the gradient cast back by the ``upcast`` op of ``backend``."""
    if weight.dtype == dtype:
        return weight
    if torch.jit.is_tracing():
        return weight.to(dtype)
    return _CastWeight.apply(weight, dtype, backend)


__all__ = ["cast_weight", "weight_grads_accumulate_in_place"]
