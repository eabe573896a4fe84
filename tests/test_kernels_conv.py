"""Depthwise causal conv1d reference vs a naive loop, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom.kernels import causal_conv1d


def naive_causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None):
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = torch.zeros_like(x)
    for t in range(length):
        acc = torch.zeros(batch, dim, dtype=x.dtype)
        for k in range(width):
            src = t - (width - 1) + k
            if src >= 0:
                acc = acc + weight[:, k] * x[:, :, src]
        if bias is not None:
            acc = acc + bias
        out[:, :, t] = acc
    return F.silu(out) if activation in ("silu", "swish") else out


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("activation", [None, "silu", "swish"])
def test_matches_naive_loop_forward_and_backward(width: int, with_bias: bool, activation: str | None) -> None:
    g = torch.Generator().manual_seed(width * 10 + with_bias)
    x = torch.randn(2, 3, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, width, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    cot = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)
    params = [x, w] + ([b] if b is not None else [])
    y = causal_conv1d(x, w, b, activation)
    y_ref = naive_causal_conv(x, w, b, activation)
    torch.testing.assert_close(y, y_ref)
    got = torch.autograd.grad((y * cot).sum(), params)
    want = torch.autograd.grad((y_ref * cot).sum(), params)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_is_causal() -> None:
    x = torch.randn(1, 2, 10)
    w = torch.randn(2, 4)
    y = causal_conv1d(x, w, None, None, backend="reference")
    x2 = x.clone()
    x2[:, :, 6:] += 100.0  # changing the future must not change the past
    y2 = causal_conv1d(x2, w, None, None)
    torch.testing.assert_close(y[:, :, :6], y2[:, :, :6])
    assert not torch.allclose(y[:, :, 6:], y2[:, :, 6:])


def test_keeps_dtype() -> None:
    x = torch.randn(1, 4, 5, dtype=torch.bfloat16)
    w = torch.randn(4, 3, dtype=torch.bfloat16)
    assert causal_conv1d(x, w).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "x_shape,w_shape,b_shape,activation,match",
    [
        ((2, 3), (3, 4), None, "silu", "x must be"),
        ((1, 3, 5), (2, 4), None, "silu", "weight must be"),
        ((1, 3, 5), (3, 4), (2,), "silu", "bias must have shape"),
        ((1, 3, 5), (3, 4), None, "relu", "activation must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(x_shape, w_shape, b_shape, activation, match) -> None:
    b = torch.zeros(b_shape) if b_shape else None
    with pytest.raises(ValueError, match=match):
        causal_conv1d(torch.zeros(x_shape), torch.zeros(w_shape), b, activation)
