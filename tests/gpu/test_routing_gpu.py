"""The Triton routing kernels on CUDA: the counting-sort dispatch (exactly torch's stable sort) and the weighted
un-permutation of expert rows (forward and both gradients against float64), outputs poisoned before each call."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("n,n_experts", [(1, 1), (5, 3), (1023, 8), (16384, 8), (65536 * 2 + 7, 8), (777, 64),
                                         (4096, 256)])
@pytest.mark.parametrize("skewed", [False, True], ids=["uniform", "skewed"])
def test_counting_sort_dispatch_equals_torch_stable_sort(n, n_experts, skewed):
    pytest.importorskip("triton")
    from rom.kernels.reference.experts import expert_positions_reference
    from rom.kernels.triton_dispatch import expert_positions_triton

    g = torch.Generator(device="cuda").manual_seed(n + n_experts)
    ids = torch.randint(0, n_experts, (n,), device="cuda", generator=g)
    if skewed:  # most slots on one expert, the last expert empty
        ids[: (2 * n) // 3] = 0
        if n_experts > 2:
            ids[ids == n_experts - 1] = 1
    poison_cuda_cache()
    ours = expert_positions_triton(ids, n_experts)
    ref = expert_positions_reference(ids, n_experts)
    for name, a, b in zip(("slot_index", "inverse_index", "tokens_per_expert", "offsets"), ours, ref):
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name


def test_make_dispatch_auto_uses_the_counting_sort_and_matches_reference():
    pytest.importorskip("triton")
    from rom import kernels

    assert kernels.resolve("dispatch", "auto", "cuda") == "triton"
    idx = torch.randint(0, 8, (3000, 2), device="cuda")
    a, b = kernels.make_dispatch(idx, 8, "auto"), kernels.make_dispatch(idx, 8, "reference")
    for field in ("token_index", "slot_index", "inverse_index", "tokens_per_expert", "offsets"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("n_tok,d", [(1, 3), (333, 70), (16384, 1024)], ids=["tiny", "odd", "layer"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_combine_rows_forward_and_gradients_match_float64(n_tok, d, top_k, weighted, dtype):
    pytest.importorskip("triton")
    from rom.kernels.reference.experts import combine_rows_backward_reference, combine_rows_reference
    from rom.kernels.triton_combine import combine_rows_backward_triton, combine_rows_triton

    g = torch.Generator(device="cuda").manual_seed(n_tok + d + top_k)
    inverse = torch.randperm(n_tok * top_k, device="cuda", generator=g)
    rows = torch.randn(n_tok * top_k, d, device="cuda", generator=g).to(dtype)
    grad = torch.randn(n_tok, d, device="cuda", generator=g).to(dtype)
    w = torch.rand(n_tok, top_k, device="cuda", generator=g) if weighted else None
    w64 = w.double() if weighted else None
    tol = 1e-6 if dtype == torch.float32 else 8e-3
    poison_cuda_cache()
    out = combine_rows_triton(rows, inverse, w, top_k)
    assert out.dtype == dtype and out.shape == (n_tok, d)
    assert rel_err(out, combine_rows_reference(rows.double(), inverse, w64, top_k)) < tol
    poison_cuda_cache()
    g_rows, g_w = combine_rows_backward_triton(grad, rows, inverse, w, top_k, True, True)
    r_rows, r_w = combine_rows_backward_reference(grad.double(), rows.double(), inverse, w64, top_k, True, True)
    assert g_rows.dtype == dtype and rel_err(g_rows, r_rows) < tol
    if weighted:
        assert g_w.dtype == torch.float32 and rel_err(g_w, r_w) < 1e-5
    else:
        assert g_w is None


def test_unpermute_auto_equals_reference_through_autograd_with_strided_gradient():
    """The layer's call (kernels.unpermute) on both backends: same output and gradients, bf16 rows."""
    pytest.importorskip("triton")
    from rom import kernels

    T, d, k, E = 4099, 256, 2, 8
    dispatch = kernels.make_dispatch(torch.randint(0, E, (T, k), device="cuda"), E)
    rows = torch.randn(T * k, d, device="cuda").to(torch.bfloat16)
    w = torch.rand(T, k, device="cuda")
    outs, grads = [], []
    g = torch.randn(d, T, device="cuda").to(torch.bfloat16).t()  # a transposed (strided) incoming gradient
    for backend in ("auto", "reference"):
        r, ww = rows.clone().requires_grad_(True), w.clone().requires_grad_(True)
        poison_cuda_cache()
        out = kernels.unpermute(r, dispatch, ww, backend)
        out.backward(g)
        outs.append(out)
        grads.append((r.grad, ww.grad))
    assert rel_err(outs[0], outs[1].float()) < 8e-3
    assert rel_err(grads[0][0], grads[1][0]) < 8e-3
    assert rel_err(grads[0][1], grads[1][1]) < 1e-4


