"""Causal depthwise conv1d (+ optional SiLU) in Triton, forward and backward, one kernel each.

Semantics are those of ``rom.kernels.conv_reference.causal_conv1d`` (docs/interfaces.md, "Kernels"):

    y[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (W - 1) + k]),   x[t < 0] = 0

- forward: one program per (batch, block of channels, block of time); the W shifted reads of x hit L1;
  bias and SiLU are fused, so x is read once and y written once (cuDNN's conv1d writes L + W - 1 outputs
  and leaves the activation to a second kernel);
- backward: the same tiling; the program recomputes the pre-activation at t .. t + W - 1 (the window that
  dx[t] needs), so dx, dweight and dbias come out of one pass over x and dy; dweight / dbias are reduced
  over the tile's time steps in registers and written as per-(batch, time block) fp32 partials that one
  torch sum adds up (deterministic; atomics on the few (d, W) addresses serialised badly: 0.8-1.0 ms).

Whether this or cuDNN is used on CUDA is decided by benchmarks/gpu_layers.py (see docs/gpu_kernels.md).
"""

from __future__ import annotations

from typing import Any

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_ACTIVATIONS = (None, "silu", "swish")

if HAS_TRITON:

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, n_channels, seq_len,
        s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_y_b, s_y_d, s_y_l,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_t = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_d = offs_d < n_channels
        x_base = x_ptr + pid_b * s_x_b + offs_d[:, None] * s_x_d
        acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
        for k in tl.static_range(WIDTH):
            w = tl.load(w_ptr + offs_d * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
            src = offs_t - (WIDTH - 1) + k
            m = mask_d[:, None] & ((src >= 0) & (src < seq_len))[None, :]
            acc += w[:, None] * tl.load(x_base + src[None, :] * s_x_l, mask=m, other=0.0).to(tl.float32)
        if SILU:
            acc = acc * tl.sigmoid(acc)
        m_out = mask_d[:, None] & (offs_t < seq_len)[None, :]
        tl.store(y_ptr + pid_b * s_y_b + offs_d[:, None] * s_y_d + offs_t[None, :] * s_y_l,
                 acc.to(y_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def _conv_bwd_kernel(
        x_ptr, w_ptr, b_ptr, dy_ptr, dx_ptr, dw_ptr, db_ptr, n_channels, seq_len,
        s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_dy_b, s_dy_d, s_dy_l, s_dx_b,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        # dx: (batch, d, L) with batch stride s_dx_b, e.g. a half of a wider gradient buffer (rom.kernels.inner_path),
        # written as a per-program scalar shift of the contiguous offsets (H200, layer shape: 0.514 ms against
        # 0.506 for the contiguous-only kernel; general strides 0.521 against 0.510); dw (parts, d, WIDTH) and db
        # (parts, d) are fp32 per-program partials, one part per (batch, time block), summed outside (deterministic,
        # no atomics).
        pid_b = tl.program_id(0).to(tl.int64)
        part = pid_b * tl.num_programs(2) + tl.program_id(2)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_t = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_d = offs_d < n_channels
        x_base = x_ptr + pid_b * s_x_b + offs_d[:, None] * s_x_d
        dy_base = dy_ptr + pid_b * s_dy_b + offs_d[:, None] * s_dy_d
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        dx = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        # j: output position t + j whose window contains x[t]; weight index of x[t] there is WIDTH - 1 - j
        for j in tl.static_range(WIDTH):
            tj = offs_t + j
            mj = mask_d[:, None] & (tj < seq_len)[None, :]
            g = tl.load(dy_base + tj[None, :] * s_dy_l, mask=mj, other=0.0).to(tl.float32)
            if SILU:  # recompute the pre-activation at t + j
                s = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                if HAS_BIAS:
                    s += bias[:, None]
                for k in tl.static_range(WIDTH):
                    wk = tl.load(w_ptr + offs_d * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
                    src = tj - (WIDTH - 1) + k
                    m = mask_d[:, None] & ((src >= 0) & (src < seq_len))[None, :]
                    s += wk[:, None] * tl.load(x_base + src[None, :] * s_x_l, mask=m, other=0.0).to(tl.float32)
                sig = tl.sigmoid(s)
                g = g * sig * (1.0 + s * (1.0 - sig))
            w_j = tl.load(w_ptr + offs_d * s_w_d + (WIDTH - 1 - j) * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
            dx += w_j[:, None] * g
            if j == 0:  # g is now d(pre-activation) at the tile's own positions: reduce dw, db over time
                if HAS_BIAS:
                    tl.store(db_ptr + part * n_channels + offs_d, tl.sum(g, axis=1), mask=mask_d)
                for k in tl.static_range(WIDTH):
                    src = offs_t - (WIDTH - 1) + k
                    m = mask_d[:, None] & ((src >= 0) & (src < seq_len))[None, :]
                    xk = tl.load(x_base + src[None, :] * s_x_l, mask=m, other=0.0).to(tl.float32)
                    tl.store(dw_ptr + (part * n_channels + offs_d) * WIDTH + k, tl.sum(g * xk, axis=1), mask=mask_d)
        m_out = mask_d[:, None] & (offs_t < seq_len)[None, :]
        dx_off = (pid_b * n_channels + offs_d[:, None]) * seq_len + offs_t[None, :]
        tl.store(dx_ptr + pid_b * (s_dx_b - n_channels * seq_len) + dx_off, dx.to(dx_ptr.dtype.element_ty), mask=m_out)


_BLOCK_D = 16
_BLOCK_L = 128
_NUM_WARPS = 4


def _launch_grid(batch: int, d: int, seq_len: int) -> tuple[int, int, int]:
    return (batch, cdiv(d, _BLOCK_D), cdiv(seq_len, _BLOCK_L))


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """Launch the forward kernel: x (batch, d, L) any strides, weight (d, width) -> y (batch, d, L) contiguous."""
    batch, d, seq_len = x.shape
    y = torch.empty((batch, d, seq_len), device=x.device, dtype=x.dtype)
    _conv_fwd_kernel[_launch_grid(batch, d, seq_len)](
        x, weight, bias if bias is not None else weight, y, d, seq_len,
        *x.stride(), *weight.stride(), *y.stride(),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu,
        BLOCK_D=_BLOCK_D, BLOCK_L=_BLOCK_L, num_warps=_NUM_WARPS,
    )
    return y


def conv_backward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dy: torch.Tensor, silu: bool,
                  dx_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernel: (dx, dweight, dbias) for y = conv_forward(x, weight, bias, silu).

    dx is a new contiguous (batch, d, L) tensor, or written into ``dx_out`` ((batch, d, L) with strides (any, L, 1),
    e.g. a half of a wider gradient buffer) and returned.
    """
    batch, d, seq_len = x.shape
    width = weight.shape[1]
    dx = dx_out if dx_out is not None else torch.empty((batch, d, seq_len), device=x.device, dtype=x.dtype)
    if dx.shape != x.shape or dx.stride()[1:] != (seq_len, 1):
        raise ValueError(f"conv_backward: dx_out must be {tuple(x.shape)} with strides (any, {seq_len}, 1), got "
                         f"{tuple(dx.shape)} strides {dx.stride()}")
    grid = _launch_grid(batch, d, seq_len)
    dw = torch.empty((batch * grid[2], d, width), device=x.device, dtype=torch.float32)
    db = torch.empty((batch * grid[2], d), device=x.device, dtype=torch.float32)
    _conv_bwd_kernel[grid](
        x, weight, bias if bias is not None else weight, dy, dx, dw, db, d, seq_len,
        *x.stride(), *weight.stride(), *dy.stride(), dx.stride(0),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu,
        BLOCK_D=_BLOCK_D, BLOCK_L=_BLOCK_L, num_warps=_NUM_WARPS,
    )
    return dx, dw.sum(0).to(weight.dtype), (db.sum(0).to(bias.dtype) if bias is not None else None)


class CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, silu: bool):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return conv_forward(x, weight, bias, silu)

    @staticmethod
    def backward(ctx: Any, dy):
        x, weight, bias = ctx.saved_tensors
        dx, dw, db = conv_backward(x, weight, bias, dy, ctx.silu)
        return dx, dw, db, None


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         activation: str | None = "silu") -> torch.Tensor:
    """Causal depthwise conv over time on CUDA; x (batch, d, L), weight (d, width), bias (d,) -> (batch, d, L)."""
    check_launchable(x, "causal_conv1d_triton")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"causal_conv1d_triton: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d_triton: expected x (batch, d, L) and weight (d, width), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f"causal_conv1d_triton: bias must be (d={x.shape[1]},), got {tuple(bias.shape)}")
    return CausalConv1dTriton.apply(x, weight, bias, activation is not None)


__all__ = ["causal_conv1d_triton", "CausalConv1dTriton", "conv_forward", "conv_backward", "HAS_TRITON"]
