"""Routing Mamba (RoM) mixer: a Mamba-1 mixer whose large projections are expert banks under one router.

Shared routing (the paper): one router per layer, P(x_t) = softmax(x_t W_r), S_t = TopK(P(x_t)), decided once
and reused by every expert projection:
    H_t = SiLU(conv(sum_{i in S_t} x_t W_in,i))          conv (x) branch, 0/1 indicator
    G_t = SiLU(sum_{i in S_t} x_t W_g,i)                 gate (z) branch, 0/1 indicator
    O_t = sum_{i in S_t} P_i(x_t) (Y_t * G_t) W_out,i    out projection, router probability
Conv1D, x_proj, dt_proj, A_log and D are shared unless listed in ``rom.expert_projections`` (the
"comprehensive" ablation), in which case they are expert banks combined like the conv branch.

Choices where the paper is silent (config options, see rom.config.RoMConfig):
- top-k > 1: indicator branches take the mean of the k experts (``branch_combine=mean``; top-1 is exactly the
  0/1 indicator) or their sum (``sum``); out weights are the top-k probabilities, renormalised if asked.
- independent routing (the naive-MoE ablation): every expert projection has its own router, all seeing the
  layer input x_t, and each projection is a standard MoE linear weighted by its own router's probabilities
  (with 0/1 indicators its router would get no gradient from the language-model loss).
- independent-indicator routing (the routers-only ablation): one router per expert projection as above, but
  combined as under shared routing (0/1 indicator on conv and gate, router probability only on out), so only
  the routers change. Its conv and gate routers then get no gradient from the language-model loss and learn
  only from the auxiliary losses (load balance, z-loss); with both at 0 they stay at their initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rom import kernels
from rom.config import Combine, MambaConfig, Projection, RoMConfig, Routing
from rom.layers.expert_linear import ExpertLinear
from rom.layers.mamba import CausalConv1d, SSMCore, init_dt_bias
from rom.layers.router import Router, RouterDecision, TokenRouting


def indicator_scale(rcfg: RoMConfig) -> float:
    """Constant weight of each chosen expert in the 0/1-indicator branches (shared, independent-indicator):
    1 for top-1 or ``branch_combine=sum``, 1/k for the mean of k experts."""
    if rcfg.branch_combine == Combine.SUM or rcfg.top_k == 1:
        return 1.0
    return 1.0 / rcfg.top_k


def make_routers(d_model: int, rcfg: RoMConfig, projections, backend: str) -> tuple["Router | None", nn.ModuleDict]:
    """Shared routing: (one router named "router", empty dict); otherwise (None, one router per projection
    value, named "router_<value>")."""
    def router(name: str) -> Router:
        return Router(d_model, rcfg.num_experts, rcfg.top_k, rcfg.renormalize, rcfg.load_balance_coef,
                      rcfg.z_loss_coef, name, backend)

    if rcfg.routing == Routing.SHARED:
        return router("router"), nn.ModuleDict()
    return None, nn.ModuleDict({p.value: router(f"router_{p.value}") for p in projections})


class RoMMixer(nn.Module):
    def __init__(
        self, d_model: int, mcfg: MambaConfig, rcfg: RoMConfig, dt_rank: int, backend: str = "auto",
        fused_inner: bool = True,
    ) -> None:
        super().__init__()
        E = rcfg.num_experts
        self.d_model, self.d_inner, self.d_state, self.dt_rank = d_model, mcfg.expand * d_model, mcfg.d_state, dt_rank
        self.rcfg = rcfg
        self.shared = rcfg.routing == Routing.SHARED  # one router for every expert projection
        # indicator branches (conv, gate, x/dt/conv1d) combined with constant 0/1 weights, as the paper's; only
        # independent routing weights them by router probabilities
        self.indicator = rcfg.routing != Routing.INDEPENDENT
        self.backend = backend
        De, N, R = self.d_inner, self.d_state, dt_rank

        router, routers = make_routers(d_model, rcfg, rcfg.expert_projections, backend)
        if self.shared:
            self.router = router
        else:
            self.routers = routers

        # conv (x) and gate (z) halves of in_proj. Under shared routing the expert halves form one bank, so a
        # single grouped GEMM computes both (as the dense in_proj computes x and z in one matmul).
        self.in_expert_parts = [p for p in (Projection.CONV, Projection.GATE) if rcfg.is_expert(p)]
        self.in_dense_parts = [p for p in (Projection.CONV, Projection.GATE) if not rcfg.is_expert(p)]
        self.in_experts = nn.ModuleDict()
        if self.in_expert_parts:
            if self.shared:
                self.in_experts["shared"] = ExpertLinear(E, d_model, De * len(self.in_expert_parts), backend)
            else:
                for p in self.in_expert_parts:
                    self.in_experts[p.value] = ExpertLinear(E, d_model, De, backend)
        self.in_proj = nn.Linear(d_model, De * len(self.in_dense_parts), bias=False) if self.in_dense_parts else None

        if rcfg.is_expert(Projection.CONV1D):
            bound = mcfg.d_conv**-0.5  # as CausalConv1d / nn.Conv1d: fan_in is the kernel width
            self.conv1d_experts = nn.Parameter(torch.empty(E, De, mcfg.d_conv).uniform_(-bound, bound))
            self.conv1d_expert_bias = nn.Parameter(torch.empty(E, De).uniform_(-bound, bound))
            self.conv1d = None
        else:
            self.conv1d = CausalConv1d(De, mcfg.d_conv, bias=mcfg.conv_bias, backend=backend)

        if rcfg.is_expert(Projection.X):
            self.x_experts = ExpertLinear(E, De, R + 2 * N, backend)
        else:
            self.x_proj = nn.Linear(De, R + 2 * N, bias=False)

        if rcfg.is_expert(Projection.DT):
            self.dt_experts = ExpertLinear(E, R, De, backend)
            nn.init.uniform_(self.dt_experts.weight, -(R**-0.5), R**-0.5)
            self.dt_expert_bias = nn.Parameter(torch.stack([init_dt_bias(De, mcfg) for _ in range(E)]))
        else:
            self.dt_proj = nn.Linear(R, De, bias=True)
            nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
            with torch.no_grad():
                self.dt_proj.bias.copy_(init_dt_bias(De, mcfg))
            self.dt_proj.bias._no_reinit = True

        self.ssm = SSMCore(De, N, backend)

        if rcfg.is_expert(Projection.OUT):
            self.out_experts = ExpertLinear(E, De, d_model, backend)
            self.out_experts._is_residual_out = True
        else:
            self.out_proj = nn.Linear(De, d_model, bias=False)
            self.out_proj._is_residual_out = True

        # conv -> projections -> scan through kernels.mamba_inner where x and z are the halves of one tensor
        # (shared routing, both expert or both dense, one conv); False runs the conv1d, projection
        # and ssm modules in turn, each with its own backend (benchmarks)
        self.fused_inner = fused_inner

    # ------------------------------------------------------------------------------------------ routing
    def _indicator_scale(self) -> float:
        """Constant weight of each chosen expert in the 0/1-indicator branches (shared, independent-indicator)."""
        return indicator_scale(self.rcfg)

    def _rows(self, x: torch.Tensor, dec: RouterDecision) -> torch.Tensor:
        """Channels-first activation (b, C, L) -> its token-slot rows sorted by expert (T*k, C)."""
        return kernels.permute_from_channels(x, dec.dispatch, self.backend)

    def _combine_indicator(self, rows: torch.Tensor, dec: RouterDecision, b: int, L: int) -> torch.Tensor:
        """Expert rows (T*k, C) of an indicator branch -> channels-first (b, C, L).

        Shared and independent-indicator routing: constant combination weights, so un-permutation and layout
        change are one pass.
        Independent routing: each projection is a standard MoE linear weighted by its router's probabilities,
        which need gradients, so the token-major weighted un-permutation runs and its result is viewed
        channels-first (the conv and the scan accept the strided view).
        """
        if self.indicator:
            return kernels.unpermute_to_channels(rows, dec.dispatch, b, L, self._indicator_scale(), self.backend)
        out = kernels.unpermute(rows, dec.dispatch, dec.weights, self.backend)
        return out.view(b, L, -1).transpose(1, 2)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden (b, L, d_model) -> (b, L, d_model) and the router statistics.

        Activations between the projections stay channels-first (b, C, L), as in the dense mixer; expert
        projections gather their rows from that layout and scatter their outputs back into it (see
        rom.kernels.experts.permute_from_channels / unpermute_to_channels).
        """
        b, L, Dm = hidden.shape
        De = self.d_inner
        # tokens cast once for the router(s) and the expert rows, one decision per router (TokenRouting)
        routing = TokenRouting(hidden, self.router if self.shared else None, None if self.shared else self.routers,
                               self.backend)
        h = routing.tokens

        def decide(p: Projection) -> RouterDecision:
            return routing.decide(p.value)

        # in projection: x (conv branch) and z (gate branch), channels-first (b, De, L)
        parts: dict[Projection, torch.Tensor] = {}
        xz = None  # x and z as the two halves of one tensor, when one projection computes both
        if self.in_proj is not None:
            dense_xz = kernels.linear_channels(hidden.transpose(1, 2), self.in_proj.weight, backend=self.backend)
            xz = dense_xz if len(self.in_dense_parts) == 2 else None
            for p, t in zip(self.in_dense_parts, dense_xz.split(De, dim=1)):
                parts[p] = t
        if self.in_expert_parts:
            keys = ["shared"] if self.shared else [p.value for p in self.in_expert_parts]
            for key in keys:
                dec = decide(self.in_expert_parts[0] if self.shared else Projection(key))
                rows = self.in_experts[key](kernels.permute(h, dec.dispatch), dec.dispatch)
                out = self._combine_indicator(rows, dec, b, L)
                xz = out if self.shared and len(self.in_expert_parts) == 2 else None
                names = self.in_expert_parts if self.shared else [Projection(key)]
                for p, t in zip(names, out.split(De, dim=1)):
                    parts[p] = t
        x, z = parts[Projection.CONV], parts[Projection.GATE]

        def project(x_conv: torch.Tensor):
            return self._project(x_conv, decide, b, L)

        if xz is not None and self.conv1d is not None and self.fused_inner:
            y = kernels.mamba_inner(xz, *self.conv1d.params_as(xz.dtype), *self.ssm.params(), project, self.backend)
        else:
            # the modules in turn, each with its own backend: depthwise causal conv + SiLU (per expert in the
            # "comprehensive" ablation), projections, scan
            x = self.conv1d(x) if self.conv1d is not None else self._expert_conv(x, decide(Projection.CONV1D))
            delta, B, C, delta_bias = project(x)
            y = self.ssm(x, delta, B, C, z, delta_bias)  # (b, De, L)

        if hasattr(self, "out_experts"):
            dec = decide(Projection.OUT)
            rows = self.out_experts(self._rows(y, dec), dec.dispatch)
            out = kernels.unpermute(rows, dec.dispatch, dec.weights, self.backend).view(b, L, Dm)
        else:
            out = kernels.linear_channels(y, self.out_proj.weight, out_tokens=True, backend=self.backend)
        return out, routing.stats()

    def _project(self, x: torch.Tensor, decide, b: int, L: int):
        """Conv output x (b, De, L) -> the scan's (delta, B, C, delta_bias): x_proj, then dt_proj (softplus is
        the scan's)."""
        N, R = self.d_state, self.dt_rank
        # x_proj -> (dt, B, C)
        if hasattr(self, "x_experts"):
            dec = decide(Projection.X)
            x_dbl = self._combine_indicator(self.x_experts(self._rows(x, dec), dec.dispatch), dec, b, L)
        else:
            x_dbl = kernels.linear_channels(x, self.x_proj.weight, backend=self.backend)
        dt, B, C = x_dbl.split([R, N, N], dim=1)

        # dt_proj -> delta (softplus inside the scan)
        if hasattr(self, "dt_experts"):
            dec = decide(Projection.DT)
            d = dec.dispatch
            delta_rows = self.dt_experts(self._rows(dt, dec), d)
            expert_of_row = dec.indices.reshape(-1)[d.slot_index]
            delta_rows = delta_rows + self.dt_expert_bias[expert_of_row].to(delta_rows.dtype)
            delta = self._combine_indicator(delta_rows, dec, b, L)
            delta_bias = None
        else:
            delta = kernels.linear_channels(dt, self.dt_proj.weight, backend=self.backend)
            delta_bias = self.dt_proj.bias.float()
        return delta, B, C, delta_bias

    def _expert_conv(self, x: torch.Tensor, dec: RouterDecision) -> torch.Tensor:
        """Per-token expert depthwise causal conv: x (b, De, L) -> SiLU(sum_i conv_i(x)_t) (b, De, L)."""
        b, De, L = x.shape
        width = self.conv1d_experts.shape[-1]
        windows = F.pad(x, (width - 1, 0)).unfold(2, width, 1)  # (b, De, L, width)
        windows = windows.permute(0, 2, 1, 3).reshape(b * L, De, width)
        d = dec.dispatch
        expert_of_row = dec.indices.reshape(-1)[d.slot_index]
        w = self.conv1d_experts[expert_of_row].to(x.dtype)  # (T*k, De, width)
        rows = (windows[d.token_index] * w).sum(-1) + self.conv1d_expert_bias[expert_of_row].to(x.dtype)
        out = self._combine_indicator(rows, dec, b, L)
        return F.silu(out)
