"""References of the "upcast" and "upcast_add" ops (a weight gradient widened back to the weight's dtype;
used by rom.kernels.weight_cast and rom.kernels.layout)."""

from __future__ import annotations

import torch
from torch import Tensor


def upcast_reference(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype`` (a widening cast is exact)."""
    return t.to(dtype)


def upcast_add_reference(out: Tensor, t: Tensor) -> None:
    """``out += t`` in out's dtype (t widened first, exactly)."""
    out.add_(t.to(out.dtype))


__all__ = ["upcast_add_reference", "upcast_reference"]
