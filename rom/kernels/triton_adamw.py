"""The "adamw_step" op in Triton: one pass over master, gradient, moments and working copy (semantics:
rom.kernels.adamw.adamw_step_reference).

Per element it reads the fp32 master and moments and the bf16 gradient, and writes the master, the moments
and the bf16 working copy: 2 + 12 bytes read, 12 + 2 written. The reference path would first widen the
gradient into a new fp32 tensor and cast the master back in a separate pass. Other layouts (tensors with
gaps, mismatched shapes) go to the reference.
"""

from __future__ import annotations

import torch

from rom.kernels.adamw import adamw_step_reference
from rom.kernels.triton_support import HAS_TRITON, cdiv, interpreting, tl, triton

_BLOCK = 2048
_NUM_WARPS = 8

if HAS_TRITON:

    @triton.jit
    def _adamw_step_kernel(master_ptr, grad_ptr, m_ptr, v_ptr, work_ptr, n, decay, one_minus_beta1, beta2,
                           one_minus_beta2, step_size, inv_sqrt_bc2, eps, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
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
        tl.store(work_ptr + offs, p.to(work_ptr.dtype.element_ty), mask=mask)


def adamw_step_triton(master: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                      working: torch.Tensor, lr: float, weight_decay: float, beta1: float, beta2: float, eps: float,
                      step: int) -> None:
    """As ``adamw_step_reference``, in one Triton pass for contiguous CUDA tensors of one shape (fp32 master
    and moments)."""
    if not HAS_TRITON:
        raise ImportError("rom.kernels.triton_adamw: triton is not installed; use backend='reference'")
    tensors = (master, grad, exp_avg, exp_avg_sq, working)
    on_device = master.device.type == "cuda" or interpreting()
    if (not on_device or any(not t.is_contiguous() or t.shape != master.shape for t in tensors)
            or any(t.dtype != torch.float32 for t in (master, exp_avg, exp_avg_sq)) or master.numel() == 0):
        adamw_step_reference(master, grad, exp_avg, exp_avg_sq, working, lr, weight_decay, beta1, beta2, eps, step)
        return
    n = master.numel()
    _adamw_step_kernel[(cdiv(n, _BLOCK),)](
        master, grad, exp_avg, exp_avg_sq, working, n, 1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2,
        lr / (1 - beta1**step), 1 / (1 - beta2**step) ** 0.5, eps, BLOCK=_BLOCK, num_warps=_NUM_WARPS)


__all__ = ["adamw_step_triton", "HAS_TRITON"]
