"""The RoM inner path on expert-sorted rows (rom.kernels.rows_path) on CUDA, against the composed reference."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _inputs(batch: int, d: int, L: int, n: int, n_exp: int, dtype: torch.dtype, seed: int):
    from rom import kernels

    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn(batch * L, n_exp, device="cuda", generator=g)
    logits[:, -1] -= 100.0  # one empty expert
    dispatch = kernels.make_dispatch(logits.argmax(-1, keepdim=True), n_exp)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, device="cuda", generator=g) * scale

    r = 4
    tensors = [rnd(batch * L, 2 * d).to(dtype), rnd(d, 4, scale=0.5).to(dtype), rnd(d).to(dtype),
               -torch.exp(rnd(d, n, scale=0.5)), rnd(d), rnd(r + 2 * n, d, scale=d**-0.5).to(dtype),
               rnd(d, r, scale=r**-0.5).to(dtype), torch.rand(d, device="cuda", generator=g) * -3.0 - 1.0]
    return dispatch, r, tensors


def _run(fn, dispatch, batch, L, n, r, tensors, backend):
    xz_rows, conv_w, conv_b, A, D, w_x, w_dt, dt_bias = tensors

    def project(x):
        dt, B, C = torch.einsum("od,bdl->bol", w_x, x).split([r, n, n], dim=1)
        return torch.einsum("do,bol->bdl", w_dt, dt), B, C, dt_bias

    return fn(xz_rows, dispatch, batch, L, conv_w, conv_b, A, D, project, backend)


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (2, 131, 32, 16), (4, 1000, 128, 16), (2, 77, 64, 64)],
                         ids=["tiny", "odd", "long", "N64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_rows_path_matches_composed_float64_forward_and_gradients(shape, dtype):
    pytest.importorskip("triton")
    from rom import kernels
    from rom.kernels.rows_path import inner_from_rows_triton

    assert kernels.resolve("inner_from_rows", "auto", "cuda") == "triton"
    batch, L, d, n = shape
    dispatch, r, tensors = _inputs(batch, d, L, n, 5, dtype, seed=sum(shape))
    ours = [t.clone().requires_grad_(True) for t in tensors]
    ref = [t.detach().double().requires_grad_(True) for t in tensors]
    poison_cuda_cache()
    y = _run(inner_from_rows_triton, dispatch, batch, L, n, r, ours, "triton")
    y_ref = _run(kernels.inner_from_rows_reference, dispatch, batch, L, n, r, ref, "reference")
    assert y.shape == (batch * L, d) and y.dtype == dtype
    tol_out, tol_grad = (1e-4, 1e-3) if dtype == torch.float32 else (2e-2, 3e-2)
    assert rel_err(y, y_ref) < tol_out
    g = torch.randn_like(y_ref)
    poison_cuda_cache()
    y.backward(g.to(dtype))
    y_ref.backward(g)
    names = ["xz_rows", "conv_w", "conv_b", "A", "D", "w_x", "w_dt", "dt_bias"]
    errors = {name: rel_err(a.grad, b.grad) for name, a, b in zip(names, ours, ref)}
    assert {k: e for k, e in errors.items() if not e < tol_grad} == {}


def test_rows_path_output_without_gradient_leaves_a_zero_z_gradient():
    """Only the conv's output reaches the loss (the scan's node never runs): the z half of d xz_rows is 0."""
    pytest.importorskip("triton")
    from rom.kernels import rows_path

    dispatch, r, tensors = _inputs(2, 32, 50, 16, 3, torch.float32, seed=1)
    xz_rows, conv_w, conv_b, A, D, w_x, w_dt, dt_bias = [t.requires_grad_(True) for t in tensors]
    seen = {}

    def project(x):
        seen["x"] = x
        dt, B, C = torch.einsum("od,bdl->bol", w_x, x).split([r, 16, 16], dim=1)
        return torch.einsum("do,bol->bdl", w_dt, dt), B, C, dt_bias

    poison_cuda_cache()
    rows_path.inner_from_rows_triton(xz_rows, dispatch, 2, 50, conv_w, conv_b, A, D, project)
    seen["x"].sum().backward()
    assert torch.isfinite(xz_rows.grad).all()
    assert torch.count_nonzero(xz_rows.grad[:, 32:]) == 0 and torch.count_nonzero(xz_rows.grad[:, :32]) > 0
