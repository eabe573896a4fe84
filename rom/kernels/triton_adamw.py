"""The "adamw_step" op in Triton: the weights of the list updated in few launches (semantics:
rom.kernels.reference.adamw.adamw_step_reference).

Per element one pass reads the fp32 master and moments and the gradient as it is (bf16, or fp32 where
gradient accumulation folded it), and writes the master, the moments and the bf16 working copy: 14 bytes read
and 14 written for a bf16 gradient. The reference would widen the gradient into a new tensor and cast the
master back in separate passes.

A model has hundreds of weights (a 48-layer RoM model: 192 projection weights), and one launch each leaves the
GPU waiting on the host for the small ones, so the weights under 2^20 elements share one launch per gradient
dtype; the large ones get a launch each, because the shared kernel moves their bytes markedly slower than a
kernel given the tensors as arguments (docs/gpu_kernels.md has the figures). Each
weight's five tensors go in a small int64 table as element offsets from the first weight's tensors, passed as
arguments (cached while the tensors stay the same: a captured CUDA graph's gradients never move); the programs
walk a flat index over all blocks of all weights (one block of 2048 elements each) and find their weight by
comparing against the table of first blocks. Weights whose tensors the kernels cannot take (not contiguous,
shapes differing, not 16-byte aligned) go to the reference one by one.
"""

from __future__ import annotations

import torch

from rom.kernels.reference.adamw import adamw_step_one
from rom.kernels.triton_support import HAS_TRITON, cdiv, interpreting, tl, triton

# one block per program (looping over several blocks per program, fewer programs searching the table, measured
# slower: docs/gpu_kernels.md)
_BLOCK = 2048
# weights of at least this many elements get a launch of their own (arguments as pointers, faster than through
# the table); their update takes longer on the GPU than the launch on the host
_OWN_LAUNCH = 1 << 20
_NUM_WARPS = 8
_GRAD_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

