"""One AdamW update of an fp32 master weight from a low-precision gradient, written back to its working copy.

The update of ``train.master_weights`` (rom.train.master_weights): the model computes with bf16 working
weights, the optimizer keeps fp32 masters and their moments. Per element, in the order of torch's AdamW
(decoupled weight decay first, no amsgrad):

    p  = p * (1 - lr * wd)
    m  = m + (1 - beta1) * (g - m)
    v  = beta2 * v + (1 - beta2) * g^2
    p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    working = p rounded to working's dtype

``adamw_step_reference`` is the semantics, in torch ops (the gradient widened to the master's dtype first);
the Triton backend does it in one pass that reads the bf16 gradient as it is (rom.kernels.triton_adamw).
"""

from __future__ import annotations

from torch import Tensor


def adamw_step_reference(master: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, working: Tensor,
                         lr: float, weight_decay: float, beta1: float, beta2: float, eps: float,
                         step: int) -> None:
    """Update ``master``, ``exp_avg`` and ``exp_avg_sq`` in place for optimizer step ``step`` (1-based) and copy
    the new master into ``working``."""
    grad = grad.to(master.dtype)
    master.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
    master.addcdiv_(exp_avg, denom, value=-step_size)
    working.copy_(master)


__all__ = ["adamw_step_reference"]
