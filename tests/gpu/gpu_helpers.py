"""Shared helpers for the GPU parity tests (CUDA only; the tests skip without it)."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F


def stable_seed(*parts: object) -> int:
    """A seed from a test case's parameters that is the same in every process (``hash`` of a str is not: Python
    randomises it per process, so a failing case could not be rerun with its inputs)."""
    return zlib.crc32(repr(parts).encode())


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere fails (returns inf)."""
    out64, ref64 = out.double(), ref.double()
    if not torch.isfinite(out64).all():
        return float("inf")
    scale = ref64.norm().item()
    if scale == 0.0:  # an exactly-zero true value (e.g. dA at L=1): judge the absolute error instead
        return (out64 - ref64).norm().item() / 1e-4
    return ((out64 - ref64).norm() / scale).item()


def poison_cuda_cache(n_bytes: int = 512 * 2**20) -> None:
    """Fill the caching allocator's free blocks with NaN so that torch.empty outputs start poisoned.

    A kernel that leaves an element unwritten then returns NaN there, which rel_err turns into a failure.
    """
    block = torch.full((n_bytes // 4,), float("nan"), device="cuda", dtype=torch.float32)
    del block


def selective_scan_f64(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Float64 sequential ground truth; the project's own (rom.kernels.reference.scan.selective_scan_sequential)
    when present."""
    try:
        from rom.kernels.reference.scan import selective_scan_sequential
    except ImportError:
        selective_scan_sequential = None
    args = [t.double() if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    if selective_scan_sequential is not None:
        return selective_scan_sequential(*args, delta_softplus=delta_softplus)
    u, delta, A, B, C, D, z, delta_bias = args
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def causal_conv1d_f64(x, weight, bias=None, activation="silu"):
    x, weight = x.double(), weight.double()
    bias = bias.double() if bias is not None else None
    y = F.conv1d(x, weight[:, None, :], bias, padding=weight.shape[1] - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(y) if activation is not None else y
