"""The router's kernels (Triton): semantics rom.kernels.reference.routing.

Router inputs, one pass each way:
    forward:   h = x.to(dtype) and logits = h @ W^T (fp32 accumulation) from one read of x
    backward:  dx = dh + dlogits @ W in fp32, one read of dh, one write of dx
Top-1 routing ("route_top1"), one pass each way: softmax rows, the top expert and its probability, per-block
column sums of the probabilities (their mean is the load-balancing loss's p_i); the backward recomputes the
softmax and applies its adjoint to the gradients of the chosen probability and of the mean.

W (E, d) is already in the matmul dtype; E is padded to a power of two >= 16 for tl.dot (masked, exact).
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_BLOCK_T = 64
_BLOCK_D = 128
_NUM_WARPS = 4

if HAS_TRITON:

    @triton.jit
    def _router_inputs_fwd_kernel(x_ptr, w_ptr, h_ptr, logits_ptr, n_tok, d, n_exp, s_x, s_h,
                                  IEEE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                                  BLOCK_E: tl.constexpr):
        offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_e = tl.arange(0, BLOCK_E)
        m_t, m_e = offs_t < n_tok, offs_e < n_exp
        acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
        for d0 in range(0, d, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            m_d = offs_d < d
            x = tl.load(x_ptr + offs_t[:, None] * s_x + offs_d[None, :], mask=m_t[:, None] & m_d[None, :], other=0.0)
            h = x.to(h_ptr.dtype.element_ty)
            tl.store(h_ptr + offs_t[:, None] * s_h + offs_d[None, :], h, mask=m_t[:, None] & m_d[None, :])
            w_t = tl.load(w_ptr + offs_e[None, :] * d + offs_d[:, None], mask=m_d[:, None] & m_e[None, :], other=0.0)
            if IEEE:  # fp32 operands: full precision, as torch's fp32 matmul (no TF32 by default)
                acc = tl.dot(h, w_t, acc, input_precision="ieee")
            else:
                acc = tl.dot(h, w_t, acc)
        tl.store(logits_ptr + offs_t[:, None] * n_exp + offs_e[None, :], acc, mask=m_t[:, None] & m_e[None, :])

    @triton.jit
    def _router_inputs_bwd_kernel(gh_ptr, gl_ptr, w_ptr, dx_ptr, n_tok, d, n_exp, s_gh, s_dx, HAS_GH: tl.constexpr,
                                  IEEE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                                  BLOCK_E: tl.constexpr):
        offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_e = tl.arange(0, BLOCK_E)
        m_t, m_e = offs_t < n_tok, offs_e < n_exp
        # the logits' gradient in the matmul dtype, as the reference's GEMM reads it
        gl = tl.load(gl_ptr + offs_t[:, None] * n_exp + offs_e[None, :], mask=m_t[:, None] & m_e[None, :], other=0.0)
        gl = gl.to(w_ptr.dtype.element_ty)
        for d0 in range(0, d, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            m_d = offs_d < d
            m = m_t[:, None] & m_d[None, :]
            w = tl.load(w_ptr + offs_e[:, None] * d + offs_d[None, :], mask=m_e[:, None] & m_d[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(gl, w, input_precision="ieee")
            else:
                acc = tl.dot(gl, w)
            if HAS_GH:
                acc += tl.load(gh_ptr + offs_t[:, None] * s_gh + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
            tl.store(dx_ptr + offs_t[:, None] * s_dx + offs_d[None, :], acc.to(dx_ptr.dtype.element_ty), mask=m)


def _block_e(n_exp: int, minimum: int = 16) -> int:
    """The experts' tile width: a power of two, at least 16 where tl.dot reads it."""
    return max(minimum, triton.next_power_of_2(n_exp))


