"""A bank of linear experts applied to permuted token-slots through the grouped GEMM kernel."""

from __future__ import annotations

import math

import torch
from torch import nn

from rom import kernels


class ExpertLinear(nn.Module):
    """Weight (E, d_in, d_out); each expert initialised as a dense nn.Linear(d_in, d_out) would be."""

    def __init__(self, num_experts: int, d_in: int, d_out: int, backend: str = "auto") -> None:
        super().__init__()
        self.num_experts, self.d_in, self.d_out = num_experts, d_in, d_out
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(num_experts, d_in, d_out))
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x_perm: torch.Tensor, dispatch: "kernels.Dispatch") -> torch.Tensor:
        """x_perm: (T*k, d_in) token-slots sorted by expert -> (T*k, d_out)."""
        # cast_weight: the backward casts the (8x dense-sized) bf16 weight gradient back with a fast kernel
        weight = kernels.cast_weight(self.weight, x_perm.dtype, self.backend)
        return kernels.expert_matmul(x_perm, weight, dispatch, backend=self.backend)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, d_in={self.d_in}, d_out={self.d_out}"
