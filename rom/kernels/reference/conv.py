"""Pure-torch depthwise causal 1-D convolution (the Mamba conv1d), the semantics for every backend.

y[b, c, t] = bias[c] + sum_{k < width} weight[c, k] * x[b, c, t - (width - 1) + k]   (x[..., <0] = 0)
then the activation (None, or "silu" / "swish" which are the same function).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = (None, "silu", "swish")


def check_conv_inputs(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> None:
    """Raise ValueError naming the argument that breaks the contract."""
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (batch, d, L), got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d: weight must be (d={x.shape[1]}, width), got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"causal_conv1d: bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}")


def causal_conv1d_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = "silu"
) -> Tensor:
    """Depthwise causal conv: left padding width-1, groups=d; output (batch, d, L) in x's dtype."""
    check_conv_inputs(x, weight, bias, activation)
    width = weight.shape[1]
    y = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    if activation is not None:
        y = F.silu(y)
    return y
