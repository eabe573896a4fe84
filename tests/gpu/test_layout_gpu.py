"""Triton expert-row <-> channels-first kernels and the layout-aware mixers on CUDA, against the reference."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _dispatch(T: int, k: int, E: int, seed: int):
    from rom import kernels

    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn(T, E, device="cuda", generator=g)
    logits[:, -1] -= 100.0  # one empty expert
    return kernels.make_dispatch(logits.topk(k, dim=-1).indices, E)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 131, 70), (8, 300, 4096)], ids=["tiny", "odd", "layer"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_layout_kernels_equal_reference_exactly(shape, top_k, dtype):
    pytest.importorskip("triton")
    from rom.kernels.reference.experts import channels_to_rows_reference, rows_to_channels_reference
    from rom.kernels.triton_gather import channels_to_rows_triton, rows_to_channels_triton

    b, L, C = shape
    d = _dispatch(b * L, top_k, 8, seed=sum(shape) + top_k)
    rows = torch.randn(b * L * top_k, C, device="cuda").to(dtype)
    cf_tok = torch.randn(b, L, C, device="cuda").to(dtype)  # a transposed view: strided source
    scale = 1.0 / top_k
    poison_cuda_cache()
    out = rows_to_channels_triton(rows, d.inverse_index, top_k, b, L, scale)
    ref = rows_to_channels_reference(rows.float(), d.inverse_index, top_k, b, L, scale).to(dtype)
    assert out.shape == (b, C, L) and out.is_contiguous()
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 8e-3)
    for src in (cf_tok.transpose(1, 2), cf_tok.transpose(1, 2).contiguous()):
        poison_cuda_cache()
        back = channels_to_rows_triton(src, d.inverse_index, top_k, scale)
        assert torch.equal(back, channels_to_rows_reference(src, d.inverse_index, top_k, scale))


def _mixer(kind: str, backend: str):
    from rom.config import MambaConfig, Projection, RoMConfig, Routing
    from rom.layers.mamba import MambaMixer
    from rom.layers.rom import RoMMixer

    mcfg = MambaConfig(d_state=16)
    if kind == "dense":
        return MambaMixer(64, mcfg, 4, backend=backend)
    rcfg = {
        "rom-top1": RoMConfig(num_experts=4, top_k=1),
        "rom-top2": RoMConfig(num_experts=4, top_k=2),
        "rom-independent": RoMConfig(num_experts=4, top_k=1, routing=Routing.INDEPENDENT),
        "rom-all": RoMConfig(num_experts=4, top_k=2, expert_projections=tuple(Projection)),
    }[kind]
    return RoMMixer(64, mcfg, rcfg, 4, backend=backend)


@pytest.mark.parametrize("kind", ["dense", "rom-top1", "rom-top2", "rom-independent", "rom-all"])
def test_mixer_auto_matches_reference_forward_and_gradients(kind):
    """Triton layout kernels + scan + conv (auto) vs pure torch (reference), fp32, same weights and input."""
    pytest.importorskip("triton")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    ref = _mixer(kind, "reference").cuda()
    fast = _mixer(kind, "auto").cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 77, 64, device="cuda")
    x_ref, x_fast = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    poison_cuda_cache()
    out_ref, out_fast = ref(x_ref)[0], fast(x_fast)[0]
    assert rel_err(out_fast, out_ref) < 1e-4
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    poison_cuda_cache()
    out_fast.backward(g)
    assert rel_err(x_fast.grad, x_ref.grad) < 1e-4
    p_ref = dict(ref.named_parameters())
    bad = {n: rel_err(p.grad, p_ref[n].grad) for n, p in fast.named_parameters() if p.grad is not None}
    assert {n: e for n, e in bad.items() if not e < 1e-3} == {}
