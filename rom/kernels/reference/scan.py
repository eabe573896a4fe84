"""Pure-torch Mamba-1 selective scan: the semantics every other backend must match.

Semantics (identical to mamba_ssm's ``selective_scan_ref``)::

    delta <- delta + delta_bias[:, None]              (if delta_bias given)
    delta <- softplus(delta)                          (if delta_softplus)
    h_t    = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h_0 = 0, per (batch, d, n)
    y_t    = sum_n C_t[n] * h_t[n] + D * u_t
    y     *= silu(z)                                  (if z given)

Shapes: u, delta, z: (batch, d_inner, L); A: (d_inner, N), expected <= 0 (it is -exp(A_log));
B, C: (batch, N, L); D, delta_bias: (d_inner,). y has u's dtype; the state math runs in float32 (float64
when the inputs are float64).

Two implementations:

* ``selective_scan_reference``: a chunked scan, fast enough to train on CPU, differentiated by autograd.
  The time axis is cut into chunks of ``CHUNK`` steps. Inside a chunk the recurrence is solved in closed form
  with log-space cumulative decays ``S_t = sum_{s<=t} delta_s A`` (one ``cumsum``)::

      h_t = exp(S_t - M) * cumsum_s( exp(M - S_s) * x_s )        x_s = delta_s B_s u_s

  and the chunks are chained by the same scan applied recursively to the per-chunk (total decay, end state)
  pairs, then ``h_t += exp(S_t) * h_end(previous chunk)``. No Python loop over time at all: the recursion has
  log_CHUNK(L) levels, each a handful of whole-tensor ops.

  Numerical range: the naive form ``exp(S_t) * cumsum(exp(-S_s) x_s)`` overflows float32 as soon as a chunk's
  total decay exceeds ~88 (one step with delta*|A| = 100 is enough). Two things keep every exponent bounded
  by an "exponent budget" (60 in float32, 500 in float64): (1) the exponents are taken relative to the
  chunk's midpoint ``M``, so they span at most ``chunk // 2`` steps of decay; (2) each step's log decay (and
  every per-chunk total decay on the higher levels) is floored at ``-budget / (chunk // 2)``: -15 in float32
  with the default chunk of 8. A step decaying by e^-15 or more forgets its state to about float32
  resolution (e^-15 = 3e-7), so the floor changes h by at most that fraction of the state's size, and its
  gradient by as little; in float64 the floor (-125) is never reached by sane inputs. Factors stay within
  e^+-60 (x may reach ~1e12 before anything overflows); exp(S) of the carry may underflow to zero, which is
  harmless (it is the true, negligible value).

  Speed on CPU is bound by memory traffic, not arithmetic: the (batch, d_inner, L, N) intermediates are
  processed in channel blocks of ``BLOCK_BYTES`` (unblocked, every intermediate is a fresh page-faulted
  allocation and the scan is several times slower). CHUNK=8 / 8 MiB blocks were chosen by measurement with
  benchmarks/cpu_scan.py (docs/gpu_kernels.md has the timings; chunk 16 is faster but its decay floor of -7.5
  costs 1.6e-4 relative error).

* ``selective_scan_sequential``: the plain per-timestep loop in whatever dtype it is given (tests run it in
  float64 as ground truth).

``return_last_state=True`` (an extension of the contract for later inference) makes both return
``(y, last_state)`` with ``last_state`` the state h_L of shape (batch, d_inner, N) in the state dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 8  # steps per chunk, chosen by measurement (see module docstring)
BLOCK_BYTES = 8 << 20  # channel-block size of the (b, c, L, N) intermediates, chosen by measurement
EXPONENT_BUDGET = {torch.float32: 60.0, torch.float64: 500.0}  # largest |exponent| taken inside a chunk


def decay_floor(dtype: torch.dtype, chunk: int = CHUNK) -> float:
    """Per-step log-decay floor that keeps chunk exponents within the budget (15 for float32, chunk 8)."""
    return EXPONENT_BUDGET[dtype] / (chunk // 2)


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    """Raise ValueError naming the argument whose shape breaks the contract."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, d_inner, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError(f"selective_scan: sequence length must be >= 1, got u of shape {tuple(u.shape)}")
    expected = {
        "delta": (delta, (batch, dim, length)),
        "z": (z, (batch, dim, length)),
        "D": (D, (dim,)),
        "delta_bias": (delta_bias, (dim,)),
    }
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (d_inner={dim}, N), got shape {tuple(A.shape)}")
    n = A.shape[1]
    expected["B"] = (B, (batch, n, length))
    expected["C"] = (C, (batch, n, length))
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(t.shape)}")


