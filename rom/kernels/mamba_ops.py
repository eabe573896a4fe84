"""The Mamba mixer's kernel ops: selective scan, causal conv1d, and the inner path composed of them.

Each function looks its op's implementation up in the op table (rom.kernels.registry) for ``backend`` and the
input's device, and calls it (the implementations check their inputs). References: rom.kernels.reference.scan /
conv / inner.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

from torch import Tensor

from rom.kernels.reference.inner import Conv, Project, Scan, mamba_inner_composed
from rom.kernels.reference.scan import selective_scan_reference
from rom.kernels.registry import get_impl


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
    """Mamba-1 selective scan (semantics: rom.kernels.reference.scan). y: (batch, d_inner, L) in u's dtype.

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


def _conv_and_scan(backend: str) -> tuple[Conv, Scan]:
    """The "causal_conv1d" and "selective_scan" ops of ``backend``, each resolved when it is called."""

    def conv(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> Tensor:
        return causal_conv1d(x, weight, bias, activation, backend)

    def scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
             delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
        y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)
        return y  # type: ignore[return-value]

    return conv, scan


def mamba_inner_reference(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                          project: Project, backend: str = "auto") -> Tensor:
    """A mixer's inner path, composed of the public ops (the semantics).

    xz (batch, 2 De, L): the in-projection's output, x half then z half. y = scan(SiLU(conv(x)), *project(x_conv),
    z) with softplus on delta, (batch, De, L); ``project(x_conv)`` -> (delta, B, C, delta_bias) is the mixer's
    x_proj / dt_proj. The conv and the scan run on ``backend``.
    """
    return mamba_inner_composed(xz, conv_weight, conv_bias, A, D, project, *_conv_and_scan(backend))


def mamba_inner(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                project: Project, backend: str = "auto") -> Tensor:
    """``mamba_inner_reference``'s contract; on CUDA the Triton path writes the conv's and the scan's gradients
    into the halves of one d xz buffer (rom.kernels.inner_path). Every implementation of the op gets the conv
    and the scan of ``backend`` to compose (the reference always, the Triton path under compile / tracing)."""
    impl = get_impl("mamba_inner", backend, xz.device)
    return impl(xz, conv_weight, conv_bias, A, D, project, *_conv_and_scan(backend))


__all__ = ["causal_conv1d", "mamba_inner", "mamba_inner_reference", "selective_scan"]
