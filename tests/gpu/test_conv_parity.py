"""Causal depthwise conv on CUDA (Triton kernel and the registry's choice) vs a float64 reference."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import causal_conv1d_f64, poison_cuda_cache, rel_err, stable_seed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1e-2), torch.float16: (2e-3, 3e-3)}


# lengths off and on the 128-step tiles (1024: the last tile ends at L, where the backward's second pass reads g
# at t + j only inside the sequence); channel counts that do and do not fill the 8- and 16-channel blocks
@pytest.mark.parametrize("shape", [(1, 16, 1), (2, 100, 37), (3, 257, 300), (8, 64, 1025), (2, 128, 1024)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("activation,bias", [("silu", True), (None, False)], ids=["silu-bias", "plain"])
def test_triton_conv_matches_float64(shape, width, dtype, activation, bias):
    pytest.importorskip("triton")
    from rom.kernels.triton_conv import causal_conv1d_triton

    batch, d, seq_len = shape
    g = torch.Generator(device="cuda").manual_seed(stable_seed(shape, width, str(dtype)))
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


@pytest.mark.parametrize("shape", [(2, 100, 37), (3, 72, 1024), (2, 256, 2053)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_conv_backward_second_gradient_into_half_buffer(shape, dtype):
    """conv_backward as the inner path calls it: x is the first half of a (batch, 2d, L) tensor, the output has
    two gradients (added inside the kernel), and dx is written into the first half of a poisoned buffer whose
    other half stays untouched."""
    pytest.importorskip("triton")
    from rom.kernels.triton_conv import conv_backward

    batch, d, seq_len = shape
    g = torch.Generator(device="cuda").manual_seed(stable_seed(shape, str(dtype)))
    xz = torch.randn(batch, 2 * d, seq_len, device="cuda", generator=g).to(dtype)
    w = (torch.randn(d, 4, device="cuda", generator=g) * 0.5).to(dtype)
    b = torch.randn(d, device="cuda", generator=g).to(dtype)
    dy, dy_extra = (torch.randn(batch, d, seq_len, device="cuda", generator=g).to(dtype) for _ in range(2))
    buffer = torch.full((batch, 2 * d, seq_len), float("nan"), device="cuda", dtype=dtype)
    poison_cuda_cache()
    dx, dw, db = conv_backward(xz[:, :d], w, b, dy, True, dx_out=buffer[:, :d], dy_extra=dy_extra)
    ref_in = [xz[:, :d].double().requires_grad_(True), w.double().requires_grad_(True), b.double().requires_grad_(True)]
    causal_conv1d_f64(*ref_in, activation="silu").backward(dy.double() + dy_extra.double())
    tol = TOL[dtype][1]
    assert dx.data_ptr() == buffer.data_ptr()
    assert rel_err(buffer[:, :d], ref_in[0].grad) < tol
    assert rel_err(dw, ref_in[1].grad) < tol and rel_err(db, ref_in[2].grad) < tol
    assert buffer[:, d:].isnan().all()


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
