"""Stable sort of token-slots by expert as a two-kernel counting sort (Triton): the "dispatch" op.

Expert ids are small integers, so the sort a RoM layer needs is a counting sort. torch's path (a 4-pass radix
sort, an arange, two scatters, a fill, a scatter-add histogram and a cumsum: about 20 small kernels per router;
docs/gpu_kernels.md has their cost) becomes two launches:

1. ``_expert_histogram_kernel``: every block of BLOCK_N slots counts its slots per expert (a one-hot sum).
2. ``_expert_scatter_kernel``: every block adds up the counts of the blocks before it and of all blocks (the
   experts' start offsets), ranks its slots within their expert by a cumulative one-hot sum (which keeps the
   original order: the sort is stable), and writes each slot's position both ways. Block 0 writes the
   tokens-per-expert histogram and the cumulative end offsets.

    slot_index[pos] = i,  inverse_index[i] = pos,  pos = start[e_i] + #{i' < i : e_i' = e_i}

Semantics: rom.kernels.reference.experts.expert_positions_reference. Ids must lie in [0, num_experts): on the GPU
they are not checked (make_dispatch checks them on CPU, where the check costs no synchronisation).
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, tl, triton

_ONE_HOT_ELEMENTS = 8192  # BLOCK_N * BLOCK_E: the (slots x experts) one-hot tile of one program
_BLOCK_B = 64  # blocks' counts summed per step
_NUM_WARPS = 4

if HAS_TRITON:

    @triton.jit
    def _one_hot(ids_ptr, n, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = offs < n
        e = tl.load(ids_ptr + offs, mask=m, other=-1).to(tl.int32)  # -1: masked slots count for no expert
        return offs, m, (e[:, None] == tl.arange(0, BLOCK_E)[None, :]).to(tl.int32)

    @triton.jit
    def _expert_histogram_kernel(ids_ptr, counts_ptr, n, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
        _, _, one_hot = _one_hot(ids_ptr, n, BLOCK_N, BLOCK_E)
        tl.store(counts_ptr + tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E), tl.sum(one_hot, axis=0))

    @triton.jit
    def _expert_scatter_kernel(ids_ptr, counts_ptr, slot_ptr, inv_ptr, tokens_per_expert_ptr, offsets_ptr, n,
                               n_experts, n_blocks, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                               BLOCK_B: tl.constexpr):
        pid = tl.program_id(0)
        offs_e = tl.arange(0, BLOCK_E)
        total = tl.zeros((BLOCK_E,), dtype=tl.int32)
        before = tl.zeros((BLOCK_E,), dtype=tl.int32)
        for b0 in range(0, n_blocks, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            c = tl.load(counts_ptr + offs_b[:, None] * BLOCK_E + offs_e[None, :], mask=(offs_b < n_blocks)[:, None],
                        other=0)
            total += tl.sum(c, axis=0)
            before += tl.sum(tl.where((offs_b < pid)[:, None], c, 0), axis=0)
        ends = tl.cumsum(total, axis=0)
        base = ends - total + before  # first position of this block's slots of each expert
        offs, m, one_hot = _one_hot(ids_ptr, n, BLOCK_N, BLOCK_E)
        rank = tl.cumsum(one_hot, axis=0) - one_hot  # earlier slots of the same expert in this block
        pos = tl.sum(one_hot * (rank + base[None, :]), axis=1).to(tl.int64)
        tl.store(slot_ptr + pos, offs, mask=m)
        tl.store(inv_ptr + offs, pos, mask=m)
        if pid == 0:
            m_e = offs_e < n_experts
            tl.store(tokens_per_expert_ptr + offs_e, total.to(tl.int64), mask=m_e)
            tl.store(offsets_ptr + offs_e, ends, mask=m_e)


def expert_positions_triton(flat_ids: torch.Tensor,
                            num_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n,) expert ids -> slot_index, inverse_index (n,) int64, tokens_per_expert (E,) int64, offsets (E,) int32."""
    check_launchable(flat_ids, "expert_positions_triton")
    flat_ids = flat_ids.contiguous()
    n, device = flat_ids.numel(), flat_ids.device
    block_e = max(2, triton.next_power_of_2(num_experts))
    block_n = max(16, _ONE_HOT_ELEMENTS // block_e)
    n_blocks = max(1, cdiv(n, block_n))
    slot_index = torch.empty(n, dtype=torch.int64, device=device)
    inverse_index = torch.empty(n, dtype=torch.int64, device=device)
    tokens_per_expert = torch.empty(num_experts, dtype=torch.int64, device=device)
    offsets = torch.empty(num_experts, dtype=torch.int32, device=device)
    counts = torch.empty((n_blocks, block_e), dtype=torch.int32, device=device)
    _expert_histogram_kernel[(n_blocks,)](flat_ids, counts, n, BLOCK_N=block_n, BLOCK_E=block_e,
                                          num_warps=_NUM_WARPS)
    _expert_scatter_kernel[(n_blocks,)](flat_ids, counts, slot_index, inverse_index, tokens_per_expert, offsets, n,
                                        num_experts, n_blocks, BLOCK_N=block_n, BLOCK_E=block_e, BLOCK_B=_BLOCK_B,
                                        num_warps=_NUM_WARPS)
    return slot_index, inverse_index, tokens_per_expert, offsets


__all__ = ["expert_positions_triton", "HAS_TRITON"]
