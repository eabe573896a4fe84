"""AdamW with two parameter groups: weight decay on matrices, none on norms, biases, A_log and D."""

from __future__ import annotations

import torch
from torch import nn

from rom.config import TrainConfig
from rom.train.master_weights import MasterWeightAdamW, master_param_groups


def no_weight_decay(param: nn.Parameter) -> bool:
    """Vectors and scalars (norm gains, biases) and parameters tagged ``_no_weight_decay`` (A_log, D)."""
    return param.ndim < 2 or bool(getattr(param, "_no_weight_decay", False))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:  # tied embeddings appear once
            continue
        seen.add(id(p))
        (no_decay if no_weight_decay(p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    pairs: dict[str, tuple[nn.Parameter, torch.Tensor]] | None = None) -> torch.optim.AdamW:
    """AdamW; with ``pairs`` (train.master_weights, rom.train.master_weights.to_working_weights) the one that
    updates fp32 masters of the bf16 working weights."""
    groups = param_groups(model, cfg.weight_decay)
    if pairs is None:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    return MasterWeightAdamW(master_param_groups(groups, pairs), pairs, cfg.backend.value, lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=1e-8)
