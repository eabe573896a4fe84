"""Weighted un-permutation of expert rows back to tokens, forward and backward, in one Triton pass each.

The out projection's expert rows (sorted by expert) return to token order weighted by the router
probabilities. In torch that is a gather, a broadcast multiply (which PyTorch runs unvectorised) and, in the
backward, a gather, a multiply, two fp32 casts of (tokens x d) tensors, a product and a sum for the weights'
gradient: several passes where the necessary traffic is one read of the rows and one write (docs/gpu_kernels.md
has the cost). Here every program owns a block of tokens and reads each of its rows once:

    forward:   out[t] = sum_j w[t, j] * rows[inverse_index[t * k + j]]        (w = 1 when weights is None)
    backward:  grad_rows[inverse_index[t * k + j]] = w[t, j] * grad[t]
               grad_w[t, j] = <rows[inverse_index[t * k + j]], grad[t]>       (fp32, one program per token block)

Products and sums in fp32, rounded once to the rows' dtype. Semantics: rom.kernels.reference.experts'
``combine_rows_reference`` / ``combine_rows_backward_reference``.
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_BLOCK_T = 32
_BLOCK_D = 128
_NUM_WARPS = 4

if HAS_TRITON:

    @triton.jit
    def _combine_fwd_kernel(rows_ptr, inv_ptr, w_ptr, out_ptr, n_tok, d, s_rows, s_out,
                            TOP_K: tl.constexpr, HAS_W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        m_t = offs_t < n_tok
        m = m_t[:, None] & (offs_d < d)[None, :]
        acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        for j in tl.static_range(TOP_K):
            row = tl.load(inv_ptr + offs_t * TOP_K + j, mask=m_t, other=0).to(tl.int64)
            v = tl.load(rows_ptr + row[:, None] * s_rows + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
            if HAS_W:
                v = v * tl.load(w_ptr + offs_t * TOP_K + j, mask=m_t, other=0.0).to(tl.float32)[:, None]
            acc += v
        tl.store(out_ptr + offs_t[:, None] * s_out + offs_d[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _combine_bwd_kernel(grad_ptr, rows_ptr, inv_ptr, w_ptr, grad_rows_ptr, grad_w_ptr, n_tok, d, s_grad,
                            s_rows, s_grad_rows, TOP_K: tl.constexpr, HAS_W: tl.constexpr, NEED_ROWS: tl.constexpr,
                            NEED_W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
        m_t = offs_t < n_tok
        for j in tl.static_range(TOP_K):
            row = tl.load(inv_ptr + offs_t * TOP_K + j, mask=m_t, other=0).to(tl.int64)
            if HAS_W:
                w = tl.load(w_ptr + offs_t * TOP_K + j, mask=m_t, other=0.0).to(tl.float32)
            else:
                w = tl.full((BLOCK_T,), 1.0, tl.float32)  # an exact no-op factor
            dot = tl.zeros((BLOCK_T,), dtype=tl.float32)
            for d0 in range(0, d, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                m = m_t[:, None] & (offs_d < d)[None, :]
                g = tl.load(grad_ptr + offs_t[:, None] * s_grad + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
                if NEED_ROWS:
                    tl.store(grad_rows_ptr + row[:, None] * s_grad_rows + offs_d[None, :],
                             (g * w[:, None]).to(grad_rows_ptr.dtype.element_ty), mask=m)
                if NEED_W:
                    v = tl.load(rows_ptr + row[:, None] * s_rows + offs_d[None, :], mask=m, other=0.0)
                    dot += tl.sum(v.to(tl.float32) * g, axis=1)
            if NEED_W:
                tl.store(grad_w_ptr + offs_t * TOP_K + j, dot, mask=m_t)


def _row_major(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def combine_rows_triton(rows: torch.Tensor, inverse_index: torch.Tensor, weights: torch.Tensor | None,
                        top_k: int) -> torch.Tensor:
    """(T*k, d) expert rows -> (T, d) in rows' dtype: each token's k rows summed, weighted by ``weights`` (T, k)."""
    check_launchable(rows, "combine_rows_triton")
    rows = _row_major(rows)
    n_tok, d = rows.shape[0] // top_k, rows.shape[1]
    out = torch.empty((n_tok, d), device=rows.device, dtype=rows.dtype)
    if out.numel() == 0:
        return out
    w = weights.contiguous() if weights is not None else rows  # a dummy pointer when HAS_W is off
    grid = (cdiv(n_tok, _BLOCK_T), cdiv(d, _BLOCK_D))
    _combine_fwd_kernel[grid](rows, inverse_index, w, out, n_tok, d, rows.stride(0), out.stride(0), TOP_K=top_k,
                              HAS_W=weights is not None, BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D, num_warps=_NUM_WARPS)
    return out


def combine_rows_backward_triton(grad: torch.Tensor, rows: torch.Tensor, inverse_index: torch.Tensor,
                                 weights: torch.Tensor | None, top_k: int, need_rows: bool,
                                 need_weights: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of combine_rows: (grad_rows (T*k, d) in rows' dtype or None, grad_weights (T, k) or None)."""
    check_launchable(grad, "combine_rows_backward_triton")
    need_weights = need_weights and weights is not None
    grad, rows = _row_major(grad), _row_major(rows)
    n_tok, d = grad.shape
    grad_rows = torch.empty((n_tok * top_k, d), device=grad.device, dtype=rows.dtype) if need_rows else None
    grad_w = torch.empty((n_tok, top_k), device=grad.device, dtype=torch.float32) if need_weights else None
    if n_tok == 0 or not (need_rows or need_weights):
        return grad_rows, (grad_w.to(weights.dtype) if grad_w is not None else None)
    w = weights.contiguous() if weights is not None else grad
    _combine_bwd_kernel[(cdiv(n_tok, _BLOCK_T),)](
        grad, rows, inverse_index, w, grad_rows if need_rows else grad, grad_w if need_weights else grad, n_tok, d,
        grad.stride(0), rows.stride(0), grad_rows.stride(0) if need_rows else 0, TOP_K=top_k,
        HAS_W=weights is not None, NEED_ROWS=need_rows, NEED_W=need_weights, BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D,
        num_warps=_NUM_WARPS)
    return grad_rows, (grad_w.to(weights.dtype) if grad_w is not None else None)


__all__ = ["combine_rows_triton", "combine_rows_backward_triton", "HAS_TRITON"]
