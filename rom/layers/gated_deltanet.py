"""Gated DeltaNet mixer (Yang, Kautz & Hatamizadeh, "Gated Delta Networks", ICLR 2025) and its Routing form.

The dense mixer follows flash-linear-attention's ``GatedDeltaNet`` layer (key_dim = heads * head_dim,
value_dim = key_dim * expand_v)::

    q, k = SiLU(conv_q(x W_q)), SiLU(conv_k(x W_k))      per head L2-normalised      (key_dim each)
    v    = SiLU(conv_v(x W_v))                                                        (value_dim)
    alpha_t = exp(g_t),  g_t = -exp(A_log) * softplus(x W_a + dt_bias)                one per head (Mamba-2 style)
    beta_t  = sigmoid(x W_b)                                                          one per head
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t / sqrt(head_dim)
    y = o_proj( RMSNorm_head(o) * SiLU(x W_g) )                                       (per head, shared gain)

The recurrence is the ``gated_delta_rule`` kernel op (rom.kernels.gated_delta_ops; reference: the chunked form
in rom.kernels.reference.gated_delta). Initialisation as fla's layer: A uniform in [A_init_min, A_init_max]
(A_log = log A, A floored at 1e-4; no weight decay), dt_bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] floored at
dt_init_floor (no weight decay), the short convolutions as nn.Conv1d, projections as nn.Linear, o_proj tagged as
a residual output (rom.models.lm rescales it).

RoM form (``RoMGatedDeltaNetMixer``): the projections listed in ``rom.expert_projections`` (names
``rom.config.ExpertProjection``: q, k, v, decay = W_a, beta = W_b, gate = W_g, out = o_proj) become expert banks
(``ExpertLinear``) under the Mamba-1 RoM's router (``Router``) and top-K dispatch (``kernels.permute`` /
``unpermute``), combined as the paper's Mamba-1 RoM combines them:
- shared routing (the paper): one router per layer; every input-side expert projection (q, k, v, decay, beta,
  gate: they all read the layer input) uses the 0/1 indicator of the chosen experts (the mean of the k chosen
  experts for top-k > 1 with ``branch_combine=mean``, their sum with ``sum``), and o_proj is weighted by the
  router probability. The input-side expert projections share one dispatch, so they form one bank whose output
  is their concatenation: one grouped GEMM computes all of them, as one in_proj does for Mamba-1's RoM.
- independent routing: one router per expert projection, each a standard MoE linear weighted by its router's
  probabilities; independent-indicator: one router per expert projection, combined as under shared routing.
The short convolutions, A_log, dt_bias and the output norm's gain stay shared in every setting (the
projection list of Gated DeltaNet has no conv entry; ``decay`` as an expert changes only W_a).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rom import kernels
from rom.config import ExpertProjection, RoMConfig, Routing
from rom.kernels.gated_delta_ops import gated_delta_rule
from rom.layers.expert_linear import ExpertLinear
from rom.layers.mamba import CausalConv1d
from rom.layers.rom import indicator_scale, make_routers
from rom.layers.router import RouterDecision, TokenRouting

# the projections that read the layer input, in the order of their concatenation in a shared expert bank
INPUT_PROJECTIONS = (ExpertProjection.Q, ExpertProjection.K, ExpertProjection.V, ExpertProjection.DECAY, ExpertProjection.BETA, ExpertProjection.GATE)
L2_EPS = 1e-6  # fla's l2norm: x / sqrt(sum x^2 + eps)
A_FLOOR = 1e-4  # A drawn from [0, 16] (fla's range) is floored here so that A_log = log(A) is finite


def gdn_dims(d_model: int, cfg) -> dict[ExpertProjection, int]:
    """Output width of every input-side projection of a Gated DeltaNet mixer (cfg: GatedDeltaNetConfig)."""
    key_dim = cfg.num_heads * cfg.head_dim
    value_dim = key_dim * cfg.expand_v
    return {ExpertProjection.Q: key_dim, ExpertProjection.K: key_dim, ExpertProjection.V: value_dim,
            ExpertProjection.DECAY: cfg.num_heads, ExpertProjection.BETA: cfg.num_heads, ExpertProjection.GATE: value_dim}


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in the dtype of statistics and gates: fp32, or fp64 for fp64 inputs (the float64 parity tests)."""
    return x if x.dtype == torch.float64 else x.float()


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last axis, statistics in fp32, result in x's dtype."""
    x32 = _wide(x)
    return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + L2_EPS)).to(x.dtype)


