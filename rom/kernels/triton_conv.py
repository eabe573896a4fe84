"""Causal depthwise conv1d (+ optional SiLU) in Triton: forward one kernel, backward two.

Semantics are those of ``rom.kernels.reference.conv.causal_conv1d_reference`` (docs/interfaces.md, "Kernels"):

    y[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (W - 1) + k]),   x[t < 0] = 0

- forward: one program per (batch, block of channels, block of time); the W shifted reads of x hit L1;
  bias and SiLU are fused, so x is read once and y written once (cuDNN's conv1d writes L + W - 1 outputs
  and leaves the activation to a second kernel);
- backward, two passes over the same tiling: (1) g = d loss / d pre-activation in fp32 (the pre-activation
  recomputed from the W shifted reads of x, times SiLU's derivative; a second output gradient, ``dy_extra``,
  is added on load); (2) dx[t] = sum_j w[W-1-j] g[t+j] from W shifted reads of g, with dweight / dbias
  reduced over the tile's time steps in registers from the same reads and one aligned read of x, written as
  per-(batch, time block) fp32 partials that one torch sum adds up (deterministic; atomics on the few (d, W)
  addresses serialise). Two passes beat one kernel that recomputed the pre-activation at every t + j and one
  that shifted g in registers with ``tl.gather``, g's round trip through memory included;
- tiles wholly inside the sequence (and channel counts that fill the channel blocks) take a path without
  per-element bounds tests.

The timings behind these choices are in docs/gpu_kernels.md ("Measurements behind choices in the kernel code").

Whether this or cuDNN is used on CUDA is decided by benchmarks/gpu_layers.py (see docs/gpu_kernels.md).
"""

from __future__ import annotations

from typing import Any

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_ACTIVATIONS = (None, "silu", "swish")

