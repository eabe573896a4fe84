"""The RoM layer's inner path (conv -> x / dt projections -> scan) on the expert-sorted rows, in Triton.

Under shared top-1 routing the in-projection's grouped GEMM writes each token's x and z halves as one row of
``xz_rows`` (T, 2 De), rows sorted by expert, and the out-projection's grouped GEMM reads y as rows in the same
order. The composed path (``rom.kernels.inner_from_rows_reference``) moves them to and from the channels-first
layout the conv and the scan work in: four layout passes per layer step, plus the concatenation of the x and
z gradients, 0.28 ms of a 4.6 ms RoM layer step at d_model 1024, 8 x 2048 tokens (H200,
benchmarks/results/gpu_layer_kernels_h200.json). Here nothing moves:

- forward: the conv reads x, and the scan reads z and writes y, through the row index (token (b, t) is row
  ``inverse_index[b * L + t]``; ``triton_support.step_rows``);
- backward: the scan writes dz into the right half of one (T, 2 De) buffer and the conv writes dx into its
  left half; that buffer is the gradient of ``xz_rows``, no concatenation and no copy.

The buffer passes from the scan's backward to the conv's through a ``_RowsGradLink`` that only these two
autograd nodes share (both are made inside ``inner_from_rows_triton``). The engine runs the scan's node first:
the conv's output is the scan's input u. The scan's node returns no gradient for ``xz_rows``; the conv's
returns the whole buffer. Top-1 only (with k > 1 a token's rows are summed, and each row would need the
gradient of the sum); under ``torch.compile`` the composed path runs instead.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from rom.kernels.experts import Dispatch
from rom.kernels.triton_conv import conv_backward, conv_forward
from rom.kernels.triton_scan import _check_inputs, _scan_backward_v2, _scan_forward_v2
from rom.kernels.triton_support import check_launchable

# project(x) -> (delta, B, C, delta_bias): the layer's x_proj / dt_proj between the conv and the scan
Project = Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]]


class _RowsGradLink:
    """The gradient of ``xz_rows`` under construction: the scan's backward puts it (dz half written), the conv's
    backward takes it (and writes the dx half)."""

    def __init__(self) -> None:
        self.grad: Tensor | None = None

    def put(self, grad: Tensor) -> None:
        self.grad = grad

    def take(self, xz_rows: Tensor, d_inner: int) -> Tensor:
        grad, self.grad = self.grad, None
        if grad is None:  # the scan's output got no gradient, so its node did not run: dz is zero
            grad = torch.empty_like(xz_rows)
            grad[:, d_inner:].zero_()
        return grad


class _ConvFromRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, xz_rows: Tensor, weight: Tensor, bias: Tensor | None, rows_index: Tensor, batch: int,
                seq_len: int, link: _RowsGradLink) -> Tensor:  # type: ignore[override]
        d_inner = weight.shape[0]
        ctx.save_for_backward(xz_rows, weight, bias, rows_index)
        ctx.link = link
        return conv_forward(xz_rows[:, :d_inner], weight, bias, True, rows_index, (batch, seq_len))

    @staticmethod
    def backward(ctx: Any, dy: Tensor):  # type: ignore[override]
        xz_rows, weight, bias, rows_index = ctx.saved_tensors
        d_inner = weight.shape[0]
        grad = ctx.link.take(xz_rows, d_inner)
        _, dw, db = conv_backward(xz_rows[:, :d_inner], weight, bias, dy, True, rows_index, grad[:, :d_inner])
        return grad, dw, db, None, None, None, None


class _ScanToRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, xz_rows: Tensor,
                delta_bias: Tensor | None, rows_index: Tensor, link: _RowsGradLink,
                needs_grad: bool) -> Tensor:  # type: ignore[override]
        d_inner = u.shape[1]
        out, ckpt, Bt, Ct = _scan_forward_v2(u, delta, A, B, C, D, xz_rows[:, d_inner:], delta_bias, True,
                                             store_ckpt=needs_grad, rows_index=rows_index)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, xz_rows, delta_bias, ckpt, Bt, Ct, rows_index)
            ctx.link = link
        return out

    @staticmethod
    def backward(ctx: Any, dout: Tensor):  # type: ignore[override]
        u, delta, A, B, C, D, xz_rows, delta_bias, ckpt, Bt, Ct, rows_index = ctx.saved_tensors
        d_inner = u.shape[1]
        if delta.stride(-1) != 1:  # as SelectiveScanTriton: a time-strided delta slows the backward kernel
            delta = delta.contiguous()
        if dout.stride(1) != 1:
            dout = dout.contiguous()
        grad = torch.empty_like(xz_rows)  # dz goes in its right half here, dx in its left half in the conv's node
        du, ddelta, dA, dB, dC, dD, _, dbias = _scan_backward_v2(
            dout, u, delta, A, Bt, Ct, B, C, D, xz_rows[:, d_inner:], delta_bias, True, ckpt,
            rows_index=rows_index, dz_rows=grad[:, d_inner:])
        ctx.link.put(grad)
        return du, ddelta, dA, dB, dC, dD, None, dbias, None, None, None


def _check_rows(xz_rows: Tensor, dispatch: Dispatch, batch: int, seq_len: int, conv_weight: Tensor) -> None:
    check_launchable(xz_rows, "inner_from_rows_triton")
    d_inner = conv_weight.shape[0]
    if dispatch.top_k != 1:
        raise ValueError(f"inner_from_rows_triton: top-1 routing only, got top_k={dispatch.top_k}")
    if batch * seq_len != dispatch.num_tokens:
        raise ValueError(f"inner_from_rows_triton: batch*seq_len={batch}*{seq_len} != tokens={dispatch.num_tokens}")
    if xz_rows.dim() != 2 or tuple(xz_rows.shape) != (dispatch.num_tokens, 2 * d_inner) or xz_rows.stride(1) != 1:
        raise ValueError(f"inner_from_rows_triton: xz_rows must be (tokens={dispatch.num_tokens}, 2*d_inner="
                         f"{2 * d_inner}) with unit channel stride, got {tuple(xz_rows.shape)} strides "
                         f"{xz_rows.stride()}")


def inner_from_rows_triton(xz_rows: Tensor, dispatch: Dispatch, batch: int, seq_len: int, conv_weight: Tensor,
                           conv_bias: Tensor | None, A: Tensor, D: Tensor, project: Project,
                           backend: str = "auto") -> Tensor:
    """xz_rows (T, 2 De) -> y rows (T, De) in the same expert-sorted order; contract of
    ``rom.kernels.inner_from_rows_reference``."""
    if dispatch.top_k != 1 or torch.compiler.is_compiling() or torch.jit.is_tracing():
        from rom.kernels import inner_from_rows_reference  # the package imports this module lazily

        return inner_from_rows_reference(xz_rows, dispatch, batch, seq_len, conv_weight, conv_bias, A, D, project,
                                         backend)
    _check_rows(xz_rows, dispatch, batch, seq_len, conv_weight)
    rows_index = dispatch.inverse_index
    link = _RowsGradLink()
    x = _ConvFromRows.apply(xz_rows, conv_weight, conv_bias, rows_index, batch, seq_len, link)
    delta, B, C, delta_bias = project(x)
    _check_inputs(x, delta, A, B, C, D, None, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, delta, A, B, C, D, xz_rows, delta_bias))
    return _ScanToRows.apply(x, delta, A, B, C, D, xz_rows, delta_bias, rows_index, link, needs_grad)


__all__ = ["inner_from_rows_triton"]
