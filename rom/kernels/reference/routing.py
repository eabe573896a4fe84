"""References of the router's ops (public wrappers: rom.kernels.routing; Triton: rom.kernels.triton_router).

    router_inputs:           h = x.to(dtype),  logits = (h @ W.to(dtype)^T) in fp32
    router_inputs_backward:  dx = (dh + dlogits @ W.to(dtype)) in x's dtype, summed in fp32
    route_top1:              softmax, the top expert and its probability, the mean probability per expert
"""

from __future__ import annotations

import torch
from torch import Tensor


def router_inputs_reference(x: Tensor, weight_c: Tensor) -> tuple[Tensor, Tensor]:
    """x (T, d) any float dtype, weight_c (E, d) already in the matmul dtype -> (h, fp32 logits; fp64 in fp64)."""
    h = x.to(weight_c.dtype)
    return h, (h @ weight_c.t()).to(torch.promote_types(h.dtype, torch.float32))


def router_inputs_backward_reference(grad_h: Tensor | None, grad_logits: Tensor | None, weight_c: Tensor,
                                     x_dtype: torch.dtype, like: Tensor) -> Tensor:
    """dx = dh + dlogits @ weight_c, summed in fp32 (or x's wider dtype), in ``x_dtype`` (``like``: x's shape)."""
    acc = torch.promote_types(x_dtype, torch.float32)
    dx = torch.zeros(like.shape, dtype=acc, device=like.device)
    if grad_h is not None:
        dx += grad_h.to(acc)
    if grad_logits is not None:
        dx += grad_logits.to(weight_c.dtype).to(acc) @ weight_c.to(acc)
    return dx.to(x_dtype)


def route_top1_reference(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The "route_top1" op: softmax of fp32 logits (T, E) -> (top-1 probability (T, 1), its expert (T, 1)
    int64, mean probability per expert (E,), for the load-balancing loss); differentiable through torch."""
    probs = torch.softmax(logits, dim=-1)
    weights, indices = probs.max(dim=-1, keepdim=True)
    return weights, indices, probs.mean(0)


__all__ = ["route_top1_reference", "router_inputs_backward_reference", "router_inputs_reference"]