def init_decay_params(num_heads: int, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_log, dt_bias) per head, as fla's GatedDeltaNet initialises them."""
    A = torch.empty(num_heads).uniform_(cfg.A_init_min, cfg.A_init_max).clamp_(min=A_FLOOR)
    dt = torch.exp(torch.rand(num_heads) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
    dt = dt.clamp(min=cfg.dt_init_floor)
    return torch.log(A), dt + torch.log(-torch.expm1(-dt))  # inverse softplus


class GatedDeltaRule(nn.Module):
    """Parameter-free leaf around the kernel op (named ``scan`` in the mixer, so FLOP counters read its cost apart
    from the weight matmuls, see rom.flop_counters)."""

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend

    def forward(self, q, k, v, g, beta, scale, chunk_size):  # noqa: D102 (see kernels.gated_delta_ops)
        return gated_delta_rule(q, k, v, g, beta, scale, chunk_size=chunk_size, backend=self.backend)


class GatedDeltaCore(nn.Module):
    """Everything of a Gated DeltaNet mixer between its projections: the short convolutions, L2 norm of q and
    k, decay and beta, the gated delta rule and the gated output norm. Shared by the dense and the RoM mixer."""

    def __init__(self, d_model: int, cfg, backend: str = "auto") -> None:
        super().__init__()
        dims = gdn_dims(d_model, cfg)
        self.num_heads, self.head_dim, self.head_v_dim = cfg.num_heads, cfg.head_dim, cfg.head_dim * cfg.expand_v
        self.q_conv1d = CausalConv1d(dims[ExpertProjection.Q], cfg.d_conv, bias=cfg.conv_bias, backend=backend)
        self.k_conv1d = CausalConv1d(dims[ExpertProjection.K], cfg.d_conv, bias=cfg.conv_bias, backend=backend)
        self.v_conv1d = CausalConv1d(dims[ExpertProjection.V], cfg.d_conv, bias=cfg.conv_bias, backend=backend)
        A_log, dt_bias = init_decay_params(cfg.num_heads, cfg)
        self.A_log = nn.Parameter(A_log)
        self.A_log._no_weight_decay = True
        self.dt_bias = nn.Parameter(dt_bias)
        self.dt_bias._no_weight_decay = True
        self.o_norm_weight = nn.Parameter(torch.ones(self.head_v_dim))
        self.norm_eps = cfg.norm_eps
        self.chunk_size = cfg.chunk_size
        self.scan = GatedDeltaRule(backend)

    def forward(self, parts: dict[ExpertProjection, torch.Tensor]) -> torch.Tensor:
        """Projection outputs, token-major (b, L, width) -> the gated, normalised output o (b, L, value_dim)."""
        H, Dk, Dv = self.num_heads, self.head_dim, self.head_v_dim
        b, L, _ = parts[ExpertProjection.Q].shape

        def conv(x: torch.Tensor, module: CausalConv1d) -> torch.Tensor:
            return module(x.transpose(1, 2)).transpose(1, 2)  # (b, L, C) -> conv + SiLU -> (b, L, C)

        q = l2_normalize(conv(parts[ExpertProjection.Q], self.q_conv1d).reshape(b, L, H, Dk))
        k = l2_normalize(conv(parts[ExpertProjection.K], self.k_conv1d).reshape(b, L, H, Dk))
        v = conv(parts[ExpertProjection.V], self.v_conv1d).reshape(b, L, H, Dv)
        a = _wide(parts[ExpertProjection.DECAY])
        g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))
        beta = torch.sigmoid(_wide(parts[ExpertProjection.BETA]))
        o = self.scan(q, k, v, g, beta, Dk**-0.5, self.chunk_size)  # (b, L, H, Dv)
        o32 = _wide(o)
        o32 = o32 * torch.rsqrt(o32.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.o_norm_weight.to(o32.dtype)
        gate = parts[ExpertProjection.GATE].reshape(b, L, H, Dv)
        return (o32 * F.silu(_wide(gate))).to(o.dtype).reshape(b, L, H * Dv)


class GatedDeltaNetMixer(nn.Module):
    """The dense Gated DeltaNet mixer; ``forward(x)`` returns ``(out, [])`` like the other mixers."""

    def __init__(self, d_model: int, cfg, backend: str = "auto") -> None:
        super().__init__()
        dims = gdn_dims(d_model, cfg)
        self.q_proj = nn.Linear(d_model, dims[ExpertProjection.Q], bias=False)
        self.k_proj = nn.Linear(d_model, dims[ExpertProjection.K], bias=False)
        self.v_proj = nn.Linear(d_model, dims[ExpertProjection.V], bias=False)
        self.a_proj = nn.Linear(d_model, dims[ExpertProjection.DECAY], bias=False)
        self.b_proj = nn.Linear(d_model, dims[ExpertProjection.BETA], bias=False)
        self.g_proj = nn.Linear(d_model, dims[ExpertProjection.GATE], bias=False)
        self.core = GatedDeltaCore(d_model, cfg, backend)
        self.o_proj = nn.Linear(dims[ExpertProjection.V], d_model, bias=False)
        self.o_proj._is_residual_out = True

    def projection(self, p: ExpertProjection) -> nn.Linear:
        """The nn.Linear of projection ``p`` (tests copy dense weights into expert banks through this)."""
        return {ExpertProjection.Q: self.q_proj, ExpertProjection.K: self.k_proj, ExpertProjection.V: self.v_proj,
                ExpertProjection.DECAY: self.a_proj, ExpertProjection.BETA: self.b_proj, ExpertProjection.GATE: self.g_proj,
                ExpertProjection.OUT: self.o_proj}[p]

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden (b, L, d_model) -> (b, L, d_model) and no router statistics."""
        parts = {p: self.projection(p)(hidden) for p in INPUT_PROJECTIONS}
        return self.o_proj(self.core(parts)), []


class RoMGatedDeltaNetMixer(nn.Module):
    """Gated DeltaNet with the projections in ``rcfg.expert_projections`` as routed expert banks (module doc)."""

    def __init__(self, d_model: int, cfg, rcfg: RoMConfig, backend: str = "auto") -> None:
        super().__init__()
        E = rcfg.num_experts
        self.d_model, self.rcfg, self.backend = d_model, rcfg, backend
        self.dims = gdn_dims(d_model, cfg)
        self.shared = rcfg.routing == Routing.SHARED
        self.indicator = rcfg.routing != Routing.INDEPENDENT  # 0/1 indicator on the input-side experts
        router, routers = make_routers(d_model, rcfg, rcfg.expert_projections, backend)
        if router is not None:
            self.router = router
        else:
            self.routers = routers

        self.expert_parts = [p for p in INPUT_PROJECTIONS if rcfg.is_expert(p)]
        self.dense_parts = [p for p in INPUT_PROJECTIONS if not rcfg.is_expert(p)]
        # the shared projections: one nn.Linear each, named by projection (q, k, v, decay, beta, gate)
        self.proj = nn.ModuleDict({p.value: nn.Linear(d_model, self.dims[p], bias=False) for p in self.dense_parts})
        self.experts = nn.ModuleDict()
        if self.expert_parts:
            if self.shared:
                width = sum(self.dims[p] for p in self.expert_parts)
                self.experts["shared"] = ExpertLinear(E, d_model, width, backend)
            else:
                for p in self.expert_parts:
                    self.experts[p.value] = ExpertLinear(E, d_model, self.dims[p], backend)
        self.core = GatedDeltaCore(d_model, cfg, backend)
        value_dim = self.dims[ExpertProjection.V]
        if rcfg.is_expert(ExpertProjection.OUT):
            self.o_experts = ExpertLinear(E, value_dim, d_model, backend)
            self.o_experts._is_residual_out = True
        else:
            self.o_proj = nn.Linear(value_dim, d_model, bias=False)
            self.o_proj._is_residual_out = True

    def _indicator_weights(self, dec: RouterDecision) -> torch.Tensor | None:
        """Constant combination weights of the k chosen experts in the indicator branches (None: plain sum)."""
        scale = indicator_scale(self.rcfg)
        return None if scale == 1.0 else torch.full_like(dec.weights, scale)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden (b, L, d_model) -> (b, L, d_model) and the router statistics."""
        b, L, Dm = hidden.shape
        T = b * L
        routing = TokenRouting(hidden, self.router if self.shared else None, None if self.shared else self.routers,
                               self.backend)
        h = routing.tokens

        def decide(p: ExpertProjection) -> RouterDecision:
            return routing.decide(p.value)

        parts = {p: self.proj[p.value](hidden) for p in self.dense_parts}
        banks = [("shared", self.expert_parts)] if self.shared else [(p.value, [p]) for p in self.expert_parts]
        for key, names in banks if self.expert_parts else ():
            dec = decide(names[0])
            rows = self.experts[key](kernels.permute(h, dec.dispatch), dec.dispatch)
            weights = self._indicator_weights(dec) if self.indicator else dec.weights
            out = kernels.unpermute(rows, dec.dispatch, weights, self.backend).view(b, L, -1)
            for p, t in zip(names, out.split([self.dims[p] for p in names], dim=-1)):
                parts[p] = t

        y = self.core(parts)  # (b, L, value_dim)
        if hasattr(self, "o_experts"):
            dec = decide(ExpertProjection.OUT)
            rows = self.o_experts(kernels.permute(y.reshape(T, -1), dec.dispatch), dec.dispatch)
            out = kernels.unpermute(rows, dec.dispatch, dec.weights, self.backend).view(b, L, Dm)
        else:
            out = self.o_proj(y)
        return out, routing.stats()
