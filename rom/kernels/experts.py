"""Sort-based expert dispatch (megablocks-style) and the expert projection: the public ops.

Decomposition: top-k expert ids (T, k) -> stable sort of the T*k (token, slot) pairs by expert -> tokens per
expert (a scatter-add histogram) -> cumulative end offsets -> gather the rows (``permute``) -> one grouped
GEMM over contiguous per-expert row blocks (``expert_matmul``) -> gather back to (token, slot) order and sum
the k slots, optionally weighted (``unpermute``).

No host synchronisation anywhere on this path (no .item(), .tolist(), .cpu(), data-dependent shapes) except
in the per-expert loop fallback, which must split rows by host-side counts. Empty experts (zero rows) are
fine everywhere.

The functions here validate, wrap autograd and look each op's implementation up in the op table
(rom.kernels.registry); the references, the ``Dispatch`` type and the grouped GEMM are in
rom.kernels.reference.experts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rom.kernels.reference.experts import (
    Dispatch,
    channels_to_rows_reference,
    grouped_mm_available,
    grouped_mm_op,
    rows_to_channels_reference,
    slot_rows,
    sum_slots,
)
from rom.kernels.registry import get_impl


def make_dispatch(expert_indices: Tensor, num_experts: int, backend: str = "auto") -> Dispatch:
    """Build the Dispatch for expert ids of shape (T, k) (int64) without any host synchronisation.

    The sort is the "dispatch" op of ``backend``: torch's radix sort (reference) or a two-kernel counting sort
    (Triton, rom.kernels.triton_dispatch); both are stable, so they give the same Dispatch.
    """
    if expert_indices.dim() != 2:
        raise ValueError(f"make_dispatch: expert_indices must be (tokens, top_k), got {tuple(expert_indices.shape)}")
    if expert_indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"make_dispatch: expert_indices must be int64 (or int32), got {expert_indices.dtype}")
    if num_experts < 1:
        raise ValueError(f"make_dispatch: num_experts must be >= 1, got {num_experts}")
    num_tokens, top_k = expert_indices.shape
    flat = expert_indices.reshape(-1)
    if flat.device.type == "cpu" and flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_experts):
        # value check only on CPU, where it costs no device synchronisation
        raise ValueError(
            f"make_dispatch: expert ids must lie in [0, {num_experts}), got range "
            f"[{int(flat.min())}, {int(flat.max())}]"
        )
    slot_index, inverse_index, tokens_per_expert, offsets = get_impl("dispatch", backend, flat.device)(
        flat, num_experts)
    token_index = slot_index if top_k == 1 else torch.div(slot_index, top_k, rounding_mode="floor")
    return Dispatch(
        token_index=token_index,
        slot_index=slot_index,
        inverse_index=inverse_index,
        tokens_per_expert=tokens_per_expert,
        offsets=offsets,
        num_tokens=num_tokens,
        top_k=top_k,
        num_experts=num_experts,
    )


def _check_rows(t: Tensor, dispatch: Dispatch, what: str) -> None:
    rows = dispatch.num_tokens * dispatch.top_k
    if t.dim() != 2 or t.shape[0] != rows:
        raise ValueError(f"{what} must be (tokens*top_k={rows}, d), got {tuple(t.shape)}")


# The autograd.Functions below take index tensors and plain scalars, not the Dispatch. Under a JIT trace
# (fvcore's FLOP count) they are bypassed for the same ops written in plain torch: the tracer fails
# ("unordered_map::at") on a Function given a size it derived from a traced tensor.


class _PermuteTokens(torch.autograd.Function):
    """Gather rows by expert; the backward is a gather too (no index_add, whose bf16 atomics are slow)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, token_index: Tensor, inverse_index: Tensor, top_k: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse_index)
        ctx.top_k = top_k
        return x.index_select(0, token_index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        (inverse_index,) = ctx.saved_tensors
        return sum_slots(slot_rows(grad, inverse_index, ctx.top_k), None), None, None, None


class _UnpermuteTokens(torch.autograd.Function):
    """Sum each token's k expert rows, optionally weighted (ops combine_rows / combine_rows_backward)."""

    @staticmethod
    def forward(ctx: Any, y_perm: Tensor, weights: Tensor | None, inverse_index: Tensor, top_k: int,
                backend: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(y_perm, weights, inverse_index)
        ctx.top_k, ctx.backend = top_k, backend
        return get_impl("combine_rows", backend, y_perm.device)(y_perm, inverse_index, weights, top_k)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        y_perm, weights, inverse_index = ctx.saved_tensors
        impl = get_impl("combine_rows_backward", ctx.backend, grad.device)
        grad_y, grad_w = impl(grad, y_perm, inverse_index, weights, ctx.top_k, ctx.needs_input_grad[0],
                              ctx.needs_input_grad[1])
        return grad_y, grad_w, None, None, None


def permute(x: Tensor, dispatch: Dispatch) -> Tensor:
    """(T, d) tokens -> (T*k, d) rows grouped by expert."""
    if x.dim() != 2 or x.shape[0] != dispatch.num_tokens:
        raise ValueError(f"permute: x must be (tokens={dispatch.num_tokens}, d), got {tuple(x.shape)}")
    if torch.jit.is_tracing():
        return x.index_select(0, dispatch.token_index)
    return _PermuteTokens.apply(x, dispatch.token_index, dispatch.inverse_index, dispatch.top_k)


def unpermute(y_perm: Tensor, dispatch: Dispatch, weights: Tensor | None = None, backend: str = "auto") -> Tensor:
    """(T*k, d) expert rows -> (T, d): each token's k rows summed, weighted by ``weights`` (T, k) if given.

    Gather-based (no atomics) in both directions: deterministic on every device. The Triton backend does
    each direction in one pass (rom.kernels.triton_combine).
    """
    _check_rows(y_perm, dispatch, "unpermute: y_perm")
    if weights is not None and tuple(weights.shape) != (dispatch.num_tokens, dispatch.top_k):
        raise ValueError(
            f"unpermute: weights must be (tokens, top_k)=({dispatch.num_tokens}, {dispatch.top_k}), "
            f"got {tuple(weights.shape)}"
        )
    if torch.jit.is_tracing():
        return sum_slots(slot_rows(y_perm, dispatch.inverse_index, dispatch.top_k), weights)
    return _UnpermuteTokens.apply(y_perm, weights, dispatch.inverse_index, dispatch.top_k, backend)


# ------------------------------------------------------------------- expert rows <-> channels-first


class _UnpermuteToChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y_perm: Tensor, inverse_index: Tensor, top_k: int, batch: int, seq_len: int, scale: float,
                backend: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse_index)
        ctx.top_k, ctx.scale, ctx.backend = top_k, scale, backend
        impl = get_impl("rows_to_channels", backend, y_perm.device)
        return impl(y_perm, inverse_index, top_k, batch, seq_len, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        (inverse_index,) = ctx.saved_tensors
        impl = get_impl("channels_to_rows", ctx.backend, grad.device)
        return impl(grad, inverse_index, ctx.top_k, ctx.scale), None, None, None, None, None, None


class _PermuteFromChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, inverse_index: Tensor, top_k: int, backend: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse_index)
        ctx.top_k, ctx.backend, ctx.shape = top_k, backend, x.shape
        return get_impl("channels_to_rows", backend, x.device)(x, inverse_index, top_k, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        (inverse_index,) = ctx.saved_tensors
        batch, _, seq_len = ctx.shape
        impl = get_impl("rows_to_channels", ctx.backend, grad.device)
        return impl(grad, inverse_index, ctx.top_k, batch, seq_len, 1.0), None, None, None


def unpermute_to_channels(y_perm: Tensor, dispatch: Dispatch, batch: int, seq_len: int, scale: float = 1.0,
                          backend: str = "auto") -> Tensor:
    """(T*k, C) expert rows -> (batch, C, L) channels-first, each token's k rows summed times ``scale``.

    For the 0/1-indicator branches under shared routing, whose combination weights are constants (1 for
    top-1 or ``sum``, 1/k for ``mean``): the layout change and the un-permutation in one pass.
    """
    _check_rows(y_perm, dispatch, "unpermute_to_channels: y_perm")
    if batch * seq_len != dispatch.num_tokens:
        raise ValueError(f"unpermute_to_channels: batch*seq_len={batch}*{seq_len} != tokens={dispatch.num_tokens}")
    if torch.jit.is_tracing():
        return rows_to_channels_reference(y_perm, dispatch.inverse_index, dispatch.top_k, batch, seq_len, scale)
    return _UnpermuteToChannels.apply(y_perm, dispatch.inverse_index, dispatch.top_k, batch, seq_len, float(scale),
                                      backend)


def permute_from_channels(x: Tensor, dispatch: Dispatch, backend: str = "auto") -> Tensor:
    """(batch, C, L) channels-first (any strides) -> (T*k, C) rows grouped by expert (the layout-aware permute)."""
    if x.dim() != 3 or x.shape[0] * x.shape[2] != dispatch.num_tokens:
        raise ValueError(f"permute_from_channels: x must be (batch, C, L) with batch*L={dispatch.num_tokens}, "
                         f"got {tuple(x.shape)}")
    if torch.jit.is_tracing():
        return channels_to_rows_reference(x, dispatch.inverse_index, dispatch.top_k)
    return _PermuteFromChannels.apply(x, dispatch.inverse_index, dispatch.top_k, backend)


def expert_matmul(x_perm: Tensor, weight: Tensor, dispatch: Dispatch, backend: str = "auto") -> Tensor:
    """Per-expert projection of permuted rows: (T*k, d_in) x (E, d_in, d_out) -> (T*k, d_out)."""
    return get_impl("expert_matmul", backend, x_perm.device)(x_perm, weight, dispatch)


__all__ = ["Dispatch", "expert_matmul", "grouped_mm_available", "grouped_mm_op", "make_dispatch", "permute",
           "permute_from_channels", "unpermute", "unpermute_to_channels"]
