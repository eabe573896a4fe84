"""AdamW updates of fp32 master weights from low-precision gradients, written back to their working copies.

The update of ``train.master_weights`` (rom.train.master_weights): the model computes with bf16 working
weights, the optimizer keeps fp32 masters and their moments. Per element, in the order of torch's AdamW
(decoupled weight decay first, no amsgrad), for optimizer step t (1-based):

    p  = p * (1 - lr * wd)
    m  = m + (1 - beta1) * (g - m)
    v  = beta2 * v + (1 - beta2) * g^2
    p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    working = p rounded to working's dtype

The "adamw_step" op takes lists of tensors (one entry per weight, all sharing the hyper-parameters and t):
``adamw_step_reference`` is the semantics, one weight at a time in torch ops (the gradient widened to the
master's dtype first); the Triton backend updates the weights in few launches that read the bf16 gradients as
they are (rom.kernels.triton_adamw).
"""

from __future__ import annotations

from torch import Tensor


def adamw_step_one(master: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, working: Tensor,
                   lr: float, weight_decay: float, beta1: float, beta2: float, eps: float, step: int) -> None:
    """Update ``master``, ``exp_avg`` and ``exp_avg_sq`` of one weight in place and copy the master into
    ``working``."""
    grad = grad.to(master.dtype)
    master.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
    master.addcdiv_(exp_avg, denom, value=-step_size)
    working.copy_(master)


def adamw_step_reference(masters: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                         exp_avg_sqs: list[Tensor], workings: list[Tensor], lr: float, weight_decay: float,
                         beta1: float, beta2: float, eps: float, step: int) -> None:
    """``adamw_step_one`` for every weight of the lists."""
    for args in zip(masters, grads, exp_avgs, exp_avg_sqs, workings, strict=True):
        adamw_step_one(*args, lr, weight_decay, beta1, beta2, eps, step)


__all__ = ["adamw_step_one", "adamw_step_reference"]
