"""Learning-rate schedules: ``cosine`` (linear warmup over ``warmup_fraction`` of the steps, then cosine to
lr*min_lr_ratio; Samba's) and ``wsd`` (warmup-stable-decay: the same warmup, the constant peak lr, then a decay
over the last ``decay_fraction`` of the steps to lr*min_lr_ratio).

WSD decays with the 1-sqrt shape, lr = min + (peak - min) * (1 - sqrt(progress)): Hägele et al. 2024 ("Scaling
Laws and Compute-Optimal Training Beyond Fixed Training Durations") found this cooldown matches or beats a
cosine run of the same length and beats a linear cooldown of the same length, which is what lets a cooldown
branch stand in for a separately trained run. The decay reaches lr*min_lr_ratio on the last step.

A cooldown branch (rom.train.loop) is a WSD schedule of its own, shorter length that keeps the main run's
warmup steps, so over the main run's stable phase the two schedules are the same function of the step.

The schedule is a pure function of the step, so resuming only needs the step (kept in ``state_dict``).
"""

from __future__ import annotations

import math

import torch

from rom.config import Schedule, TrainConfig


def lr_at(step: int, total_steps: int, lr: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Cosine schedule: learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = int(math.ceil(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    min_lr = lr * min_lr_ratio
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / decay_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def wsd_lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, decay_steps: int,
              min_lr_ratio: float) -> float:
    """Warmup-stable-decay: lr for step ``step`` (0-based); linear warmup over ``warmup_steps``, constant ``lr``,
    then 1-sqrt decay over the last ``decay_steps`` of ``total_steps``, reaching lr*min_lr_ratio at the last."""
    min_lr = lr * min_lr_ratio
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    start = total_steps - decay_steps
    if step < start:
        return lr
    progress = min(1.0, (step - start + 1) / max(1, decay_steps))
    return min_lr + (lr - min_lr) * (1.0 - math.sqrt(progress))


class LRSchedule:
    """Sets the lr of every param group of ``optimizer`` before each step; ``step()`` advances.

    ``warmup_steps`` overrides the warmup of ``cfg`` (a cooldown branch keeps its main run's warmup).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                 warmup_steps: int | None = None) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = total_steps
        self.kind = cfg.schedule
        if self.kind == Schedule.WSD:
            self.warmup_steps = cfg.warmup_steps if warmup_steps is None else warmup_steps
            self.decay_steps = cfg.decay_steps(total_steps)
        else:
            if warmup_steps is not None:
                raise ValueError("a cosine schedule derives its warmup from train.warmup_fraction")
            w = cfg.warmup_fraction
            self.warmup_steps = int(math.ceil(w * total_steps)) if w > 0 else 0
            self.decay_steps = max(1, total_steps - self.warmup_steps)
        self.step_count = 0
        self._apply()

    def lr_of(self, step: int) -> float:
        c = self.cfg
        if self.kind == Schedule.WSD:
            return wsd_lr_at(step, self.total_steps, c.lr, self.warmup_steps, self.decay_steps, c.min_lr_ratio)
        return lr_at(step, self.total_steps, c.lr, c.warmup_fraction, c.min_lr_ratio)

    def current_lr(self) -> float:
        return self.lr_of(self.step_count)

    def describe(self) -> dict:
        """The schedule as data (for records): kind, lr, min_lr, total / warmup / decay steps, decay start."""
        return {
            "kind": self.kind.value,
            "lr": self.cfg.lr,
            "min_lr": self.cfg.lr * self.cfg.min_lr_ratio,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay_start": self.total_steps - self.decay_steps,
            "decay_steps": self.decay_steps,
            "decay_shape": "1-sqrt" if self.kind == Schedule.WSD else "cosine",
        }

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