def _state_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def chunked_states(log_decay: Tensor, x: Tensor, chunk: int, floor: float) -> Tensor:
    """All states of h_t = exp(log_decay_t) * h_{t-1} + x_t (h_0 = 0) along dim -2.

    log_decay, x: (..., L, N) with log_decay already floored at ``-floor``. Returns h (..., L, N).
    Exponents stay within +-floor*(chunk//2) thanks to the midpoint reference.
    """
    length = x.shape[-2]
    if length == 1:
        return x
    pad = (-length) % chunk
    if pad:  # decay 0 / input 0 at the end: does not touch earlier states
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    n_chunks = (length + pad) // chunk
    log_decay = log_decay.unflatten(-2, (n_chunks, chunk))
    x = x.unflatten(-2, (n_chunks, chunk))
    cum = log_decay.cumsum(-2)  # S_t within the chunk, <= 0
    mid_index = (chunk - 1) // 2
    mid = cum[..., mid_index : mid_index + 1, :]  # reference point M
    rel = cum - mid
    scale = torch.exp(rel)  # exp(S_t - M)
    acc = torch.cumsum(x * torch.exp(-rel), dim=-2)  # sum_s exp(M - S_s) x_s
    if n_chunks > 1:
        ends = scale[..., -1, :] * acc[..., -1, :]  # each chunk's end state from zero
        chunk_decay = cum[..., -1, :].clamp_min(-floor)
        states = chunked_states(chunk_decay, ends, chunk, floor)  # true state at each chunk's end
        carry = F.pad(states[..., :-1, :], (0, 0, 1, 0))  # state entering each chunk
        # h_t += exp(S_t) carry = exp(S_t - M) * exp(M) carry: folded into acc before the one multiply
        acc = acc + torch.exp(mid) * carry.unsqueeze(-2)
    h = scale * acc
    return h.flatten(-3, -2)[..., :length, :]


def _scan_channels(
    delta: Tensor, u: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, chunk: int, floor: float
) -> tuple[Tensor, Tensor]:
    """C.h for one block of channels: delta, u (b, c, L); A (c, N); Bt, Ct (b, 1, L, N). -> y, h_L."""
    log_decay = (delta.unsqueeze(-1) * A.unsqueeze(1)).clamp_min(-floor)  # (b, c, L, N)
    x = (delta * u).unsqueeze(-1) * Bt  # (b, c, L, N)
    h = chunked_states(log_decay, x, chunk, floor)
    return (h * Ct).sum(-1), h[:, :, -1, :]


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int = CHUNK,
    block_bytes: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked selective scan (see module docstring); autograd provides the backward.

    The (batch, d_inner, L, N) state tensors are processed in blocks of channels of about ``block_bytes``
    each (default ``BLOCK_BYTES``; 0 = one block). Blocking changes no result; on CPU it avoids a fresh
    page-faulted allocation for every huge intermediate, which otherwise costs more than the arithmetic.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if chunk < 2:
        raise ValueError(f"selective_scan_reference: chunk must be >= 2, got {chunk}")
    dtype = _state_dtype(u)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    floor = decay_floor(dtype, chunk)
    batch, dim, length = u.shape
    n = A.shape[1]
    Bt = B.to(dtype).transpose(1, 2).unsqueeze(1)  # (b, 1, L, N)
    Ct = C.to(dtype).transpose(1, 2).unsqueeze(1)
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    per_channel = batch * length * n * torch.finfo(dtype).bits // 8
    channels = dim if block_bytes <= 0 else max(1, min(dim, block_bytes // per_channel))
    blocks = [
        _scan_channels(d_blk, u_blk, a_blk, Bt, Ct, chunk, floor)
        for d_blk, u_blk, a_blk in zip(
            delta.split(channels, 1), u.to(dtype).split(channels, 1), A.to(dtype).split(channels, 0)
        )
    ]
    y = blocks[0][0] if len(blocks) == 1 else torch.cat([blk[0] for blk in blocks], dim=1)
    y = _finish(y, u, D, z).to(u.dtype)
    if return_last_state:
        last = blocks[0][1] if len(blocks) == 1 else torch.cat([blk[1] for blk in blocks], dim=1)
        return y, last
    return y


def selective_scan_sequential(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Plain per-timestep loop in the inputs' own dtype: the ground truth for tests."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = u.dtype
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    decay = torch.exp(delta.unsqueeze(-1) * A.to(dtype).unsqueeze(1))  # (b, d, L, N)
    x = (delta * u).unsqueeze(-1) * B.to(dtype).transpose(1, 2).unsqueeze(1)
    Ct = C.to(dtype).transpose(1, 2).unsqueeze(1)  # (b, 1, L, N)
    # unbind once: indexing [:, :, t] per step would make autograd scatter into a full-size zero tensor
    # for every step in the backward (quadratic in L)
    steps = zip(decay.unbind(2), x.unbind(2), Ct.unbind(2))
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for decay_t, x_t, c_t in steps:
        h = decay_t * h + x_t
        ys.append((h * c_t).sum(-1))
    y = _finish(torch.stack(ys, dim=-1), u, D, z).to(u.dtype)
    if return_last_state:
        return y, h
    return y
