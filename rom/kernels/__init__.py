"""Kernels: the only place that touches optional accelerators (see registry for backends).

Public ops (docs/interfaces.md, "Kernels"): ``selective_scan``, ``causal_conv1d``, ``make_dispatch``,
``permute``, ``expert_matmul``, ``unpermute``, ``unpermute_to_channels``, ``permute_from_channels``,
``linear_channels``, ``mamba_inner``, ``resolve``. The pure-torch reference is the semantics;
``selective_scan_sequential`` is the per-timestep ground truth used by tests. Importing this package imports
torch only: triton, mamba_ssm and causal_conv1d are probed lazily on first use.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

from torch import Tensor

from rom.kernels.experts import (
    Dispatch,
    grouped_mm_op,
    make_dispatch,
    permute,
    permute_from_channels,
    unpermute,
    unpermute_to_channels,
)
from rom.kernels.layout import autocast_dtype, linear_channels
from rom.kernels.routing import route_top1, router_inputs
from rom.kernels.weight_cast import cast_weight, weight_grads_accumulate_in_place
from rom.kernels.registry import (
    BACKENDS,
    OPS,
    BackendUnavailableError,
    describe,
    get_impl,
    resolve,
)
from rom.kernels.scan_reference import selective_scan_reference, selective_scan_sequential
from rom.kernels.conv_reference import causal_conv1d_reference

__all__ = [
    "BACKENDS",
    "OPS",
    "BackendUnavailableError",
    "Dispatch",
    "autocast_dtype",
    "cast_weight",
    "causal_conv1d",
    "causal_conv1d_reference",
    "describe",
    "expert_matmul",
    "grouped_mm_op",
    "linear_channels",
    "make_dispatch",
    "mamba_inner",
    "mamba_inner_reference",
    "permute",
    "permute_from_channels",
    "resolve",
    "route_top1",
    "router_inputs",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_sequential",
    "unpermute",
    "unpermute_to_channels",
    "weight_grads_accumulate_in_place",
]


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan (semantics: rom.kernels.scan_reference). y: (batch, d_inner, L) in u's dtype.

    ``return_last_state=True`` (extension) returns ``(y, h_L)`` with h_L (batch, d_inner, N) in fp32; a
    backend whose function has no such argument is replaced by the reference for that call (logged once).
    """
    impl = get_impl("selective_scan", backend, u.device)
    if return_last_state:
        if not _accepts(impl, "return_last_state"):
            _log_once(f"selective_scan: {getattr(impl, '__module__', impl)} has no return_last_state; using reference")
            impl = selective_scan_reference
        return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True)
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@functools.cache
def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.cache
def _log_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = "silu",
    backend: str = "auto",
) -> Tensor:
    """Depthwise causal conv1d: x (batch, d, L), weight (d, width) -> (batch, d, L), then activation."""
    return get_impl("causal_conv1d", backend, x.device)(x, weight, bias, activation)


def expert_matmul(x_perm: Tensor, weight: Tensor, dispatch: Dispatch, backend: str = "auto") -> Tensor:
    """Per-expert projection of permuted rows: (T*k, d_in) x (E, d_in, d_out) -> (T*k, d_out)."""
    return get_impl("expert_matmul", backend, x_perm.device)(x_perm, weight, dispatch)


def mamba_inner_reference(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                          project: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]],
                          backend: str = "auto") -> Tensor:
    """A mixer's inner path, composed of the public ops (the semantics).

    xz (batch, 2 De, L): the in-projection's output, x half then z half. y = scan(SiLU(conv(x)), *project(x_conv),
    z) with softplus on delta, (batch, De, L); ``project(x_conv)`` -> (delta, B, C, delta_bias) is the mixer's
    x_proj / dt_proj.
    """
    x, z = xz.split(conv_weight.shape[0], dim=1)
    x = causal_conv1d(x, conv_weight, conv_bias, activation="silu", backend=backend)
    delta, B, C, delta_bias = project(x)
    return selective_scan(x, delta, A, B, C, D, z, delta_bias, delta_softplus=True, backend=backend)


def mamba_inner(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                project: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]],
                backend: str = "auto") -> Tensor:
    """``mamba_inner_reference``'s contract; on CUDA the Triton path writes the conv's and the scan's gradients
    into the halves of one d xz buffer (rom.kernels.inner_path)."""
    impl = get_impl("mamba_inner", backend, xz.device)
    return impl(xz, conv_weight, conv_bias, A, D, project, backend)
