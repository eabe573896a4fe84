"""The "adamw_step" op in Triton: every weight of the list updated in one launch (semantics:
rom.kernels.adamw.adamw_step_reference).

Per element one pass reads the fp32 master and moments and the gradient as it is (bf16, or fp32 where
gradient accumulation folded it), and writes the master, the moments and the bf16 working copy: 14 bytes read
and 14 written for a bf16 gradient. The reference would widen the gradient into a new tensor and cast the
master back in separate passes.

One launch for all weights, because a model has hundreds of them (a 48-layer RoM model: 192 projection
weights) and one launch each would leave the GPU waiting on the host. The weights' addresses go in a small
int64 table (cached while the tensors stay the same: a captured CUDA graph's gradients never move); the
programs walk a flat index over all blocks of all weights and find their weight by comparing against the
table of first blocks (one block of 2048 elements per program). Weights whose tensors the kernel cannot take (not contiguous, shapes differing) go to
the reference one by one.
"""

from __future__ import annotations

import torch

from rom.kernels.adamw import adamw_step_one
from rom.kernels.triton_support import HAS_TRITON, cdiv, interpreting, tl, triton

# one block per program: a loop over several blocks per program (fewer programs searching the table) ran the
# update at half the bandwidth on an H200 (its loads cannot move above the previous block's stores)
_BLOCK = 2048
_NUM_WARPS = 8
_MASTER_DTYPES = (torch.float32,)
_GRAD_DTYPES = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}

if HAS_TRITON:

    @triton.jit
    def _adamw_step_kernel(table_ptr, first_chunk_ptr, n_weights, decay, one_minus_beta1, beta2, one_minus_beta2,
                           step_size, inv_sqrt_bc2, eps, GRAD_KIND: tl.constexpr, N_POW2: tl.constexpr,
                           BLOCK: tl.constexpr):
        chunk = tl.program_id(0)  # the flat block index over all weights
        idx = tl.arange(0, N_POW2)
        firsts = tl.load(first_chunk_ptr + idx, mask=idx <= n_weights, other=2**30)
        w = tl.sum((firsts <= chunk).to(tl.int32), 0) - 1  # the weight this chunk belongs to
        if w >= n_weights:
            return
        n = tl.load(table_ptr + 5 * n_weights + w)
        # addresses read from the table carry no alignment the compiler can see: without the hints (the host
        # checks them) it would issue 2- and 4-byte accesses instead of 16-byte ones
        master_ptr = tl.multiple_of(tl.load(table_ptr + w).to(tl.pointer_type(tl.float32)), 16)
        if GRAD_KIND == 0:
            grad_ptr = tl.load(table_ptr + n_weights + w).to(tl.pointer_type(tl.bfloat16))
        elif GRAD_KIND == 1:
            grad_ptr = tl.load(table_ptr + n_weights + w).to(tl.pointer_type(tl.float16))
        else:
            grad_ptr = tl.load(table_ptr + n_weights + w).to(tl.pointer_type(tl.float32))
        grad_ptr = tl.multiple_of(grad_ptr, 16)
        m_ptr = tl.multiple_of(tl.load(table_ptr + 2 * n_weights + w).to(tl.pointer_type(tl.float32)), 16)
        v_ptr = tl.multiple_of(tl.load(table_ptr + 3 * n_weights + w).to(tl.pointer_type(tl.float32)), 16)
        work_ptr = tl.multiple_of(tl.load(table_ptr + 4 * n_weights + w).to(tl.pointer_type(tl.bfloat16)), 16)
        offs = (chunk - tl.load(first_chunk_ptr + w)).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(master_ptr + offs, mask=mask)
        g = tl.load(grad_ptr + offs, mask=mask).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask)
        v = tl.load(v_ptr + offs, mask=mask)
        p = p * decay
        m = m + one_minus_beta1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        p = p - step_size * (m / (tl.sqrt(v) * inv_sqrt_bc2 + eps))
        tl.store(master_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(work_ptr + offs, p.to(tl.bfloat16), mask=mask)

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = {}


def _table(tensors: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Device tables (addresses and sizes; first chunk of each weight) and the chunk count, cached by address."""
    key = tuple(t.data_ptr() for row in tensors for t in row) + tuple(row[0].numel() for row in tensors)
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    device = tensors[0][0].device
    sizes = [row[0].numel() for row in tensors]
    columns = list(zip(*tensors))  # master, grad, exp_avg, exp_avg_sq, working
    flat = [t.data_ptr() for col in columns for t in col] + sizes
    firsts, total = [], 0
    for n in sizes:
        firsts.append(total)
        total += cdiv(n, _BLOCK)
    firsts.append(total)
    table = torch.tensor(flat, dtype=torch.int64).to(device)
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
    by_kind: dict[int, list[tuple[torch.Tensor, ...]]] = {}
    for row in zip(masters, grads, exp_avgs, exp_avg_sqs, workings, strict=True):
        if _launchable(*row):
            by_kind.setdefault(_GRAD_DTYPES[row[1].dtype], []).append(row)
        else:
            adamw_step_one(*row, lr, weight_decay, beta1, beta2, eps, step)
    for kind, rows in by_kind.items():
        table, first, chunks = _table(rows)
        n = len(rows)
        _adamw_step_kernel[(chunks,)](
            table, first, n, 1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2, lr / (1 - beta1**step),
            1 / (1 - beta2**step) ** 0.5, eps, GRAD_KIND=kind, N_POW2=triton.next_power_of_2(n + 1), BLOCK=_BLOCK,
            num_warps=_NUM_WARPS)


__all__ = ["adamw_step_triton", "HAS_TRITON"]