if HAS_TRITON:

    @triton.jit
    def _load(ptr, mask, MASKED: tl.constexpr):
        """fp32 load; unmasked where the caller knows the whole tile is in bounds (no per-element index tests)."""
        if MASKED:
            return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        return tl.load(ptr).to(tl.float32)

    @triton.jit
    def _pre_activation(x_base, w_ptr, b_ptr, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d, s_w_k,
                        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                        MASKED: tl.constexpr):
        """bias + sum_k w[k] x[pos - (W - 1) + k] at positions ``pos`` (BLOCK_D, BLOCK_L), fp32: W shifted reads."""
        acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
        for k in tl.static_range(WIDTH):
            w = tl.load(w_ptr + offs_d * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
            src = pos - (WIDTH - 1) + k
            m = mask_d[:, None] & ((src >= 0) & (src < seq_len))[None, :]
            acc += w[:, None] * _load(x_base + src[None, :] * s_x_l, m, MASKED)
        return acc

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, n_channels, seq_len,
        s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_y_b, s_y_d, s_y_l,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, EVEN_D: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        t0 = tl.program_id(2) * BLOCK_L
        offs_t = t0 + tl.arange(0, BLOCK_L)
        mask_d = offs_d < n_channels
        x_base = x_ptr + pid_b * s_x_b + offs_d[:, None] * s_x_d
        if EVEN_D and (t0 >= WIDTH - 1) and (t0 + BLOCK_L <= seq_len):  # interior tile: no bounds tests
            acc = _pre_activation(x_base, w_ptr, b_ptr, offs_d, mask_d, offs_t, seq_len, s_x_l, s_w_d, s_w_k, WIDTH,
                                  HAS_BIAS, BLOCK_D, BLOCK_L, False)
        else:
            acc = _pre_activation(x_base, w_ptr, b_ptr, offs_d, mask_d, offs_t, seq_len, s_x_l, s_w_d, s_w_k, WIDTH,
                                  HAS_BIAS, BLOCK_D, BLOCK_L, True)
        if SILU:
            acc = acc * tl.sigmoid(acc)
        m_out = mask_d[:, None] & (offs_t < seq_len)[None, :]
        tl.store(y_ptr + pid_b * s_y_b + offs_d[:, None] * s_y_d + offs_t[None, :] * s_y_l,
                 acc.to(y_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def _pre_activation_grad(x_base, w_ptr, b_ptr, dy_base, dy2_base, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d,
                             s_w_k, s_dy_l, s_dy2_l, WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr,
                             SILU: tl.constexpr, HAS_DY2: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_L: tl.constexpr, MASKED: tl.constexpr):
        """d loss / d pre-activation at positions ``pos`` (BLOCK_D, len(pos)) in fp32; 0 where pos >= seq_len."""
        m_pos = mask_d[:, None] & (pos < seq_len)[None, :]
        g = _load(dy_base + pos[None, :] * s_dy_l, m_pos, MASKED)
        if HAS_DY2:  # the conv output's second gradient (rom.kernels.inner_path: the scan's du), added here
            g += _load(dy2_base + pos[None, :] * s_dy2_l, m_pos, MASKED)
        if SILU:  # recompute the pre-activation
            s = _pre_activation(x_base, w_ptr, b_ptr, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d, s_w_k, WIDTH,
                                HAS_BIAS, BLOCK_D, BLOCK_L, MASKED)
            sig = tl.sigmoid(s)
            g = g * sig * (1.0 + s * (1.0 - sig))
        return g

    @triton.jit
    def _conv_bwd_g_kernel(
        x_ptr, w_ptr, b_ptr, dy_ptr, dy2_ptr, g_ptr, n_channels, seq_len,
        s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_dy_b, s_dy_d, s_dy_l, s_dy2_b, s_dy2_d, s_dy2_l,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_DY2: tl.constexpr,
        EVEN_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        # pass 1: g = d loss / d pre-activation, fp32, contiguous (batch, d, L)
        pid_b = tl.program_id(0).to(tl.int64)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < n_channels
        t0 = tl.program_id(2) * BLOCK_L
        pos = t0 + tl.arange(0, BLOCK_L)
        x_base = x_ptr + pid_b * s_x_b + offs_d[:, None] * s_x_d
        dy_base = dy_ptr + pid_b * s_dy_b + offs_d[:, None] * s_dy_d
        dy2_base = dy2_ptr + pid_b * s_dy2_b + offs_d[:, None] * s_dy2_d
        if EVEN_D and (t0 >= WIDTH - 1) and (t0 + BLOCK_L <= seq_len):  # interior tile: no bounds tests
            g = _pre_activation_grad(x_base, w_ptr, b_ptr, dy_base, dy2_base, offs_d, mask_d, pos, seq_len, s_x_l,
                                     s_w_d, s_w_k, s_dy_l, s_dy2_l, WIDTH, HAS_BIAS, SILU, HAS_DY2, BLOCK_D,
                                     BLOCK_L, False)
        else:
            g = _pre_activation_grad(x_base, w_ptr, b_ptr, dy_base, dy2_base, offs_d, mask_d, pos, seq_len, s_x_l,
                                     s_w_d, s_w_k, s_dy_l, s_dy2_l, WIDTH, HAS_BIAS, SILU, HAS_DY2, BLOCK_D,
                                     BLOCK_L, True)
        m_out = mask_d[:, None] & (pos < seq_len)[None, :]
        tl.store(g_ptr + (pid_b * n_channels + offs_d[:, None]) * seq_len + pos[None, :], g, mask=m_out)

    @triton.jit
    def _conv_bwd_dx_tile(g_base, x_base, w_ptr, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d, s_w_k,
                          WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, MASKED: tl.constexpr,
                          dw_ptr, db_ptr, part, n_channels, HAS_BIAS: tl.constexpr):
        """dx over the tile, and its dw / db partials: dx[t] = sum_j w[W-1-j] g[t+j], dw[W-1-j] = sum_t g[t+j] x[t]."""
        x_t = _load(x_base + pos[None, :] * s_x_l, mask_d[:, None] & (pos < seq_len)[None, :], MASKED)
        dx = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        for j in tl.static_range(WIDTH):
            w_j = tl.load(w_ptr + offs_d * s_w_d + (WIDTH - 1 - j) * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
            g_j = _load(g_base + (pos + j)[None, :], mask_d[:, None] & (pos + j < seq_len)[None, :], MASKED)
            dx += w_j[:, None] * g_j
            tl.store(dw_ptr + (part * n_channels + offs_d) * WIDTH + (WIDTH - 1 - j), tl.sum(g_j * x_t, axis=1),
                     mask=mask_d)
            if j == 0:
                if HAS_BIAS:
                    tl.store(db_ptr + part * n_channels + offs_d, tl.sum(g_j, axis=1), mask=mask_d)
        return dx

    @triton.jit
    def _conv_bwd_dx_kernel(g_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr, db_ptr, n_channels, seq_len,
                            s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_dx_b,
                            WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_D: tl.constexpr,
                            BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
        # pass 2: dx and the fp32 dw (parts, d, WIDTH) / db (parts, d) partials, one part per (batch, time block),
        # summed outside (deterministic, no atomics). dx: (batch, d, L) with batch stride s_dx_b, e.g. a half of a
        # wider gradient buffer (rom.kernels.inner_path), written as a per-program scalar shift of the contiguous
        # offsets.
        pid_b = tl.program_id(0).to(tl.int64)
        part = pid_b * tl.num_programs(2) + tl.program_id(2)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < n_channels
        t0 = tl.program_id(2) * BLOCK_L
        pos = t0 + tl.arange(0, BLOCK_L)
        g_base = g_ptr + (pid_b * n_channels + offs_d[:, None]) * seq_len
        x_base = x_ptr + pid_b * s_x_b + offs_d[:, None] * s_x_d
        if EVEN_D and (t0 + BLOCK_L + WIDTH - 1 <= seq_len):  # interior tile: no bounds tests
            dx = _conv_bwd_dx_tile(g_base, x_base, w_ptr, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d, s_w_k, WIDTH,
                                   BLOCK_D, BLOCK_L, False, dw_ptr, db_ptr, part, n_channels, HAS_BIAS)
        else:
            dx = _conv_bwd_dx_tile(g_base, x_base, w_ptr, offs_d, mask_d, pos, seq_len, s_x_l, s_w_d, s_w_k, WIDTH,
                                   BLOCK_D, BLOCK_L, True, dw_ptr, db_ptr, part, n_channels, HAS_BIAS)
        m_out = mask_d[:, None] & (pos < seq_len)[None, :]
        dx_off = (pid_b * n_channels + offs_d[:, None]) * seq_len + pos[None, :]
        tl.store(dx_ptr + pid_b * (s_dx_b - n_channels * seq_len) + dx_off, dx.to(dx_ptr.dtype.element_ty), mask=m_out)


_BLOCK_D = 16
_BLOCK_L = 128
_NUM_WARPS = 4
# the backward's tiles: 8 channels x 128 steps, the best of nine shapes measured (docs/gpu_kernels.md)
_BWD_BLOCK_D = 8


def _launch_grid(batch: int, d: int, seq_len: int) -> tuple[int, int, int]:
    return (batch, cdiv(d, _BLOCK_D), cdiv(seq_len, _BLOCK_L))


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """Launch the forward kernel: x (batch, d, L) any strides, weight (d, width) -> y (batch, d, L) contiguous."""
    batch, d, seq_len = x.shape
    y = torch.empty((batch, d, seq_len), device=x.device, dtype=x.dtype)
    _conv_fwd_kernel[_launch_grid(batch, d, seq_len)](
        x, weight, bias if bias is not None else weight, y, d, seq_len,
        *x.stride(), *weight.stride(), *y.stride(),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu, EVEN_D=d % _BLOCK_D == 0,
        BLOCK_D=_BLOCK_D, BLOCK_L=_BLOCK_L, num_warps=_NUM_WARPS,
    )
    return y


def conv_backward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dy: torch.Tensor, silu: bool,
                  dx_out: torch.Tensor | None = None, dy_extra: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernels: (dx, dweight, dbias) for y = conv_forward(x, weight, bias, silu) and the
    output gradient dy (+ ``dy_extra``, a second gradient of y of the same shape, added inside the kernel).

    dx is a new contiguous (batch, d, L) tensor, or written into ``dx_out`` ((batch, d, L) with strides (any, L, 1),
    e.g. a half of a wider gradient buffer) and returned.
    """
    batch, d, seq_len = x.shape
    width = weight.shape[1]
    dx = dx_out if dx_out is not None else torch.empty((batch, d, seq_len), device=x.device, dtype=x.dtype)
    if dx.shape != x.shape or dx.stride()[1:] != (seq_len, 1):
        raise ValueError(f"conv_backward: dx_out must be {tuple(x.shape)} with strides (any, {seq_len}, 1), got "
                         f"{tuple(dx.shape)} strides {dx.stride()}")
    if dy_extra is not None and dy_extra.shape != dy.shape:
        raise ValueError(f"conv_backward: dy_extra must be {tuple(dy.shape)}, got {tuple(dy_extra.shape)}")
    dy2 = dy_extra if dy_extra is not None else dy
    grid = (batch, cdiv(d, _BWD_BLOCK_D), cdiv(seq_len, _BLOCK_L))
    tiling = dict(EVEN_D=d % _BWD_BLOCK_D == 0, BLOCK_D=_BWD_BLOCK_D, BLOCK_L=_BLOCK_L, num_warps=_NUM_WARPS)
    g = torch.empty((batch, d, seq_len), device=x.device, dtype=torch.float32)
    _conv_bwd_g_kernel[grid](
        x, weight, bias if bias is not None else weight, dy, dy2, g, d, seq_len,
        *x.stride(), *weight.stride(), *dy.stride(), *dy2.stride(),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_DY2=dy_extra is not None, **tiling,
    )
    dw = torch.empty((batch * grid[2], d, width), device=x.device, dtype=torch.float32)
    db = torch.empty((batch * grid[2], d), device=x.device, dtype=torch.float32)
    _conv_bwd_dx_kernel[grid](g, x, weight, dx, dw, db, d, seq_len, *x.stride(), *weight.stride(), dx.stride(0),
                              WIDTH=width, HAS_BIAS=bias is not None, **tiling)
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
