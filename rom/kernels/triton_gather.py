"""Expert rows <-> channels-first activations in one pass each (Triton), the RoM layer's un/permutation.

The expert GEMMs produce rows sorted by expert, (T*k, C); the conv and the scan want (batch, C, L). Both
kernels walk tiles of (tokens x channels) in token order, so each side of the copy is coalesced: the expert
rows along channels, the channels-first tensor along time. No atomics: every permuted row has exactly one
(token, slot), found through ``inverse_index`` (the permuted row of each flat (token, slot)).

    rows_to_channels:  out[b, c, l] = scale * sum_j src[inverse_index[t * k + j], c],   t = b * L + l
    channels_to_rows:  out[inverse_index[t * k + j], c] = scale * src[b, c, l]         for every slot j

They are each other's adjoint (the backward of one is the other); semantics: rom.kernels.reference.experts'
``rows_to_channels_reference`` / ``channels_to_rows_reference``.
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_BLOCK_L = 64
_BLOCK_C = 64
_NUM_WARPS = 4

if HAS_TRITON:

    @triton.jit
    def _tile(seq_len, n_ch, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
        # grid (batch, time blocks, channel blocks): this program's offsets, masks and token ids
        pid_b = tl.program_id(0).to(tl.int64)
        offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        m_l = offs_l < seq_len
        m = m_l[:, None] & (offs_c < n_ch)[None, :]
        return pid_b, offs_l, offs_c, m_l, m, pid_b * seq_len + offs_l

    @triton.jit
    def _rows_to_channels_kernel(src_ptr, inv_ptr, out_ptr, seq_len, n_ch, s_src_r, scale,
                                 TOP_K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_b, offs_l, offs_c, m_l, m, tok = _tile(seq_len, n_ch, BLOCK_L, BLOCK_C)
        acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
        for j in tl.static_range(TOP_K):
            row = tl.load(inv_ptr + tok * TOP_K + j, mask=m_l, other=0).to(tl.int64)
            acc += tl.load(src_ptr + row[:, None] * s_src_r + offs_c[None, :], mask=m, other=0.0).to(tl.float32)
        acc = acc * scale
        out = out_ptr + pid_b * n_ch * seq_len + offs_c[None, :] * seq_len + offs_l[:, None]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _channels_to_rows_kernel(src_ptr, inv_ptr, out_ptr, seq_len, n_ch, s_b, s_c, s_l, s_out_r, scale,
                                 TOP_K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_b, offs_l, offs_c, m_l, m, tok = _tile(seq_len, n_ch, BLOCK_L, BLOCK_C)
        v = tl.load(src_ptr + pid_b * s_b + offs_c[None, :] * s_c + offs_l[:, None] * s_l, mask=m, other=0.0)
        v = (v.to(tl.float32) * scale).to(out_ptr.dtype.element_ty)
        for j in tl.static_range(TOP_K):
            row = tl.load(inv_ptr + tok * TOP_K + j, mask=m_l, other=0).to(tl.int64)
            tl.store(out_ptr + row[:, None] * s_out_r + offs_c[None, :], v, mask=m)


def rows_to_channels_triton(src: torch.Tensor, inverse_index: torch.Tensor, top_k: int, batch: int,
                            seq_len: int, scale: float = 1.0) -> torch.Tensor:
    """(batch * seq_len * top_k, C) expert rows -> (batch, C, seq_len): sum over each token's slots, scaled."""
    check_launchable(src, "rows_to_channels_triton")
    if src.stride(1) != 1:
        src = src.contiguous()
    n_ch = src.shape[1]
    out = torch.empty((batch, n_ch, seq_len), device=src.device, dtype=src.dtype)
    if out.numel() == 0:
        return out
    grid = (batch, cdiv(seq_len, _BLOCK_L), cdiv(n_ch, _BLOCK_C))
    _rows_to_channels_kernel[grid](src, inverse_index, out, seq_len, n_ch, src.stride(0), float(scale),
                                   TOP_K=top_k, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C, num_warps=_NUM_WARPS)
    return out


def channels_to_rows_triton(src: torch.Tensor, inverse_index: torch.Tensor, top_k: int,
                            scale: float = 1.0) -> torch.Tensor:
    """(batch, C, seq_len) any strides -> (batch * seq_len * top_k, C) rows, each token's values in its slots' rows."""
    check_launchable(src, "channels_to_rows_triton")
    batch, n_ch, seq_len = src.shape
    out = torch.empty((batch * seq_len * top_k, n_ch), device=src.device, dtype=src.dtype)
    if out.numel() == 0:
        return out
    grid = (batch, cdiv(seq_len, _BLOCK_L), cdiv(n_ch, _BLOCK_C))
    _channels_to_rows_kernel[grid](src, inverse_index, out, seq_len, n_ch, *src.stride(), out.stride(0),
                                   float(scale), TOP_K=top_k, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
                                   num_warps=_NUM_WARPS)
    return out


__all__ = ["rows_to_channels_triton", "channels_to_rows_triton", "HAS_TRITON"]
