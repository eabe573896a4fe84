"""Sort-based expert dispatch (megablocks-style) and the expert projection.

Decomposition: top-k expert ids (T, k) -> stable sort of the T*k (token, slot) pairs by expert -> tokens per
expert (a scatter-add histogram) -> cumulative end offsets -> gather the rows (``permute``) -> one grouped
GEMM over contiguous per-expert row blocks (``expert_matmul``) -> gather back to (token, slot) order and sum
the k slots, optionally weighted (``unpermute``).

No host synchronisation anywhere on this path (no .item(), .tolist(), .cpu(), data-dependent shapes) except
in the per-expert loop fallback, which must split rows by host-side counts. Empty experts (zero rows) are
fine everywhere.

expert_matmul implementations:
* "grouped" (backend "reference"): torch's native grouped GEMM (``torch.nn.functional.grouped_mm`` when
  present, else ``torch._grouped_mm``; both dispatch to ``aten._grouped_mm``, see ``grouped_mm_op``), wrapped
  in an autograd.Function whose backward makes the incoming gradient contiguous (the op requires 16-byte
  aligned strides) and computes both gradients with grouped GEMMs as well. Supported dtypes (CPU, torch
  2.13): float32, bfloat16, float16; the row stride of every operand must be a multiple of 16 bytes, so
  d_in and d_out not multiple of 16/itemsize are zero-padded (exact; costs a copy of the weight). Other dtypes
  (float64) or a torch without grouped GEMM fall back to the loop.
* "loop" (backend "loop"): one matmul per expert over its row block. Syncs once for the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rom.kernels.registry import get_impl

GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ALIGN_BYTES = 16


@dataclass(frozen=True)
class Dispatch:
    """Routing of T tokens x k slots to E experts, rows sorted by expert (stable).

    token_index: (T*k,) source token of each permuted row.
    slot_index: (T*k,) flat index into (T, k) of each permuted row.
    inverse_index: (T*k,) permuted row of each flat (T, k) slot (extension: the inverse of slot_index).
    tokens_per_expert: (E,) int64 rows per expert.
    offsets: (E,) int32 cumulative end offsets (the ``offs`` argument of grouped_mm).
    """

    token_index: Tensor
    slot_index: Tensor
    inverse_index: Tensor
    tokens_per_expert: Tensor
    offsets: Tensor
    num_tokens: int
    top_k: int
    num_experts: int


def expert_positions_reference(flat_ids: Tensor,
                               num_experts: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The "dispatch" op: (n,) expert ids -> slot_index (the stable sort's permutation), inverse_index,
    tokens_per_expert (E,) int64 and the cumulative end offsets (E,) int32. Torch ops, no host synchronisation."""
    # int32 keys: half the radix-sort passes of int64 (expert ids are small)
    _, slot_index = torch.sort(flat_ids.to(torch.int32), stable=True)
    rows = torch.arange(flat_ids.numel(), device=flat_ids.device)
    inverse_index = torch.empty_like(slot_index).scatter_(0, slot_index, rows)
    # histogram by scatter-add: unlike bincount it needs no max() on the host to size its output
    tokens_per_expert = torch.zeros(num_experts, dtype=torch.int64, device=flat_ids.device)
    tokens_per_expert.scatter_add_(0, flat_ids.long(), torch.ones_like(flat_ids, dtype=torch.int64))
    return slot_index, inverse_index, tokens_per_expert, tokens_per_expert.cumsum(0).to(torch.int32)


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


def _slots(y_perm: Tensor, inverse_index: Tensor, top_k: int) -> Tensor:
    """(T*k, d) expert rows -> (T, k, d): each token's k slot rows, gathered (no atomics)."""
    return y_perm.index_select(0, inverse_index).view(-1, top_k, y_perm.shape[-1])


def _combine_slots(g: Tensor, weights: Tensor | None) -> Tensor:
    """(T, k, d) slot rows -> (T, d): their sum, weighted by ``weights`` (T, k) if given."""
    if weights is None:
        return g.sum(1) if g.shape[1] > 1 else g[:, 0]
    w = weights.to(g.dtype)
    return g[:, 0] * w if g.shape[1] == 1 else (g * w.unsqueeze(-1)).sum(1)


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
        return _combine_slots(_slots(grad, inverse_index, ctx.top_k), None), None, None, None


def combine_rows_reference(rows: Tensor, inverse_index: Tensor, weights: Tensor | None, top_k: int) -> Tensor:
    """(T*k, d) expert rows -> (T, d): out[t] = sum_j w[t, j] * rows[inverse_index[t*k + j]] (w = 1 if None)."""
    return _combine_slots(_slots(rows, inverse_index, top_k), weights)


