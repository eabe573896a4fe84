"""Dense Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs": the SSD layer) and the parts its RoM form shares.

One fused in_proj D_m -> [z (D_e) | x (D_e) | B (G*N) | C (G*N) | dt (H)] (no bias by default); a depthwise
causal conv (width d_conv) + SiLU over x, B and C together; the SSD scan with H = D_e / headdim heads of headdim
channels, a scalar decay A = -exp(A_log) per head, step delta = softplus(dt + dt_bias) per head, B and C shared
by the heads of each of the G groups, skip D per head; then the gated RMSNorm norm(y * SiLU(z)) (grouped: one
RMS per group of D_e / G channels, as mamba_ssm's RMSNormGated) and out_proj D_e -> D_m.

Initialisation as mamba_ssm's Mamba2: A_log = log(A) with A uniform in [A_init_min, A_init_max]; dt_bias =
softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] floored at dt_init_floor; D = 1; projections and conv as
nn.Linear / nn.Conv1d. A_log, D and dt_bias are tagged ``_no_weight_decay`` and kept in fp32.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from rom.config import Mamba2Config
from rom.kernels.ssd_ops import ssd_scan
from rom.layers.mamba import CausalConv1d, init_dt_bias


def _fp32_or_wider(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision tensors; fp64 stays fp64 (the float64 parity tests)."""
    return t if t.dtype == torch.float64 else t.float()


class GatedRMSNorm(nn.Module):
    """norm(y * SiLU(z)) * weight, the RMS taken over each group of ``group_size`` channels (fp32 statistics)."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = _fp32_or_wider(y) * F.silu(_fp32_or_wider(z))
        shape = g.shape
        g = g.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return (g.reshape(shape) * _fp32_or_wider(self.weight)).to(y.dtype)


class SSDScan(nn.Module):
    """Parameter-free leaf around the ssd_scan op, so FLOP counters attribute its cost by module (named "scan",
    as rom.flop_counters expects)."""

    def __init__(self, chunk_size: int, backend: str = "auto") -> None:
        super().__init__()
        self.chunk_size, self.backend = chunk_size, backend

    def forward(self, x, dt, A, B, C, D, dt_bias):  # noqa: D102 (see rom.kernels.ssd_ops.ssd_scan)
        return ssd_scan(x, dt, A, B, C, D, dt_bias, self.chunk_size, self.backend)


class SSDCore(nn.Module):
    """What lies between Mamba-2's projections: conv over (x, B, C), the SSD scan, the gated norm.

    Holds conv1d, A_log, D, dt_bias and the norm; takes the in-projection's parts token-major and returns the
    normed output (b, L, D_e) that out_proj reads. Dense and RoM Mamba-2 mixers share it.
    """

    def __init__(self, d_model: int, cfg: Mamba2Config, norm_eps: float = 1e-5, backend: str = "auto") -> None:
        super().__init__()
        self.cfg, self.backend = cfg, backend
        self.d_inner = cfg.expand * d_model
        self.nheads = self.d_inner // cfg.headdim
        self.d_bc = cfg.ngroups * cfg.d_state
        self.conv1d = CausalConv1d(self.d_inner + 2 * self.d_bc, cfg.d_conv, bias=cfg.conv_bias, backend=backend)
        A = torch.empty(self.nheads).uniform_(cfg.A_init_min, cfg.A_init_max)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads, cfg))
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // cfg.ngroups, norm_eps)
        self.scan = SSDScan(cfg.chunk_size, backend)

    @property
    def widths(self) -> list[int]:
        """Widths of the in-projection's parts in mamba_ssm's order: z, x, B, C, dt."""
        return [self.d_inner, self.d_inner, self.d_bc, self.d_bc, self.nheads]

    def forward(self, z: torch.Tensor, xBC: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """z (b, L, D_e), xBC (b, L, D_e + 2 G N) (x, B, C concatenated), dt (b, L, H) -> (b, L, D_e)."""
        b, L, _ = z.shape
        cfg = self.cfg
        xBC = self.conv1d(xBC.transpose(1, 2)).transpose(1, 2)  # depthwise causal conv + SiLU
        x, B, C = xBC.split([self.d_inner, self.d_bc, self.d_bc], dim=-1)
        f = _fp32_or_wider
        y = self.scan(x.reshape(b, L, self.nheads, cfg.headdim), dt, -torch.exp(f(self.A_log)),
                      B.reshape(b, L, cfg.ngroups, cfg.d_state), C.reshape(b, L, cfg.ngroups, cfg.d_state),
                      f(self.D), f(self.dt_bias))
        return self.norm(y.reshape(b, L, self.d_inner), z)


class Mamba2Mixer(nn.Module):
    def __init__(self, d_model: int, cfg: Mamba2Config, norm_eps: float = 1e-5, backend: str = "auto") -> None:
        super().__init__()
        self.d_model = d_model
        self.core = SSDCore(d_model, cfg, norm_eps, backend)
        self.in_proj = nn.Linear(d_model, sum(self.core.widths), bias=cfg.proj_bias)
        self.out_proj = nn.Linear(self.core.d_inner, d_model, bias=cfg.proj_bias)
        self.out_proj._is_residual_out = True

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden (b, L, d_model) -> (b, L, d_model), no auxiliary outputs."""
        De = self.core.d_inner
        z, xBC, dt = self.in_proj(hidden).split([De, sum(self.core.widths[1:4]), self.core.nheads], dim=-1)
        return self.out_proj(self.core(z, xBC, dt)), []


__all__ = ["GatedRMSNorm", "Mamba2Mixer", "SSDCore", "SSDScan"]
