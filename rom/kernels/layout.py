"""Projections between the token-major and channels-first layouts without transpose copies.

The scan and the conv work on channels-first tensors (batch, d, L) whose time axis is contiguous; the
residual stream and the expert rows are token-major (tokens, d). A plain ``F.linear`` on a transposed view
and ``.transpose(1, 2).contiguous()`` afterwards cost one uncoalesced copy per tensor and direction (seven
per dense layer step; docs/gpu_kernels.md has the cost). ``linear_channels`` instead writes the
layout the next op wants straight from a batched GEMM (cuBLAS reads either operand transposed for free) and
its backward returns every gradient in the layout its input arrived in:

    y[b] = W @ x[b] (+ bias)     x: (batch, d_in, L) channels-first, or a ``.transpose(1, 2)`` view of a
                                 token-major (batch, L, d_in) tensor; W: (d_out, d_in)
    out_tokens=False -> (batch, d_out, L) contiguous;  out_tokens=True -> (batch, L, d_out) contiguous

Under autocast the operands are cast to the autocast dtype once in the forward (as ``F.linear`` would) and
the casts are kept for the backward; gradients come back in the dtypes of the inputs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from rom.kernels.registry import get_impl


def autocast_dtype(t: Tensor) -> torch.dtype:
    """The dtype a matmul on ``t`` computes in: the autocast dtype where autocast is on, else t's dtype."""
    device_type = t.device.type
    if t.is_floating_point() and device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return t.dtype


def _no_autocast(t: Tensor) -> contextlib.AbstractContextManager:
    """The operands are cast already: keep autocast from re-deciding (it exists for cpu and cuda only)."""
    if t.device.type in ("cpu", "cuda"):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def _bmm_ready(t: Tensor) -> Tensor:
    """bmm reads a matrix with either of its last two strides 1; anything else is copied once."""
    if t.stride(-1) == 1 or t.stride(-2) == 1:
        return t
    return t.contiguous()


class _LinearChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, out_tokens: bool,
                backend: str) -> Tensor:
        dtype = autocast_dtype(x)
        xc, wc = _bmm_ready(x.to(dtype)), weight.to(dtype)
        batch = x.shape[0]
        with _no_autocast(x):
            if out_tokens:  # (b, L, d_in) @ (d_in, d_out) per batch
                out = torch.bmm(xc.transpose(1, 2), wc.t().expand(batch, -1, -1))
            else:  # (d_out, d_in) @ (d_in, L) per batch
                out = torch.bmm(wc.expand(batch, -1, -1), xc)
            if bias is not None:
                out = out + (bias.to(dtype) if out_tokens else bias.to(dtype)[:, None])
        ctx.save_for_backward(xc, wc)
        ctx.out_tokens, ctx.backend = out_tokens, backend
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        xc, wc = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        grad = _bmm_ready(grad.to(wc.dtype))
        g_cf = grad.transpose(1, 2) if ctx.out_tokens else grad  # (b, d_out, L) view
        batch = grad.shape[0]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if xc.stride(-1) == 1:  # channels-first input: dx = W^T @ g, (b, d_in, L) contiguous
                grad_x = torch.bmm(wc.t().expand(batch, -1, -1), g_cf)
            else:  # token-major input (a transposed view): dx^T = g^T @ W, (b, L, d_in) contiguous
                grad_x = torch.bmm(g_cf.transpose(1, 2), wc.expand(batch, -1, -1)).transpose(1, 2)
            # the "upcast" op: torch's own bf16 -> fp32 copy is its slow generic converting kernel
            grad_x = get_impl("upcast", ctx.backend, grad_x.device)(grad_x, x_dtype)
        if ctx.needs_input_grad[1]:
            # per-batch partial products, summed in fp32 (one (d_out, d_in) GEMM over all tokens would need
            # the channels-first gradient regrouped by channel first: a copy of the activation)
            acc = torch.promote_types(wc.dtype, torch.float32)
            grad_w = torch.bmm(g_cf, xc.transpose(1, 2)).sum(0, dtype=acc).to(w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g_cf.sum((0, 2), dtype=torch.promote_types(wc.dtype, torch.float32)).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None


def linear_channels(x: Tensor, weight: Tensor, bias: Tensor | None = None, out_tokens: bool = False,
                    backend: str = "auto") -> Tensor:
    """W @ x per batch for channels-first x (batch, d_in, L); see the module docstring for the layouts."""
    if x.dim() != 3 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_channels: expected x (batch, d_in, L) and weight (d_out, d_in={x.shape[1]}), "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear_channels: bias must be (d_out={weight.shape[0]},), got {tuple(bias.shape)}")
    return _LinearChannels.apply(x, weight, bias, bool(out_tokens), backend)


__all__ = ["autocast_dtype", "linear_channels"]
