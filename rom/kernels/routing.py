"""The router's two steps as kernel ops: its inputs, then its top-1 choice.

Router inputs: the tokens in the matmul dtype and the router's logits from one read of the residual stream.
A RoM layer (shared routing) needs its fp32 input twice: cast to bf16 for the expert rows, and multiplied by
the router weight for the logits. Backward, the input's gradient is the sum of the rows' gradient (bf16) and
the logits' gradient through the router weight, widened to fp32. In torch those are a cast, a GEMM with 8
output columns and a copy forward, and a GEMM, an add and a widening copy backward; the Triton backend
(rom.kernels.triton_router) does each direction in one pass over the tokens:

    h = x.to(dtype),  logits = (h @ W.to(dtype)^T) in fp32            forward  (ops router_inputs)
    dx = (dh + dlogits @ W.to(dtype)) in x's dtype                    backward (op router_inputs_backward)
    dW = dlogits^T @ h (a torch GEMM on both backends)

    router_inputs(x, weight, dtype, backend) -> (h, logits)

Top-1 routing (op "route_top1"): softmax, selection of the top expert and its probability, and the mean
probability per expert for the load-balancing loss, one Triton pass forward and one backward instead of
about ten small torch kernels.

The references (the semantics) are in rom.kernels.reference.routing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rom.kernels.reference.routing import route_top1_reference, router_inputs_reference
from rom.kernels.registry import get_impl


class _RouterInputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, dtype: torch.dtype,  # type: ignore[override]
                backend: str) -> tuple[Tensor, Tensor]:
        weight_c = weight.to(dtype)
        h, logits = get_impl("router_inputs", backend, x.device)(x, weight_c)
        ctx.save_for_backward(h, weight_c)
        ctx.x_dtype, ctx.weight_dtype, ctx.backend = x.dtype, weight.dtype, backend
        return h, logits

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor | None, grad_logits: Tensor | None):  # type: ignore[override]
        h, weight_c = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            impl = get_impl("router_inputs_backward", ctx.backend, h.device)
            grad_x = impl(grad_h, grad_logits, weight_c, ctx.x_dtype, h)
        if ctx.needs_input_grad[1] and grad_logits is not None:
            grad_w = (grad_logits.to(h.dtype).t() @ h).to(ctx.weight_dtype)
        return grad_x, grad_w, None, None


def router_inputs(x: Tensor, weight: Tensor, dtype: torch.dtype, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Tokens x (T, d) in ``dtype`` and the logits x W^T (T, E) in fp32, W (E, d); see the module docstring."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"router_inputs: expected x (tokens, d) and weight (experts, d={x.shape[-1]}), "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if torch.jit.is_tracing():
        return router_inputs_reference(x, weight.to(dtype))
    return _RouterInputs.apply(x, weight, dtype, backend)


def route_top1(logits: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """Top-1 routing from fp32 logits; see ``route_top1_reference`` (Triton: rom.kernels.triton_router)."""
    if logits.dim() != 2:
        raise ValueError(f"route_top1: logits must be (tokens, experts), got {tuple(logits.shape)}")
    if torch.jit.is_tracing():
        return route_top1_reference(logits)
    return get_impl("route_top1", backend, logits.device)(logits)


__all__ = ["route_top1", "router_inputs"]
