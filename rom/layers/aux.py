"""Auxiliary outputs of routed layers, returned up the call stack (never stored in globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RouterStats:
    """What one router did on one forward pass (statistics are detached; losses are not).

    ``entropy`` and, where its coefficient is 0, ``z_loss`` are diagnostics that only logging steps read:
    they are computed from the kept (detached) logits on first access instead of on every forward pass,
    which saves a dozen small kernels per router per step.
    """

    name: str  # e.g. "mixer.router" or "mixer.router_out" or "mlp.router"
    layer: int  # index of the residual layer, filled in by the block
    tokens_per_expert: torch.Tensor  # (E,) float, detached: token-slots routed to each expert
    load_balance_loss: torch.Tensor  # scalar, with grad
    weighted_loss: torch.Tensor  # scalar, with grad: coef_lb * lb + coef_z * z
    logits: torch.Tensor | None = None  # (T, E) fp32, detached: source of the lazy diagnostics
    z_loss_value: torch.Tensor | None = None  # scalar with grad when the z-loss is part of the objective

    def snapshot(self) -> "RouterStats":
        """A detached copy whose tensors are its own: for statistics that live in a CUDA graph's memory, which
        the graph's next replay overwrites (rom.train.cuda_graph)."""

        def own(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().clone()

        return RouterStats(name=self.name, layer=self.layer, tokens_per_expert=own(self.tokens_per_expert),
                           load_balance_loss=own(self.load_balance_loss), weighted_loss=own(self.weighted_loss),
                           logits=own(self.logits), z_loss_value=own(self.z_loss_value))

    @property
    def entropy(self) -> torch.Tensor:
        """Mean router entropy (nats), detached."""
        if self.logits is None:
            raise ValueError(f"RouterStats {self.name}: no logits kept, entropy unavailable")
        logp = torch.log_softmax(self.logits, dim=-1)
        return -(logp.exp() * logp).sum(-1).mean()

    @property
    def z_loss(self) -> torch.Tensor:
        """Router z-loss mean(logsumexp(logits)^2): with grad if it is in the objective, else detached."""
        if self.z_loss_value is not None:
            return self.z_loss_value
        if self.logits is None:
            raise ValueError(f"RouterStats {self.name}: no logits kept, z_loss unavailable")
        return z_loss_of(self.logits)


def z_loss_of(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


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