def combine_rows_backward_reference(grad: Tensor, rows: Tensor, inverse_index: Tensor, weights: Tensor | None,
                                    top_k: int, need_rows: bool,
                                    need_weights: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``combine_rows_reference`` for its rows (rows' dtype) and weights (weights' dtype, fp32 sums)."""
    grad_rows = grad_w = None
    if need_rows:
        g = grad.unsqueeze(1).expand(-1, top_k, -1)
        if weights is not None:
            g = g * weights.to(grad.dtype).unsqueeze(-1)
        g = g.reshape(-1, grad.shape[-1]).to(rows.dtype)
        grad_rows = torch.empty_like(g).index_copy_(0, inverse_index, g)  # row inverse_index[t*k+j] <- slot (t, j)
    if weights is not None and need_weights:
        slots = _slots(rows, inverse_index, top_k)  # recomputed: a gather is cheaper than keeping it
        grad_w = (slots.float() * grad.float().unsqueeze(1)).sum(-1).to(weights.dtype)
    return grad_rows, grad_w


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
        return _combine_slots(_slots(y_perm, dispatch.inverse_index, dispatch.top_k), weights)
    return _UnpermuteTokens.apply(y_perm, weights, dispatch.inverse_index, dispatch.top_k, backend)


# ------------------------------------------------------------------- expert rows <-> channels-first


def rows_to_channels_reference(src: Tensor, inverse_index: Tensor, top_k: int, batch: int, seq_len: int,
                               scale: float = 1.0) -> Tensor:
    """(batch*L*k, C) expert rows -> (batch, C, L): out[b, c, l] = scale * sum_j src[inverse_index[t*k+j], c]."""
    y = _combine_slots(_slots(src, inverse_index, top_k), None)
    if scale != 1.0:
        y = y * scale
    return y.view(batch, seq_len, -1).transpose(1, 2).contiguous()


def channels_to_rows_reference(src: Tensor, inverse_index: Tensor, top_k: int, scale: float = 1.0) -> Tensor:
    """(batch, C, L) -> (batch*L*k, C): row inverse_index[t*k+j] = scale * src[b, :, l] for every slot j."""
    batch, n_ch, seq_len = src.shape
    tok = src.transpose(1, 2).reshape(batch * seq_len, n_ch)
    if scale != 1.0:
        tok = tok * scale
    slots = tok.repeat_interleave(top_k, dim=0) if top_k > 1 else tok
    return torch.empty_like(slots).index_copy_(0, inverse_index, slots)


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


# ------------------------------------------------------------------------------------------ grouped GEMM


def _grouped_mm_fn() -> Callable[..., Tensor] | None:
    fn = getattr(F, "grouped_mm", None)
    if fn is None:
        fn = getattr(torch, "_grouped_mm", None)
    return fn


def grouped_mm_op() -> Any:
    """The aten op the grouped path ends up in (for a FlopCounterMode / fvcore formula), or None."""
    if _grouped_mm_fn() is None:
        return None
    return torch.ops.aten._grouped_mm


def grouped_mm_available() -> bool:
    return _grouped_mm_fn() is not None


class _GroupedMM(torch.autograd.Function):
    """out[rows of group e] = x[rows of group e] @ w[e]; gradients by grouped GEMMs on contiguous grads."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, offsets: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w, offsets)
        return _grouped_mm_fn()(x, w, offs=offsets)  # type: ignore[misc]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, w, offsets = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # incoming grads can be strided (e.g. from a transpose/expand)
        fn = _grouped_mm_fn()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = fn(grad_out, w.transpose(-2, -1), offs=offsets)  # type: ignore[misc]
        if ctx.needs_input_grad[1]:
            grad_w = fn(x.transpose(0, 1), grad_out, offs=offsets)  # (E, d_in, d_out); empty groups are 0
        return grad_x, grad_w, None


def _pad_to(t: Tensor, dim: int, multiple: int) -> Tensor:
    pad = (-t.shape[dim]) % multiple
    if pad == 0:
        return t
    spec = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, pad]
    return F.pad(t, spec)


def expert_matmul_grouped(x_perm: Tensor, weight: Tensor, dispatch: Dispatch) -> Tensor:
    """Grouped-GEMM expert projection; falls back to the loop for dtypes the op does not support."""
    x_perm, weight = _check_expert_inputs(x_perm, weight, dispatch)
    if not grouped_mm_available() or x_perm.dtype not in GROUPED_MM_DTYPES:
        return expert_matmul_loop(x_perm, weight, dispatch)
    d_out = weight.shape[2]
    multiple = _ALIGN_BYTES // x_perm.element_size()
    x = _pad_to(x_perm.contiguous(), 1, multiple)
    w = _pad_to(_pad_to(weight.contiguous(), 1, multiple), 2, multiple)
    out = _GroupedMM.apply(x, w, dispatch.offsets)
    if out.shape[1] != d_out:
        out = out[:, :d_out]
    return out


def expert_matmul_loop(x_perm: Tensor, weight: Tensor, dispatch: Dispatch) -> Tensor:
    """One matmul per expert over its contiguous row block (host sync for the counts)."""
    x_perm, weight = _check_expert_inputs(x_perm, weight, dispatch)
    counts = dispatch.tokens_per_expert.tolist()
    blocks = x_perm.split(counts, dim=0)
    return torch.cat([block @ weight[e] for e, block in enumerate(blocks)], dim=0)


def _check_expert_inputs(x_perm: Tensor, weight: Tensor, dispatch: Dispatch) -> tuple[Tensor, Tensor]:
    """Validate shapes; under autocast cast both operands to the autocast dtype (as F.linear would)."""
    rows = dispatch.num_tokens * dispatch.top_k
    if weight.dim() != 3 or weight.shape[0] != dispatch.num_experts:
        raise ValueError(
            f"expert_matmul: weight must be (num_experts={dispatch.num_experts}, d_in, d_out), "
            f"got {tuple(weight.shape)}"
        )
    if x_perm.dim() != 2 or tuple(x_perm.shape) != (rows, weight.shape[1]):
        raise ValueError(
            f"expert_matmul: x_perm must be (tokens*top_k={rows}, d_in={weight.shape[1]}), got {tuple(x_perm.shape)}"
        )
    device_type = x_perm.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return x_perm.to(dtype), weight.to(dtype)
    if x_perm.dtype != weight.dtype:
        raise ValueError(f"expert_matmul: x_perm dtype {x_perm.dtype} differs from weight dtype {weight.dtype}")
    return x_perm, weight
