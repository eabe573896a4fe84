"""kernels.cast_weight: the forward is Tensor.to, the backward casts the gradient back exactly (CPU, reference)."""

from __future__ import annotations

import pytest
import torch

from rom import kernels
from rom.kernels.reference.weight_cast import upcast_reference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cast_weight_forward_and_backward(dtype: torch.dtype) -> None:
    w = torch.randn(3, 17, 9, requires_grad=True)
    out = kernels.cast_weight(w, dtype, "auto")
    assert out.dtype == dtype and torch.equal(out, w.detach().to(dtype))
    grad = torch.randn(3, 17, 9).to(dtype)
    out.backward(grad)
    assert w.grad.dtype == torch.float32 and torch.equal(w.grad, grad.float())


def test_cast_weight_same_dtype_is_the_weight_itself() -> None:
    w = torch.randn(4, 4, requires_grad=True)
    assert kernels.cast_weight(w, torch.float32) is w


def test_upcast_resolves_to_reference_on_cpu() -> None:
    assert kernels.resolve("upcast", "auto", "cpu") == "reference"
    t = torch.randn(5, dtype=torch.float32).to(torch.bfloat16)
    assert torch.equal(upcast_reference(t, torch.float32), t.float())


def test_expert_linear_gradient_unchanged_by_the_cast() -> None:
    """Under bf16 autocast the expert bank's fp32 gradient equals the plain .to() path's, bit for bit."""
    from rom.layers.expert_linear import ExpertLinear

    torch.manual_seed(0)
    layer = ExpertLinear(4, 16, 24, backend="reference")
    x = torch.randn(32, 16)
    dispatch = kernels.make_dispatch(torch.randint(0, 4, (32, 1)), 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(kernels.permute(x, dispatch), dispatch)
    out.float().sum().backward()
    got = layer.weight.grad.clone()
    layer.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = kernels.expert_matmul(kernels.permute(x, dispatch), layer.weight.to(torch.bfloat16), dispatch,
                                      backend="reference")
    plain.float().sum().backward()
    assert got.dtype == torch.float32 and torch.equal(got, layer.weight.grad)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_in_place_accumulation_adds_into_the_existing_grad_and_gives_autograd_none(backend: str) -> None:
    """Inside weight_grads_accumulate_in_place the cast gradient lands in the existing .grad exactly once."""
    w = torch.randn(2, 5, 3, requires_grad=True)
    w.grad = torch.randn(2, 5, 3)
    grad_tensor, before = w.grad, w.grad.clone()
    g = torch.randn(2, 5, 3).to(torch.bfloat16)
    with kernels.weight_grads_accumulate_in_place():
        out = kernels.cast_weight(w, torch.bfloat16, backend)
    out.backward(g)
    assert w.grad is grad_tensor  # the same tensor, added into (what a CUDA graph needs)
    assert torch.equal(w.grad, before + g.float())


def test_in_place_accumulation_needs_an_existing_grad_and_the_context() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3).to(torch.bfloat16)
    with kernels.weight_grads_accumulate_in_place():  # no .grad yet: autograd's usual path
        kernels.cast_weight(w, torch.bfloat16).backward(g)
    assert torch.equal(w.grad, g.float())
    first = w.grad
    kernels.cast_weight(w, torch.bfloat16).backward(g)  # outside the context: AccumulateGrad adds
    assert torch.equal(w.grad, 2 * g.float()) and w.grad is first
