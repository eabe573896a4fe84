"""Routing Mamba-2: a Mamba-2 mixer whose projections listed in ``rom.expert_projections`` are expert banks.

The Mamba-1 RoM's scheme (rom.layers.rom) applied to Mamba-2's projections: one router per layer (shared
routing), P(x_t) = softmax(x_t W_r), S_t = TopK(P(x_t)), reused by every expert projection. The input-side parts
of the fused in_proj (z: gate, x: conv, B: b, C: c, dt: dt) that are experts combine their chosen experts with
the 0/1 indicator (the mean of the k chosen for top-k > 1, or their sum with ``branch_combine=sum``); out_proj's
experts are weighted by the router probabilities. Expert input-side parts form one bank (one grouped GEMM),
the shared parts one nn.Linear. The conv over (x, B, C), the scan, A_log, D, dt_bias and the gated norm are
shared (rom.layers.mamba2.SSDCore). Independent / independent-indicator routing: one router per expert
projection, combined as in the Mamba-1 RoM.

"selective" expertization: z, x and out (the large projections); "comprehensive": also B, C and dt
(rom.config.SSM_PROJECTIONS).
"""

from __future__ import annotations

import torch
from torch import nn

from rom import kernels
from rom.config import ExpertProjection, Mamba2Config, RoMConfig, Routing
from rom.layers.expert_linear import ExpertLinear
from rom.layers.mamba2 import SSDCore
from rom.layers.rom import indicator_scale, make_routers
from rom.layers.router import RouterDecision, TokenRouting

# the parts of Mamba-2's in_proj, in mamba_ssm's order
IN_PARTS = (ExpertProjection.GATE, ExpertProjection.CONV, ExpertProjection.B, ExpertProjection.C,
            ExpertProjection.DT)


class RoMMamba2Mixer(nn.Module):
    def __init__(self, d_model: int, mcfg: Mamba2Config, rcfg: RoMConfig, norm_eps: float = 1e-5,
                 backend: str = "auto") -> None:
        super().__init__()
        self.d_model, self.rcfg, self.backend = d_model, rcfg, backend
        self.shared = rcfg.routing == Routing.SHARED
        self.indicator = rcfg.routing != Routing.INDEPENDENT
        E = rcfg.num_experts
        self.core = SSDCore(d_model, mcfg, norm_eps, backend)
        self.width = dict(zip(IN_PARTS, self.core.widths))
        expert_projections = [p for p in (*IN_PARTS, ExpertProjection.OUT) if rcfg.is_expert(p)]
        router, routers = make_routers(d_model, rcfg, expert_projections, backend)
        if self.shared:
            self.router = router
        else:
            self.routers = routers

        self.in_expert_parts = [p for p in IN_PARTS if rcfg.is_expert(p)]
        self.in_dense_parts = [p for p in IN_PARTS if not rcfg.is_expert(p)]
        # bank key -> the parts it computes: one bank under shared routing, one per part otherwise
        if self.shared:
            self.bank_parts = {"shared": self.in_expert_parts} if self.in_expert_parts else {}
        else:
            self.bank_parts = {p.value: [p] for p in self.in_expert_parts}
        self.in_experts = nn.ModuleDict({
            key: ExpertLinear(E, d_model, sum(self.width[p] for p in parts), backend)
            for key, parts in self.bank_parts.items()})
        dense_width = sum(self.width[p] for p in self.in_dense_parts)
        self.in_proj = nn.Linear(d_model, dense_width, bias=False) if self.in_dense_parts else None

        De = self.core.d_inner
        if rcfg.is_expert(ExpertProjection.OUT):
            self.out_experts = ExpertLinear(E, De, d_model, backend)
            self.out_experts._is_residual_out = True
        else:
            self.out_proj = nn.Linear(De, d_model, bias=False)
            self.out_proj._is_residual_out = True

    def _combine(self, rows: torch.Tensor, dec: RouterDecision) -> torch.Tensor:
        """Expert rows (T*k, W) of an input-side bank -> tokens (T, W): the 0/1 indicator (constant weights),
        or under independent routing the router's probabilities."""
        if not self.indicator:
            return kernels.unpermute(rows, dec.dispatch, dec.weights, self.backend)
        out = kernels.unpermute(rows, dec.dispatch, None, self.backend)
        scale = indicator_scale(self.rcfg)
        return out if scale == 1.0 else out * scale

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden (b, L, d_model) -> (b, L, d_model) and the router statistics."""
        b, L, Dm = hidden.shape
        T = b * L
        routing = TokenRouting(hidden, self.router if self.shared else None, None if self.shared else self.routers,
                               self.backend)
        h = routing.tokens
        decide = routing.decide

        parts: dict[ExpertProjection, torch.Tensor] = {}
        if self.in_proj is not None:
            dense = self.in_proj(hidden)
            parts.update(zip(self.in_dense_parts, dense.split([self.width[p] for p in self.in_dense_parts], -1)))
        for key, names in self.bank_parts.items():
            dec = decide(key)
            rows = self.in_experts[key](kernels.permute(h, dec.dispatch), dec.dispatch)
            out = self._combine(rows, dec).view(b, L, -1)
            parts.update(zip(names, out.split([self.width[p] for p in names], -1)))
        P = ExpertProjection
        xBC = torch.cat([parts[P.CONV], parts[P.B], parts[P.C]], dim=-1)
        y = self.core(parts[P.GATE], xBC, parts[P.DT])  # (b, L, De)

        if hasattr(self, "out_experts"):
            dec = decide("shared" if self.shared else P.OUT.value)
            rows = self.out_experts(kernels.permute(y.reshape(T, -1), dec.dispatch), dec.dispatch)
            out = kernels.unpermute(rows, dec.dispatch, dec.weights, self.backend).view(b, L, Dm)
        else:
            out = self.out_proj(y)
        return out, routing.stats()
