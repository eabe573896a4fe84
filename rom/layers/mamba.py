"""Dense Mamba-1 mixer (Gu & Dao) and the pieces the RoM mixer shares with it.

in_proj D_m -> 2 D_e (x | z); depthwise causal conv (kernel d_conv) + SiLU on x; x_proj -> (dt_rank, B, C);
dt_proj + softplus -> delta; selective scan with A = -exp(A_log), skip D, gated by SiLU(z); out_proj D_e -> D_m.
Initialisation as mamba_ssm's Mamba: A_log = log(1..N) (S4D-real), D = 1, dt bias = softplus^-1(dt) with dt
log-uniform in [dt_min, dt_max] floored at dt_init_floor, dt_proj weight uniform(+-dt_rank^-0.5). A_log and D
are tagged ``_no_weight_decay`` and kept in fp32 (the model never casts parameters; autocast handles matmuls).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rom import kernels
from rom.config import MambaConfig


def init_dt_bias(d_inner: int, cfg: MambaConfig) -> torch.Tensor:
    dt = torch.exp(torch.rand(d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
    dt = dt.clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def init_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    return torch.log(A)


class SelectiveScan(nn.Module):
    """Parameter-free leaf around the scan kernel, so FLOP counters can attribute its cost by module."""

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend

    def forward(self, u, delta, A, B, C, D, z, delta_bias):  # noqa: D102 (see kernels.selective_scan)
        return kernels.selective_scan(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True, backend=self.backend
        )


class CausalConv1d(nn.Module):
    """Depthwise causal conv with weight (d, width) and bias (d,), initialised as nn.Conv1d would be."""

    def __init__(self, d: int, width: int, bias: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(d, width))
        self.bias = nn.Parameter(torch.empty(d)) if bias else None
        bound = 1.0 / math.sqrt(width)  # fan_in of a depthwise conv is the kernel width
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def params_as(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) in the activations' dtype, as the kernels take them."""
        return self.weight.to(dtype), (self.bias.to(dtype) if self.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, d, L) -> SiLU(conv(x)) (batch, d, L)."""
        return kernels.causal_conv1d(x, *self.params_as(x.dtype), activation="silu", backend=self.backend)


class SSMCore(nn.Module):
    """Shared state-space parameters of a mixer: A_log, D and the scan leaf."""

    def __init__(self, d_inner: int, d_state: int, backend: str = "auto") -> None:
        super().__init__()
        self.A_log = nn.Parameter(init_A_log(d_inner, d_state))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))
        self.D._no_weight_decay = True
        self.scan = SelectiveScan(backend)

    def params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, D) as the scan takes them: A = -exp(A_log) and D, both fp32."""
        return -torch.exp(self.A_log.float()), self.D.float()

    def forward(self, x, delta, B, C, z, delta_bias) -> torch.Tensor:
        A, D = self.params()
        return self.scan(x, delta, A, B, C, D, z, delta_bias)


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, cfg: MambaConfig, dt_rank: int, backend: str = "auto",
                 fused_inner: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.backend = backend
        self.d_inner = cfg.expand * d_model
        self.d_state = cfg.d_state
        self.dt_rank = dt_rank
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=cfg.proj_bias)
        self.conv1d = CausalConv1d(self.d_inner, cfg.d_conv, bias=cfg.conv_bias, backend=backend)
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * cfg.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(self.d_inner, cfg))
        self.dt_proj.bias._no_reinit = True
        self.ssm = SSMCore(self.d_inner, cfg.d_state, backend)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=cfg.proj_bias)
        self.out_proj._is_residual_out = True
        # fused_inner: conv -> projections -> scan through kernels.mamba_inner (on CUDA: d xz written in place,
        # no concatenation); False runs the conv1d, projection and ssm modules in turn, each with its own backend
        # (benchmarks compare the two; gpu_step.py switches the scan's backend alone that way)
        self.fused_inner = fused_inner

    def _project(self, x: torch.Tensor):
        """Conv output x (b, De, L) -> the scan's (delta, B, C, delta_bias)."""
        x_dbl = kernels.linear_channels(x, self.x_proj.weight, backend=self.backend)  # (b, R + 2N, L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
        # (b, De, L); the bias goes to the scan
        delta = kernels.linear_channels(dt, self.dt_proj.weight, backend=self.backend)
        return delta, B, C, self.dt_proj.bias.float()

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list]:
        """hidden: (batch, L, d_model) -> (batch, L, d_model), no auxiliary outputs.

        Every projection writes the layout its consumer reads (kernels.linear_channels): the conv and the scan
        get channels-first tensors with a contiguous time axis, the out projection returns token-major rows,
        and no activation is transposed by a copy in either direction.
        """
        xz = kernels.linear_channels(hidden.transpose(1, 2), self.in_proj.weight, self.in_proj.bias,
                                     backend=self.backend)  # (b, 2De, L)
        if self.fused_inner:
            y = kernels.mamba_inner(xz, *self.conv1d.params_as(xz.dtype), *self.ssm.params(), self._project,
                                    self.backend)  # (b, De, L)
        else:  # the mixer's own modules in turn, each with its own backend (the same function)
            x, z = xz.split(self.d_inner, dim=1)
            x = self.conv1d(x)
            delta, B, C, delta_bias = self._project(x)
            y = self.ssm(x, delta, B, C, z, delta_bias)
        return kernels.linear_channels(y, self.out_proj.weight, self.out_proj.bias, out_tokens=True,
                                       backend=self.backend), []
