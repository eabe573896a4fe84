"""References of the expert ops: the dispatch sort, the (un)permutations and the expert projection.

Public wrappers (autograd, dispatch through the op table): rom.kernels.experts. The ``Dispatch`` they pass
around is defined here, with the functions that read it.

* "dispatch": ``expert_positions_reference``, torch's stable radix sort of the token-slots by expert;
* "combine_rows" / "combine_rows_backward": the weighted sum of each token's k expert rows, and its gradients;
* "rows_to_channels" / "channels_to_rows": expert rows <-> channels-first (batch, C, L), each other's adjoint;
* "expert_matmul": ``expert_matmul_grouped`` (backend "reference"): torch's native grouped GEMM
  (``torch.nn.functional.grouped_mm`` when present, else ``torch._grouped_mm``; both dispatch to
  ``aten._grouped_mm``, see ``grouped_mm_op``), wrapped in an autograd.Function whose backward makes the
  incoming gradient contiguous (the op requires 16-byte aligned strides) and computes both gradients with
  grouped GEMMs as well. Supported dtypes (CPU, torch 2.13): float32, bfloat16, float16; the row stride of every
  operand must be a multiple of 16 bytes, so d_in and d_out not multiple of 16/itemsize are zero-padded (exact;
  costs a copy of the weight). Other dtypes (float64) or a torch without grouped GEMM fall back to the loop.
  ``expert_matmul_loop`` (backend "loop"): one matmul per expert over its row block; syncs once for the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

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


def slot_rows(y_perm: Tensor, inverse_index: Tensor, top_k: int) -> Tensor:
    """(T*k, d) expert rows -> (T, k, d): each token's k slot rows, gathered (no atomics)."""
    return y_perm.index_select(0, inverse_index).view(-1, top_k, y_perm.shape[-1])


def sum_slots(g: Tensor, weights: Tensor | None) -> Tensor:
    """(T, k, d) slot rows -> (T, d): their sum, weighted by ``weights`` (T, k) if given."""
    if weights is None:
        return g.sum(1) if g.shape[1] > 1 else g[:, 0]
    w = weights.to(g.dtype)
    return g[:, 0] * w if g.shape[1] == 1 else (g * w.unsqueeze(-1)).sum(1)


def combine_rows_reference(rows: Tensor, inverse_index: Tensor, weights: Tensor | None, top_k: int) -> Tensor:
    """(T*k, d) expert rows -> (T, d): out[t] = sum_j w[t, j] * rows[inverse_index[t*k + j]] (w = 1 if None)."""
    return sum_slots(slot_rows(rows, inverse_index, top_k), weights)


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
        slots = slot_rows(rows, inverse_index, top_k)  # recomputed: a gather is cheaper than keeping it
        grad_w = (slots.float() * grad.float().unsqueeze(1)).sum(-1).to(weights.dtype)
    return grad_rows, grad_w


# ------------------------------------------------------------------- expert rows <-> channels-first


def rows_to_channels_reference(src: Tensor, inverse_index: Tensor, top_k: int, batch: int, seq_len: int,
                               scale: float = 1.0) -> Tensor:
    """(batch*L*k, C) expert rows -> (batch, C, L): out[b, c, l] = scale * sum_j src[inverse_index[t*k+j], c]."""
    y = sum_slots(slot_rows(src, inverse_index, top_k), None)
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


__all__ = ["Dispatch", "GROUPED_MM_DTYPES", "channels_to_rows_reference", "combine_rows_backward_reference",
           "combine_rows_reference", "expert_matmul_grouped", "expert_matmul_loop", "expert_positions_reference",
           "grouped_mm_available", "grouped_mm_op", "rows_to_channels_reference", "slot_rows", "sum_slots"]
