"""SwiGLU MLP and a dropless FFN-MoE of SwiGLU experts (sort-based dispatch, grouped GEMM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rom import kernels
from rom.config import MoEConfig
from rom.layers.expert_linear import ExpertLinear
from rom.layers.router import Router


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)); gate and up fused in one matmul."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.d_ff = d_ff
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.down._is_residual_out = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        gate, up = self.gate_up(x).split(self.d_ff, dim=-1)
        return self.down(F.silu(gate) * up), []


class MoEFFN(nn.Module):
    """Dropless top-k mixture of SwiGLU experts; output weighted by the (renormalised) router probabilities."""

    def __init__(self, d_model: int, d_ff: int, cfg: MoEConfig, backend: str = "auto") -> None:
        super().__init__()
        self.d_ff = d_ff
        self.backend = backend
        self.router = Router(
            d_model, cfg.num_experts, cfg.top_k, cfg.renormalize, cfg.load_balance_coef, cfg.z_loss_coef, "router",
            backend,
        )
        self.gate_up = ExpertLinear(cfg.num_experts, d_model, 2 * d_ff, backend)
        self.down = ExpertLinear(cfg.num_experts, d_ff, d_model, backend)
        self.down._is_residual_out = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        dec = self.router(h)
        d = dec.dispatch
        gate, up = self.gate_up(kernels.permute(h, d), d).split(self.d_ff, dim=-1)
        out = kernels.unpermute(self.down(F.silu(gate) * up, d), d, dec.weights.to(h.dtype), self.backend)
        return out.reshape(shape), [dec.stats]