@pytest.mark.parametrize("n_tok,d,n_experts", [(1, 8, 2), (333, 70, 8), (16384, 1024, 8), (1000, 256, 64)],
                         ids=["tiny", "odd", "layer", "e64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_grad_h", [True, False], ids=["dh", "no-dh"])
def test_router_inputs_forward_and_backward_match_float64(n_tok, d, n_experts, dtype, with_grad_h):
    """Cast tokens and logits from one read; the input gradient dh + dlogits @ W in one pass (fp32 x)."""
    pytest.importorskip("triton")
    from rom.kernels.reference.routing import router_inputs_backward_reference, router_inputs_reference
    from rom.kernels.triton_router import router_inputs_backward_triton, router_inputs_triton

    g = torch.Generator(device="cuda").manual_seed(n_tok + d)
    x = torch.randn(n_tok, d, device="cuda", generator=g)
    w = (torch.randn(n_experts, d, device="cuda", generator=g) * d**-0.5).to(dtype)
    gh = torch.randn(n_tok, d, device="cuda", generator=g).to(dtype) if with_grad_h else None
    gl = torch.randn(n_tok, n_experts, device="cuda", generator=g)
    poison_cuda_cache()
    h, logits = router_inputs_triton(x, w)
    assert h.dtype == dtype and logits.dtype == torch.float32
    assert torch.equal(h, x.to(dtype))  # the cast is exact round-to-nearest, as Tensor.to
    _, logits_ref = router_inputs_reference(x.to(dtype).double(), w.double())
    assert rel_err(logits, logits_ref) < (1e-5 if dtype == torch.float32 else 1e-3)
    poison_cuda_cache()
    dx = router_inputs_backward_triton(gh, gl, w, torch.float32, x)
    # the reference rounds dlogits to the matmul dtype before its GEMM, as the kernel does
    dx_ref = router_inputs_backward_reference(gh.double() if with_grad_h else None, gl.to(dtype).double(),
                                              w.double(), torch.float64, x)
    assert dx.dtype == torch.float32 and rel_err(dx, dx_ref) < (1e-5 if dtype == torch.float32 else 1e-3)


@pytest.mark.parametrize("n_tok,n_experts", [(1, 2), (333, 5), (16384, 8), (1000, 64)])
def test_route_top1_forward_and_gradient_match_float64(n_tok, n_experts):
    """Softmax, top-1 choice, mean probabilities and their joint backward in one pass each."""
    pytest.importorskip("triton")
    from rom.kernels.reference.routing import route_top1_reference
    from rom.kernels.triton_router import route_top1_triton

    g = torch.Generator(device="cuda").manual_seed(n_tok + n_experts)
    logits = torch.randn(n_tok, n_experts, device="cuda", generator=g) * 3
    ours_in, ref_in = logits.clone().requires_grad_(True), logits.double().requires_grad_(True)
    poison_cuda_cache()
    w, idx, mean = route_top1_triton(ours_in)
    w_ref, idx_ref, mean_ref = route_top1_reference(ref_in)
    assert w.shape == (n_tok, 1) and idx.dtype == torch.int64 and mean.shape == (n_experts,)
    assert torch.equal(idx, idx_ref)
    assert rel_err(w, w_ref) < 1e-6 and rel_err(mean, mean_ref) < 1e-6
    dw = torch.randn(n_tok, 1, device="cuda", generator=g)
    dmean = torch.randn(n_experts, device="cuda", generator=g)
    poison_cuda_cache()
    torch.autograd.backward((w, mean), (dw, dmean))
    torch.autograd.backward((w_ref, mean_ref), (dw.double(), dmean.double()))
    assert rel_err(ours_in.grad, ref_in.grad) < 1e-5