def router_inputs_triton(x: torch.Tensor, weight_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, d), weight_c (E, d) in the matmul dtype -> (h = x in that dtype, fp32 logits (T, E))."""
    check_launchable(x, "router_inputs_triton")
    if x.stride(1) != 1:
        x = x.contiguous()
    weight_c = weight_c.contiguous()
    n_tok, d = x.shape
    n_exp = weight_c.shape[0]
    h = torch.empty((n_tok, d), device=x.device, dtype=weight_c.dtype)
    logits = torch.empty((n_tok, n_exp), device=x.device, dtype=torch.float32)
    if n_tok == 0:
        return h, logits
    _router_inputs_fwd_kernel[(cdiv(n_tok, _BLOCK_T),)](
        x, weight_c, h, logits, n_tok, d, n_exp, x.stride(0), h.stride(0), IEEE=weight_c.dtype == torch.float32,
        BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D,
        BLOCK_E=_block_e(n_exp), num_warps=_NUM_WARPS)
    return h, logits


def router_inputs_backward_triton(grad_h: torch.Tensor | None, grad_logits: torch.Tensor | None,
                                  weight_c: torch.Tensor, x_dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """dx = dh + dlogits @ weight_c (fp32 sums) in ``x_dtype``, shape of ``like``."""
    check_launchable(like, "router_inputs_backward_triton")
    n_tok, d = like.shape
    n_exp = weight_c.shape[0]
    dx = torch.empty((n_tok, d), device=like.device, dtype=x_dtype)
    if n_tok == 0:
        return dx
    if grad_logits is None:
        grad_logits = torch.zeros((n_tok, n_exp), device=like.device, dtype=torch.float32)
    grad_logits = grad_logits.contiguous()
    if grad_h is not None and grad_h.stride(1) != 1:
        grad_h = grad_h.contiguous()
    _router_inputs_bwd_kernel[(cdiv(n_tok, _BLOCK_T),)](
        grad_h if grad_h is not None else dx, grad_logits, weight_c.contiguous(), dx, n_tok, d, n_exp,
        grad_h.stride(0) if grad_h is not None else 0, dx.stride(0), HAS_GH=grad_h is not None,
        IEEE=weight_c.dtype == torch.float32, BLOCK_T=_BLOCK_T,
        BLOCK_D=_BLOCK_D, BLOCK_E=_block_e(n_exp), num_warps=_NUM_WARPS)
    return dx


# ------------------------------------------------------------------------------------ top-1 routing

_ROUTE_BLOCK_T = 128

if HAS_TRITON:

    @triton.jit
    def _softmax_rows(logits_ptr, n_tok, n_exp, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
        offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_e = tl.arange(0, BLOCK_E)
        m_t, m_e = offs_t < n_tok, offs_e < n_exp
        m = m_t[:, None] & m_e[None, :]
        x = tl.load(logits_ptr + offs_t[:, None] * n_exp + offs_e[None, :], mask=m, other=0.0)
        x = tl.where(m_e[None, :], x, float("-inf"))  # padded experts get probability 0; padded rows stay finite
        ex = tl.exp(x - tl.max(x, axis=1)[:, None])
        p = ex / tl.sum(ex, axis=1)[:, None]
        return offs_t, offs_e, m_t, m, p

    @triton.jit
    def _route_top1_fwd_kernel(logits_ptr, w_ptr, idx_ptr, part_ptr, n_tok, n_exp, BLOCK_T: tl.constexpr,
                               BLOCK_E: tl.constexpr):
        offs_t, offs_e, m_t, m, p = _softmax_rows(logits_ptr, n_tok, n_exp, BLOCK_T, BLOCK_E)
        tl.store(w_ptr + offs_t, tl.max(p, axis=1), mask=m_t)
        tl.store(idx_ptr + offs_t, tl.argmax(p, axis=1).to(tl.int64), mask=m_t)  # first maximum on ties
        tl.store(part_ptr + tl.program_id(0) * BLOCK_E + offs_e, tl.sum(tl.where(m, p, 0.0), axis=0))

    @triton.jit
    def _route_top1_bwd_kernel(logits_ptr, idx_ptr, dw_ptr, dmean_ptr, dlogits_ptr, n_tok, n_exp, inv_n,
                               HAS_DW: tl.constexpr, HAS_DMEAN: tl.constexpr, BLOCK_T: tl.constexpr,
                               BLOCK_E: tl.constexpr):
        offs_t, offs_e, m_t, m, p = _softmax_rows(logits_ptr, n_tok, n_exp, BLOCK_T, BLOCK_E)
        dp = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
        if HAS_DW:
            idx = tl.load(idx_ptr + offs_t, mask=m_t, other=-1)
            dw = tl.load(dw_ptr + offs_t, mask=m_t, other=0.0)
            dp += tl.where(offs_e[None, :] == idx[:, None], dw[:, None], 0.0)
        if HAS_DMEAN:
            dp += tl.load(dmean_ptr + offs_e, mask=offs_e < n_exp, other=0.0)[None, :] * inv_n
        dl = p * (dp - tl.sum(p * dp, axis=1)[:, None])  # the softmax's adjoint
        tl.store(dlogits_ptr + offs_t[:, None] * n_exp + offs_e[None, :], dl, mask=m)


class _RouteTop1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor):  # type: ignore[override]
        logits = logits.contiguous()
        n_tok, n_exp = logits.shape
        block_e = _block_e(n_exp, 2)
        n_blocks = max(1, cdiv(n_tok, _ROUTE_BLOCK_T))
        weights = torch.empty((n_tok, 1), device=logits.device, dtype=torch.float32)
        indices = torch.empty((n_tok, 1), device=logits.device, dtype=torch.int64)
        partial = torch.zeros((n_blocks, block_e), device=logits.device, dtype=torch.float32)
        if n_tok:
            _route_top1_fwd_kernel[(n_blocks,)](logits, weights, indices, partial, n_tok, n_exp,
                                                BLOCK_T=_ROUTE_BLOCK_T, BLOCK_E=block_e, num_warps=4)
        prob_mean = partial[:, :n_exp].sum(0) / max(1, n_tok)
        ctx.save_for_backward(logits, indices)
        ctx.mark_non_differentiable(indices)
        return weights, indices, prob_mean

    @staticmethod
    def backward(ctx, d_weights, _d_indices, d_mean):  # type: ignore[override]
        logits, indices = ctx.saved_tensors
        n_tok, n_exp = logits.shape
        d_logits = torch.empty_like(logits)
        if n_tok == 0:
            return d_logits
        dw = d_weights.contiguous() if d_weights is not None else logits
        dm = d_mean.contiguous() if d_mean is not None else logits
        _route_top1_bwd_kernel[(cdiv(n_tok, _ROUTE_BLOCK_T),)](
            logits, indices, dw, dm, d_logits, n_tok, n_exp, 1.0 / n_tok, HAS_DW=d_weights is not None,
            HAS_DMEAN=d_mean is not None, BLOCK_T=_ROUTE_BLOCK_T, BLOCK_E=_block_e(n_exp, 2),
            num_warps=4)
        return d_logits


def route_top1_triton(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 logits (T, E) -> (top-1 probability (T, 1), expert (T, 1) int64, mean probability per expert (E,)),
    softmax, selection and the column sums in one pass; the backward (through the probability and the mean)
    in one more."""
    check_launchable(logits, "route_top1_triton")
    if logits.dtype != torch.float32:
        raise ValueError(f"route_top1_triton: logits must be float32, got {logits.dtype}")
    return _RouteTop1.apply(logits)


__all__ = ["route_top1_triton", "router_inputs_triton", "router_inputs_backward_triton", "HAS_TRITON"]
