"""Auxiliary outputs of routed layers, returned up the call stack (never stored in globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RouterStats:
    """What one router did on one forward pass (statistics are detached; losses are not)."""

    name: str  # e.g. "mixer.router" or "mixer.router_out" or "mlp.router"
    layer: int  # index of the residual layer, filled in by the block
    tokens_per_expert: torch.Tensor  # (E,) float, detached: token-slots routed to each expert
    entropy: torch.Tensor  # scalar, detached: mean router entropy (nats)
    load_balance_loss: torch.Tensor  # scalar, with grad
    z_loss: torch.Tensor  # scalar, with grad
    weighted_loss: torch.Tensor  # scalar, with grad: coef_lb * lb + coef_z * z


@dataclass
class AuxOutputs:
    router_stats: list[RouterStats] = field(default_factory=list)

    def extend(self, other: "AuxOutputs", layer: int | None = None) -> None:
        for s in other.router_stats:
            if layer is not None:
                s.layer = layer
            self.router_stats.append(s)

    def total_loss(self, like: torch.Tensor) -> torch.Tensor:
        total = like.new_zeros((), dtype=torch.float32)
        for s in self.router_stats:
            total = total + s.weighted_loss.float()
        return total
