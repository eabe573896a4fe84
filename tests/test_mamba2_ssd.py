"""Mamba-2's chunked SSD scan (rom.kernels.reference.ssd) against a per-step recurrence in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom.kernels.ssd_ops import ssd_scan


def ssd_sequential(x, dt, A, B, C, D, dt_bias):
    """The recurrence itself: S_t = exp(delta_t A) S_{t-1} + delta_t x_t B_t^T, y_t = S_t C_t + D x_t."""
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    group = torch.arange(H) // (H // G)
    delta = F.softplus(dt + dt_bias)  # (b, L, H)
    S = torch.zeros(b, H, P, N, dtype=x.dtype)
    ys = []
    for t in range(L):
        Bt, Ct = B[:, t, group], C[:, t, group]  # (b, H, N)
        decay = torch.exp(delta[:, t] * A)[:, :, None, None]
        S = decay * S + (delta[:, t, :, None] * x[:, t])[..., None] * Bt[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ct) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1)


def _inputs(b=2, L=37, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    x = torch.randn(b, L, H, P, generator=g, **f64)
    dt = torch.randn(b, L, H, generator=g, **f64)
    A = -torch.rand(H, generator=g, **f64) * 4 - 0.1
    B = torch.randn(b, L, G, N, generator=g, **f64)
    C = torch.randn(b, L, G, N, generator=g, **f64)
    D = torch.randn(H, generator=g, **f64)
    dt_bias = torch.randn(H, generator=g, **f64)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, dt_bias)]


@pytest.mark.parametrize("chunk", [1, 4, 8, 37, 64])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_chunked_scan_equals_the_recurrence_forward_and_backward(chunk, groups):
    args = _inputs(G=groups)
    want = ssd_sequential(*args)
    got = ssd_scan(*args[:5], args[5], args[6], chunk, backend="reference")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(want)
    g_want = torch.autograd.grad(want, args, grad)
    g_got = torch.autograd.grad(got, args, grad)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_long_decay_stays_finite_in_fp32():
    """Cumulative decays only within a chunk: a strongly decaying, long sequence stays finite."""
    x, dt, A, B, C, D, dt_bias = (t.detach().float() for t in _inputs(L=300, G=1))
    y = ssd_scan(x, dt + 5.0, A * 10, B, C, D, dt_bias, 64, backend="reference")
    assert torch.isfinite(y).all()
    want = ssd_sequential(*(t.double() for t in (x, dt + 5.0, A * 10, B, C, D, dt_bias)))
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)


def test_optional_D_and_bias_and_bad_groups():
    x, dt, A, B, C, D, dt_bias = (t.detach() for t in _inputs(G=2))
    want = ssd_sequential(x, dt, A, B, C, torch.zeros_like(D), torch.zeros_like(dt_bias))
    torch.testing.assert_close(ssd_scan(x, dt, A, B, C, None, None, 8, backend="reference"), want)
    with pytest.raises(ValueError, match="not divisible into 3 groups"):
        ssd_scan(x, dt, A, B[:, :, :1].expand(-1, -1, 3, -1), C[:, :, :1].expand(-1, -1, 3, -1), D, dt_bias, 8,
                 backend="reference")
