"""Reference of the "mamba_inner" op: a mixer's inner path composed of a conv and a scan.

xz (batch, 2 De, L) is the in-projection's output, x half then z half:

    y = scan(SiLU(conv(x)), *project(x_conv), z) with softplus on delta       (batch, De, L)

``project(x_conv)`` -> (delta, B, C, delta_bias) is the mixer's x_proj / dt_proj. The conv and the scan are
passed in (rom.kernels.mamba_ops passes the "causal_conv1d" and "selective_scan" ops of the caller's backend),
so this composition needs no op table.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

# project(x) -> (delta, B, C, delta_bias): the mixer's x_proj / dt_proj between the conv and the scan
Project = Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]]
# conv(x, weight, bias, activation) -> y: the "causal_conv1d" op's contract
Conv = Callable[[Tensor, Tensor, Tensor | None, str | None], Tensor]
# scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> y: the "selective_scan" op's contract
Scan = Callable[..., Tensor]


def mamba_inner_composed(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                         project: Project, conv: Conv, scan: Scan) -> Tensor:
    """The inner path as ``conv`` then ``project`` then ``scan`` (module docstring)."""
    x, z = xz.split(conv_weight.shape[0], dim=1)
    x = conv(x, conv_weight, conv_bias, "silu")
    delta, B, C, delta_bias = project(x)
    return scan(x, delta, A, B, C, D, z, delta_bias, True)


__all__ = ["Conv", "Project", "Scan", "mamba_inner_composed"]
