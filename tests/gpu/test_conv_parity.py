"""Causal depthwise conv on CUDA (Triton kernel and the registry's choice) vs a float64 reference."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import causal_conv1d_f64, poison_cuda_cache, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1e-2), torch.float16: (2e-3, 3e-3)}


@pytest.mark.parametrize("shape", [(1, 16, 1), (2, 100, 37), (3, 257, 300), (8, 64, 1025)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("activation,bias", [("silu", True), (None, False)], ids=["silu-bias", "plain"])
def test_triton_conv_matches_float64(shape, width, dtype, activation, bias):
    pytest.importorskip("triton")
    from rom.kernels.triton_conv import causal_conv1d_triton

    batch, d, seq_len = shape
    g = torch.Generator(device="cuda").manual_seed(hash((shape, width, str(dtype))) % 2**31)
    x = torch.randn(batch, d, seq_len, device="cuda", generator=g).to(dtype).requires_grad_(True)
    w = (torch.randn(d, width, device="cuda", generator=g) * 0.5).to(dtype).requires_grad_(True)
    b = torch.randn(d, device="cuda", generator=g).to(dtype).requires_grad_(True) if bias else None
    ref_in = [t.detach().double().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    poison_cuda_cache()
    out = causal_conv1d_triton(x, w, b, activation=activation)
    ref = causal_conv1d_f64(*ref_in, activation=activation)
    tol_out, tol_grad = TOL[dtype]
    assert rel_err(out, ref) < tol_out
    dy = torch.randn_like(ref).to(dtype)  # the reference gets the same (rounded) output gradient
    poison_cuda_cache()
    out.backward(dy)
    ref.backward(dy.double())
    for name, mine, theirs in zip(("x", "weight", "bias"), (x, w, b), ref_in):
        if mine is not None:
            # dweight/dbias sum over batch*L terms: allow the bf16 rounding of the output grads
            assert rel_err(mine.grad, theirs.grad) < tol_grad, name


def test_registry_conv_on_cuda_matches_reference():
    """Whatever kernels.causal_conv1d picks on CUDA (backend auto) equals backend reference."""
    kernels = pytest.importorskip("rom.kernels")
    if not hasattr(kernels, "causal_conv1d"):
        pytest.skip("rom.kernels.causal_conv1d not there yet")
    x = torch.randn(2, 64, 99, device="cuda")
    w = torch.randn(64, 4, device="cuda")
    b = torch.randn(64, device="cuda")
    poison_cuda_cache()
    fast = kernels.causal_conv1d(x, w, b, activation="silu", backend="auto")
    ref = kernels.causal_conv1d(x, w, b, activation="silu", backend="reference")
    assert rel_err(fast, ref) < 1e-5
