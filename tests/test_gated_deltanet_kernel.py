"""The gated delta rule's chunked reference (rom.kernels.reference.gated_delta) against the per-step recurrence
in float64, forward and backward, and against a recurrence written here from the paper's equation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom.kernels import get_impl
from rom.kernels.reference.gated_delta import (
    check_gated_delta_inputs,
    gated_delta_rule_reference,
    gated_delta_rule_sequential,
)


def _inputs(b=2, L=23, H=3, K=8, V=12, dtype=torch.float64, strong_decay=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, L, H, K, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(b, L, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(b, L, H, V, generator=gen, dtype=dtype)
    a = torch.randn(b, L, H, generator=gen, dtype=dtype) + (4.0 if strong_decay else 0.0)
    g = -F.softplus(a) * (8.0 if strong_decay else 1.0)
    beta = torch.rand(b, L, H, generator=gen, dtype=dtype)
    return q, k, v, g, beta


def _paper_recurrence(q, k, v, g, beta, scale):
    """S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t v_t k_t^T with S (V, K), o_t = S_t q_t (the paper's
    orientation: the transpose of the reference's state), one (batch, head) at a time."""
    b, L, H, K = q.shape
    V = v.shape[-1]
    o = torch.zeros(b, L, H, V, dtype=v.dtype)
    for i in range(b):
        for h in range(H):
            S = torch.zeros(V, K, dtype=v.dtype)
            for t in range(L):
                kt, vt, bt = k[i, t, h], v[i, t, h], beta[i, t, h]
                S = g[i, t, h].exp() * S @ (torch.eye(K, dtype=v.dtype) - bt * torch.outer(kt, kt))
                S = S + bt * torch.outer(vt, kt)
                o[i, t, h] = S @ (scale * q[i, t, h])
    return o


def test_sequential_matches_the_papers_equation():
    q, k, v, g, beta = _inputs(b=1, L=9, H=2, K=4, V=5)
    want = _paper_recurrence(q, k, v, g, beta, scale=0.7)
    torch.testing.assert_close(gated_delta_rule_sequential(q, k, v, g, beta, 0.7), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L,chunk", [(1, 8), (7, 8), (8, 8), (23, 8), (40, 16), (70, 64)])
@pytest.mark.parametrize("strong_decay", [False, True])
def test_chunked_forward_matches_sequential_float64(L, chunk, strong_decay):
    q, k, v, g, beta = _inputs(L=L, strong_decay=strong_decay)
    s0 = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    o, S = gated_delta_rule_reference(q, k, v, g, beta, 0.5, s0, True, chunk=chunk)
    o_ref, S_ref = gated_delta_rule_sequential(q, k, v, g, beta, 0.5, s0, True)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_ref, rtol=1e-10, atol=1e-10)


def test_chunked_backward_matches_sequential_float64():
    inputs = [t.requires_grad_() for t in _inputs(L=21)]
    s0 = torch.randn(2, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 21, 3, 12, dtype=torch.float64)
    wS = torch.randn(2, 3, 8, 12, dtype=torch.float64)

    def grads(fn, **kw):
        o, S = fn(*inputs, None, s0, True, **kw)
        return torch.autograd.grad((o * w).sum() + (S * wS).sum(), [*inputs, s0])

    for got, want in zip(grads(gated_delta_rule_reference, chunk=8), grads(gated_delta_rule_sequential)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_chunked_gradcheck():
    inputs = tuple(t.requires_grad_() for t in _inputs(b=1, L=6, H=2, K=3, V=4))
    assert torch.autograd.gradcheck(lambda *a: gated_delta_rule_reference(*a, chunk=4), inputs)


def test_float32_is_close_to_float64_and_keeps_dtype():
    q, k, v, g, beta = _inputs(L=130, K=16, V=16)
    want = gated_delta_rule_sequential(q, k, v, g, beta)
    got = gated_delta_rule_reference(*(t.float() for t in (q, k, v, g, beta)))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_the_op_table_resolves_to_the_reference_on_cpu():
    assert get_impl("gated_delta_rule", "auto", "cpu") is gated_delta_rule_reference
    assert get_impl("gated_delta_rule", "reference", "cpu") is gated_delta_rule_reference


def test_bad_shapes_name_the_argument():
    q, k, v, g, beta = _inputs()
    with pytest.raises(ValueError, match="beta must have shape"):
        check_gated_delta_inputs(q, k, v, g, beta[..., :1])
    with pytest.raises(ValueError, match="k must have q's shape"):
        gated_delta_rule_reference(q, k[..., :4], v, g, beta)
    with pytest.raises(ValueError, match="initial_state"):
        gated_delta_rule_reference(q, k, v, g, beta, None, torch.zeros(1))


def test_float32_strong_decay_long_chunks_stay_finite_and_accurate():
    """Decays of up to e^-100 a step: exp(G) underflows to zero inside a 64-step chunk (the true, negligible
    value); nothing overflows, because every exponent the chunked form takes is <= 0."""
    q, k, v, g, beta = _inputs(L=200, K=16, V=16, strong_decay=True)
    g = g * 3
    assert g.min() < -100
    want = gated_delta_rule_sequential(q, k, v, g, beta)
    inputs = [t.float().requires_grad_() for t in (q, k, v, g, beta)]
    got = gated_delta_rule_reference(*inputs)
    got.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