if HAS_TRITON:

    @triton.jit
    def _adamw_update(p, g, m, v, decay, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps):
        """One AdamW step on fp32 blocks (torch's order: decay, moments, bias-corrected update)."""
        p = p * decay
        m = m + one_minus_beta1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        p = p - step_size * (m / (tl.sqrt(v) * inv_sqrt_bc2 + eps))
        return p, m, v

    @triton.jit
    def _adamw_step_kernel(f32_base, grad_base, work_base, table_ptr, first_chunk_ptr, n_weights, decay,
                           one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps,
                           GRAD_ALIGN: tl.constexpr, N_POW2: tl.constexpr, BLOCK: tl.constexpr):
        chunk = tl.program_id(0)  # the flat block index over all weights
        idx = tl.arange(0, N_POW2)
        firsts = tl.load(first_chunk_ptr + idx, mask=idx <= n_weights, other=2**30)
        w = tl.sum((firsts <= chunk).to(tl.int32), 0) - 1  # the weight this chunk belongs to
        if w >= n_weights:
            return
        n = tl.load(table_ptr + 5 * n_weights + w)
        # each weight's tensors as element offsets from the base arguments (16-byte aligned, checked on the host;
        # the hints keep the accesses 16 bytes wide: addresses loaded as pointers ran at half the bandwidth)
        master_off = tl.multiple_of(tl.load(table_ptr + w), 4)
        grad_off = tl.multiple_of(tl.load(table_ptr + n_weights + w), GRAD_ALIGN)
        m_off = tl.multiple_of(tl.load(table_ptr + 2 * n_weights + w), 4)
        v_off = tl.multiple_of(tl.load(table_ptr + 3 * n_weights + w), 4)
        work_off = tl.multiple_of(tl.load(table_ptr + 4 * n_weights + w), 8)
        offs = (chunk - tl.load(first_chunk_ptr + w)).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(f32_base + master_off + offs, mask=mask)
        g = tl.load(grad_base + grad_off + offs, mask=mask).to(tl.float32)
        m = tl.load(f32_base + m_off + offs, mask=mask)
        v = tl.load(f32_base + v_off + offs, mask=mask)
        p, m, v = _adamw_update(p, g, m, v, decay, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_bc2,
                                eps)
        tl.store(f32_base + master_off + offs, p, mask=mask)
        tl.store(f32_base + m_off + offs, m, mask=mask)
        tl.store(f32_base + v_off + offs, v, mask=mask)
        tl.store(work_base + work_off + offs, p.to(work_base.dtype.element_ty), mask=mask)

    @triton.jit
    def _adamw_step_one_kernel(master_ptr, grad_ptr, m_ptr, v_ptr, work_ptr, n, decay, one_minus_beta1, beta2,
                               one_minus_beta2, step_size, inv_sqrt_bc2, eps, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(master_ptr + offs, mask=mask)
        g = tl.load(grad_ptr + offs, mask=mask).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask)
        v = tl.load(v_ptr + offs, mask=mask)
        p, m, v = _adamw_update(p, g, m, v, decay, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_bc2,
                                eps)
        tl.store(master_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(work_ptr + offs, p.to(work_ptr.dtype.element_ty), mask=mask)

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = {}


def _table(tensors: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Device tables (element offsets from the bases ``tensors[0][0]``, ``[0][1]``, ``[0][4]``, and sizes; the
    first chunk of each weight) and the chunk count, cached by address."""
    key = tuple(t.data_ptr() for row in tensors for t in row) + tuple(row[0].numel() for row in tensors)
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    first_row = tensors[0]
    bases = (first_row[0], first_row[1], first_row[0], first_row[0], first_row[4])  # master, grad, m, v, working
    columns = list(zip(*tensors))
    flat = [(t.data_ptr() - base.data_ptr()) // t.element_size() for col, base in zip(columns, bases) for t in col]
    sizes = [row[0].numel() for row in tensors]
    firsts, total = [], 0
    for n in sizes:
        firsts.append(total)
        total += cdiv(n, _BLOCK)
    firsts.append(total)
    device = first_row[0].device
    table = torch.tensor(flat + sizes, dtype=torch.int64).to(device)
    first = torch.tensor(firsts, dtype=torch.int32).to(device)
    if len(_TABLES) > 64:  # eager training allocates new gradients every step: keep the cache small
        _TABLES.clear()
    _TABLES[key] = (table, first, total)
    return table, first, total


def _launchable(master: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                work: torch.Tensor) -> bool:
    tensors = (master, grad, m, v, work)
    return (all(t.is_contiguous() and t.shape == master.shape for t in tensors) and master.numel() > 0
            and all(t.dtype == torch.float32 for t in (master, m, v)) and work.dtype == torch.bfloat16
            and grad.dtype in _GRAD_DTYPES and all(t.data_ptr() % 16 == 0 for t in tensors)
            and (master.device.type == "cuda" or interpreting()))


def adamw_step_triton(masters: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                      exp_avg_sqs: list[torch.Tensor], workings: list[torch.Tensor], lr: float, weight_decay: float,
                      beta1: float, beta2: float, eps: float, step: int) -> None:
    """As ``adamw_step_reference``: one launch per gradient dtype for the weights the kernel takes."""
    if not HAS_TRITON:
        raise ImportError("rom.kernels.triton_adamw: triton is not installed; use backend='reference'")
    by_kind: dict[torch.dtype, list[tuple[torch.Tensor, ...]]] = {}
    scalars = (1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2, lr / (1 - beta1**step),
               1 / (1 - beta2**step) ** 0.5, eps)
    for row in zip(masters, grads, exp_avgs, exp_avg_sqs, workings, strict=True):
        if not _launchable(*row):
            adamw_step_one(*row, lr, weight_decay, beta1, beta2, eps, step)
        elif row[0].numel() >= _OWN_LAUNCH:
            n = row[0].numel()
            _adamw_step_one_kernel[(cdiv(n, _BLOCK),)](*row, n, *scalars, BLOCK=_BLOCK, num_warps=_NUM_WARPS)
        else:
            by_kind.setdefault(row[1].dtype, []).append(row)
    for rows in by_kind.values():
        table, first, chunks = _table(rows)
        n = len(rows)
        master, grad, _, _, work = rows[0]
        _adamw_step_kernel[(chunks,)](
            master, grad, work, table, first, n, *scalars, GRAD_ALIGN=16 // grad.element_size(),
            N_POW2=triton.next_power_of_2(n + 1), BLOCK=_BLOCK, num_warps=_NUM_WARPS)

__all__ = ["adamw_step_triton", "HAS_TRITON"]
