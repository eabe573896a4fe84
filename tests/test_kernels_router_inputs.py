"""kernels.router_inputs (the cast tokens and the router logits, fused on GPU): the reference path equals plain
torch autograd, in float64 and under CPU bf16 autocast, and bad shapes raise."""

from __future__ import annotations

import pytest
import torch

from rom import kernels


def test_router_inputs_gradcheck_float64() -> None:
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)

    def both(x, w):
        h, logits = kernels.router_inputs(x, w, torch.float64, "reference")
        return h * 0.5, logits

    assert torch.autograd.gradcheck(both, (x, w))


def test_router_inputs_equals_plain_ops_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(33, 16, requires_grad=True)
    w = torch.randn(4, 16, requires_grad=True)
    gh, gl = torch.randn(33, 16).to(torch.bfloat16), torch.randn(33, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, logits = kernels.router_inputs(x, w, torch.bfloat16, "reference")
    assert h.dtype == torch.bfloat16 and logits.dtype == torch.float32
    torch.autograd.backward((h, logits), (gh, gl))
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    h2 = x2.to(torch.bfloat16)
    logits2 = (h2 @ w2.to(torch.bfloat16).t()).float()
    torch.autograd.backward((h2, logits2), (gh, gl))
    assert torch.equal(h, h2) and torch.equal(logits, logits2)
    assert torch.equal(w.grad, w2.grad)
    # the input gradient is summed in fp32 (plain autograd adds the two bf16 parts in bf16)
    assert torch.allclose(x.grad, x2.grad, rtol=1e-2, atol=1e-2)
    want = gh.float() + gl.to(torch.bfloat16).float() @ w.detach().to(torch.bfloat16).float()
    assert torch.allclose(x.grad, want, rtol=1e-6, atol=1e-6)


def test_router_inputs_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="router_inputs"):
        kernels.router_inputs(torch.randn(4, 5), torch.randn(3, 6), torch.float32)
