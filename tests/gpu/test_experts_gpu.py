"""RoM expert path on CUDA: sort-based dispatch + grouped GEMM, parity, no host syncs, no per-expert loop."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _kernels():
    kernels = pytest.importorskip("rom.kernels")
    for name in ("make_dispatch", "permute", "expert_matmul", "unpermute"):
        if not hasattr(kernels, name):
            pytest.skip(f"rom.kernels.{name} not there yet")
    return kernels


def _expert_layer(kernels, x, weight, indices, gate_weights):
    d = kernels.make_dispatch(indices, weight.shape[0])
    return kernels.unpermute(kernels.expert_matmul(kernels.permute(x, d), weight, d, backend="auto"), d, gate_weights)


def _loop_reference(x, weight, indices, gate_weights):
    """Per-token float64 reference: out[t] = sum_j w[t, j] * x[t] @ W[indices[t, j]]."""
    x64, w64, g64 = x.double(), weight.double(), gate_weights.double()
    out = torch.zeros(x.shape[0], weight.shape[2], dtype=torch.float64, device=x.device)
    for j in range(indices.shape[1]):
        out += g64[:, j, None] * torch.bmm(x64[:, None, :], w64[indices[:, j]]).squeeze(1)
    return out


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
def test_expert_path_matches_loop_reference(top_k, dtype, tol):
    kernels = _kernels()
    torch.backends.cuda.matmul.allow_tf32 = False
    T, E, d_in, d_out = 1003, 8, 96, 80
    g = torch.Generator(device="cuda").manual_seed(11 + top_k)
    x = torch.randn(T, d_in, device="cuda", generator=g).to(dtype).requires_grad_(True)
    weight = (torch.randn(E, d_in, d_out, device="cuda", generator=g) * d_in**-0.5).to(dtype).requires_grad_(True)
    logits = torch.randn(T, E, device="cuda", generator=g)
    logits[:, 7] -= 100.0  # one expert gets no tokens: empty groups must work
    gw, indices = logits.softmax(-1).topk(top_k, dim=-1)
    gw = gw.to(dtype).requires_grad_(True)
    refs = [t.detach().double().requires_grad_(True) for t in (x, weight, gw)]
    poison_cuda_cache()
    out = _expert_layer(kernels, x, weight, indices, gw)
    ref = _loop_reference(refs[0], refs[1], indices, refs[2])
    assert rel_err(out, ref) < tol
    dy = torch.randn_like(ref).to(dtype)  # the reference gets the same (rounded) output gradient
    poison_cuda_cache()
    out.backward(dy)
    ref.backward(dy.double())
    for name, mine, theirs in zip(("x", "weight", "gate_weights"), (x, weight, gw), refs):
        assert rel_err(mine.grad, theirs.grad) < 2 * tol, name


def test_expert_path_has_no_host_sync():
    """Dispatch, permute, grouped GEMM, unpermute, and their backward, with CUDA sync debug mode = error."""
    kernels = _kernels()
    T, E, d_in, d_out, k = 4096, 8, 256, 512, 1
    x = torch.randn(T, d_in, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(E, d_in, d_out, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gw, indices = torch.randn(T, E, device="cuda").softmax(-1).topk(k, dim=-1)
    dy = torch.randn(T, d_out, device="cuda", dtype=torch.bfloat16)
    _expert_layer(kernels, x, weight, indices, gw.bfloat16()).backward(dy)  # warm-up: handles, lazy init
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = _expert_layer(kernels, x, weight, indices, gw.bfloat16())
        out.backward(dy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_expert_path_uses_grouped_gemm_not_a_loop():
    kernels = _kernels()
    T, E, d_in, d_out = 2048, 8, 128, 256
    x = torch.randn(T, d_in, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(E, d_in, d_out, device="cuda", dtype=torch.bfloat16)
    gw, indices = torch.randn(T, E, device="cuda").softmax(-1).topk(1, dim=-1)
    _expert_layer(kernels, x, weight, indices, gw.bfloat16())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _expert_layer(kernels, x, weight, indices, gw.bfloat16())
    ops = {e.key: e.count for e in prof.key_averages()}
    grouped = sum(c for name, c in ops.items() if "grouped_mm" in name)
    dense = sum(ops.get(name, 0) for name in ("aten::mm", "aten::bmm", "aten::matmul", "aten::addmm"))
    assert grouped >= 1, f"no grouped GEMM op recorded: {sorted(ops)}"
    assert dense < E, f"{dense} dense matmuls for {E} experts looks like a per-expert loop"
