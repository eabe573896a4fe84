"""Mamba-1 selective scan in Triton: the autograd.Function and the entry point ``selective_scan_triton``.

Semantics are those of ``rom.kernels.reference.scan`` (docs/interfaces.md, "Kernels"):

    delta' = softplus(delta + delta_bias)           (bias / softplus optional)
    h_t    = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t       (state (d_inner, N), fp32)
    y_t    = C_t . h_t + D * u_t ;   y_t *= silu(z_t) if z is given

The stages, one module each (docs/gpu_kernels.md has the design, the measurements and why):

    scan_plan            block shapes and segments along time (pure Python)
    triton_scan_common   jit helpers shared by the kernels; input checks, summary buffers
    triton_scan_fwd      v2 forward: segment summaries, then the forward (states in registers, checkpoints)
    triton_scan_bwd      v2 backward: segment summaries, the backward from the checkpoints, two reductions
    triton_scan_v1       v1: chunked ``tl.associative_scan``, kept for comparison (``impl="v1"``)

v2 (default): one program per (batch, block of channels, segment); channels on the lanes, the N states of a
channel in registers; a sequential loop over time in chunks of 8 steps. The forward stores the fp32 state at
every chunk start; the backward recomputes each chunk's states from it and runs the adjoint recurrence
backwards.

Triton is optional: importing this module without triton works, and the kernels raise a clear ImportError.
"""

from __future__ import annotations

from typing import Any

import torch

from rom.kernels.scan_plan import V2_CHUNK
from rom.kernels.triton_scan_bwd import scan_backward_v2
from rom.kernels.triton_scan_common import HAS_TRITON, check_inputs
from rom.kernels.triton_scan_fwd import scan_forward_v2
from rom.kernels.triton_scan_v1 import scan_backward_v1, scan_forward_v1

DEFAULT_IMPL = "v2"


class SelectiveScanTriton(torch.autograd.Function):
    """autograd wrapper: forward saves the inputs and fp32 chunk-start states, backward recomputes."""

    @staticmethod
    def forward(ctx: Any, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, needs_grad: bool,
                impl: str, fwd_config=None, bwd_config=None):
        # needs_grad is decided by the caller: grad mode is always off inside forward
        if impl == "v2":
            out, ckpt, Bt, Ct = scan_forward_v2(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                store_ckpt=needs_grad, config=fwd_config)
            chunk = V2_CHUNK
        else:
            out, ckpt, chunk = scan_forward_v1(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                               store_ckpt=needs_grad, config=fwd_config)
            Bt = Ct = None
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt, Bt, Ct)
            ctx.delta_softplus = delta_softplus
            ctx.chunk = chunk
            ctx.impl = impl
            ctx.bwd_config = bwd_config
        return out

    @staticmethod
    def backward(ctx: Any, dout):
        u, delta, A, B, C, D, z, delta_bias, ckpt, Bt, Ct = ctx.saved_tensors
        if ctx.impl == "v2":
            # a time-strided delta (the dense layer passes F.linear(...).transpose(1, 2)) is copied contiguous
            # first: the backward kernel reads it much faster that way than the copy costs (docs/gpu_kernels.md)
            if delta.stride(-1) != 1:
                delta = delta.contiguous()
            grads = scan_backward_v2(dout, u, delta, A, Bt, Ct, B, C, D, z, delta_bias, ctx.delta_softplus, ckpt,
                                     config=ctx.bwd_config)
        else:
            grads = scan_backward_v1(dout, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ckpt, ctx.chunk,
                                     config=ctx.bwd_config)
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None, None, None


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                          delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                          impl: str | None = None, fwd_config: tuple[int, ...] | None = None,
                          bwd_config: tuple[int, ...] | None = None) -> torch.Tensor:
    """Selective scan on CUDA through Triton; same contract as the reference ``selective_scan``.

    u, delta, z: (batch, d_inner, L) fp32/bf16/fp16; A: (d_inner, N) real (negative); B, C: (batch, N, L);
    D, delta_bias: (d_inner,). Returns y (batch, d_inner, L) in u's dtype. State math is fp32.
    ``impl``: "v2" (default: sequential per channel, states in registers) or "v1" (chunked associative scan,
    kept for comparison). ``fwd_config`` / ``bwd_config`` override block shapes: v2 (BLOCK_D, num_warps) or
    (BLOCK_D, num_warps, segments), the last forcing the number of segments along time that ``plan_segments``
    would otherwise choose; v1 (CHUNK, BLOCK_D, num_warps), where the backward uses the forward's CHUNK.
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    impl = impl or DEFAULT_IMPL
    if impl not in ("v1", "v2"):
        raise ValueError(f"selective_scan_triton: impl must be 'v1' or 'v2', got {impl!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), needs_grad,
                                     impl, fwd_config, bwd_config)


__all__ = ["selective_scan_triton", "SelectiveScanTriton", "HAS_TRITON"]
