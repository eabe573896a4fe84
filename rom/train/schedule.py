"""Learning-rate schedule: linear warmup over ``warmup_fraction`` of the steps, then cosine to lr*min_lr_ratio.

The schedule is a pure function of the step, so resuming only needs the step (kept in ``state_dict``).
"""

from __future__ import annotations

import math

import torch

from rom.config import TrainConfig


def lr_at(step: int, total_steps: int, lr: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = int(math.ceil(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    min_lr = lr * min_lr_ratio
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / decay_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the lr of every param group of ``optimizer`` before each step; ``step()`` advances."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = total_steps
        self.step_count = 0
        self._apply()

    def current_lr(self) -> float:
        c = self.cfg
        return lr_at(self.step_count, self.total_steps, c.lr, c.warmup_fraction, c.min_lr_ratio)

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
