"""The Mamba mixer's inner path (conv -> x / dt projections -> scan) on one in-projection tensor, in Triton.

Both mixers (dense and RoM) produce x and z as the two channel halves of one in-projection output ``xz``
(batch, 2 De, L). Split by autograd, their gradients come back separately (the conv's dx, the scan's dz) and
are concatenated into d xz: one more pass over the largest activation. Here the scan's backward writes dz into
the z half of one (batch, 2 De, L) buffer and the conv's backward writes dx into its x half; the buffer is d xz,
with no concatenation. The conv's output u has two gradients, the scan's du and the one through x_proj;
autograd would add them (one more pass over u). The scan's du goes to the conv's backward instead, which adds it
to the other inside its kernel.

The buffer and du pass from the scan's backward to the conv's through a ``_GradLink`` that only these two autograd
nodes share (both are made in ``mamba_inner_triton``). The engine runs the scan's node first: the conv's output
is the scan's input u. The scan's node returns no gradient for ``xz`` or u; the conv's returns the whole buffer.
Under ``torch.compile`` or tracing the composed path (rom.kernels.reference.inner) runs instead.

The costs avoided, and a variant that kept the RoM layer's activations in the expert-sorted rows and measured
slower, are in docs/gpu_kernels.md ("Measurements behind choices in the kernel code").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rom.kernels.reference.inner import Conv, Project, Scan, mamba_inner_composed
from rom.kernels.triton_conv import causal_conv1d_triton, conv_backward, conv_forward
from rom.kernels.triton_scan import selective_scan_triton
from rom.kernels.triton_scan_bwd import scan_backward_v2
from rom.kernels.triton_scan_common import check_inputs
from rom.kernels.triton_scan_fwd import scan_forward_v2
from rom.kernels.triton_support import check_launchable


class _GradLink:
    """d xz under construction and the scan's du: the scan's backward puts them (z half written), the conv's
    backward takes them (and writes the x half, adding du to its own output gradient)."""

    def __init__(self) -> None:
        self.grad: Tensor | None = None
        self.du: Tensor | None = None

    def put(self, grad: Tensor, du: Tensor) -> None:
        self.grad, self.du = grad, du

    def take(self, xz: Tensor, d_inner: int) -> tuple[Tensor, Tensor | None]:
        grad, du, self.grad, self.du = self.grad, self.du, None, None
        if grad is None:  # the scan's output got no gradient, so its node did not run: dz and du are zero
            grad = torch.empty_like(xz, memory_format=torch.contiguous_format)
            grad[:, d_inner:].zero_()
        return grad, du


class _ConvOnXHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, xz: Tensor, weight: Tensor, bias: Tensor | None,
                link: _GradLink) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(xz, weight, bias)
        ctx.link = link
        return conv_forward(xz[:, : weight.shape[0]], weight, bias, True)

    @staticmethod
    def backward(ctx: Any, dy: Tensor):  # type: ignore[override]
        xz, weight, bias = ctx.saved_tensors
        d_inner = weight.shape[0]
        grad, du = ctx.link.take(xz, d_inner)
        _, dw, db = conv_backward(xz[:, :d_inner], weight, bias, dy, True, dx_out=grad[:, :d_inner], dy_extra=du)
        return grad, dw, db, None


class _ScanOnZHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, xz: Tensor,
                delta_bias: Tensor | None, link: _GradLink, needs_grad: bool) -> Tensor:  # type: ignore[override]
        d_inner = u.shape[1]
        out, ckpt, Bt, Ct = scan_forward_v2(u, delta, A, B, C, D, xz[:, d_inner:], delta_bias, True,
                                            store_ckpt=needs_grad)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, xz, delta_bias, ckpt, Bt, Ct)
            ctx.link = link
        return out

    @staticmethod
    def backward(ctx: Any, dout: Tensor):  # type: ignore[override]
        u, delta, A, B, C, D, xz, delta_bias, ckpt, Bt, Ct = ctx.saved_tensors
        d_inner = u.shape[1]
        if delta.stride(-1) != 1:  # as SelectiveScanTriton: a time-strided delta slows the backward kernel
            delta = delta.contiguous()
        grad = torch.empty_like(xz, memory_format=torch.contiguous_format)  # dz here, dx in the conv's node
        du, ddelta, dA, dB, dC, dD, _, dbias = scan_backward_v2(
            dout, u, delta, A, Bt, Ct, B, C, D, xz[:, d_inner:], delta_bias, True, ckpt, dz_out=grad[:, d_inner:])
        ctx.link.put(grad, du)
        return None, ddelta, dA, dB, dC, dD, None, dbias, None, None


def mamba_inner_triton(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, A: Tensor, D: Tensor,
                       project: Project, conv: Conv | None = None, scan: Scan | None = None) -> Tensor:
    """xz (batch, 2 De, L) -> y (batch, De, L); contract of ``rom.kernels.mamba_inner_reference``.

    Under ``torch.compile`` or tracing the path is composed of ``conv`` and ``scan`` instead (what
    rom.kernels.mamba_inner passes: the caller's backend's ops; by default the Triton conv and scan).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return mamba_inner_composed(xz, conv_weight, conv_bias, A, D, project, conv or causal_conv1d_triton,
                                    scan or selective_scan_triton)
    check_launchable(xz, "mamba_inner_triton")
    d_inner = conv_weight.shape[0]
    if xz.dim() != 3 or xz.shape[1] != 2 * d_inner or xz.stride(-1) != 1:
        raise ValueError(f"mamba_inner_triton: xz must be (batch, 2*d_inner={2 * d_inner}, L) with unit time "
                         f"stride, got {tuple(xz.shape)} strides {xz.stride()}")
    link = _GradLink()
    x = _ConvOnXHalf.apply(xz, conv_weight, conv_bias, link)
    delta, B, C, delta_bias = project(x)
    check_inputs(x, delta, A, B, C, D, None, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, delta, A, B, C, D, xz, delta_bias))
    return _ScanOnZHalf.apply(x, delta, A, B, C, D, xz, delta_bias, link, needs_grad)


__all__ = ["mamba_inner_triton"]
