"""The Triton widening cast (the expert weight gradient's bf16 -> fp32) on CUDA: exact, every size, every path."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1,), (4095,), (4097,), (8, 1024, 4096), (3, 17, 33)])
def test_upcast_is_exact(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    pytest.importorskip("triton")
    from rom.kernels.triton_cast import upcast_triton

    src = torch.randn(shape, device="cuda").to(dtype)
    poison_cuda_cache()
    out = upcast_triton(src, torch.float32)
    assert out.dtype == torch.float32 and out.shape == src.shape
    assert torch.equal(out, src.float())


def test_upcast_strided_and_other_dtypes_fall_back_to_to() -> None:
    pytest.importorskip("triton")
    from rom.kernels.triton_cast import upcast_triton

    src = torch.randn(64, 48, device="cuda").to(torch.bfloat16).t()  # transposed: dense, strides kept
    out = upcast_triton(src, torch.float32)
    assert torch.equal(out, src.float()) and out.stride() == src.stride()
    gapped = torch.randn(64, 48, device="cuda").to(torch.bfloat16)[:, ::2]  # gaps: Tensor.to
    assert torch.equal(upcast_triton(gapped, torch.float32), gapped.float())
    tokens = torch.randn(2, 300, 70, device="cuda").to(torch.bfloat16).transpose(1, 2)  # the layer's grad_x
    poison_cuda_cache()
    out = upcast_triton(tokens, torch.float32)
    assert torch.equal(out, tokens.float()) and out.stride() == tokens.stride()
    x = torch.randn(100, device="cuda")
    assert torch.equal(upcast_triton(x, torch.bfloat16), x.to(torch.bfloat16))


def test_expert_linear_weight_grad_triton_equals_reference() -> None:
    pytest.importorskip("triton")
    from rom import kernels
    from rom.layers.expert_linear import ExpertLinear

    assert kernels.resolve("upcast", "auto", "cuda") == "triton"
    torch.manual_seed(0)
    grads = []
    for backend in ("auto", "reference"):
        layer = ExpertLinear(8, 256, 512, backend=backend).cuda()
        torch.manual_seed(1)
        x = torch.randn(1000, 256, device="cuda")
        dispatch = kernels.make_dispatch(torch.randint(0, 8, (1000, 1), device="cuda"), 8)
        with torch.no_grad():
            layer.weight.copy_(torch.randn_like(layer.weight))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(kernels.permute(x, dispatch), dispatch)
        out.float().square().sum().backward()
        grads.append(layer.weight.grad)
    assert grads[0].dtype == torch.float32 and torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1,), (4097,), (8, 1024, 4096)])
def test_upcast_add_is_exact_and_in_place(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    pytest.importorskip("triton")
    from rom.kernels.triton_cast import upcast_add_triton

    src = torch.randn(shape, device="cuda").to(dtype)
    out = torch.randn(shape, device="cuda")
    want = out + src.float()
    ptr = out.data_ptr()
    upcast_add_triton(out, src)
    assert out.data_ptr() == ptr and torch.equal(out, want)
    strided = torch.randn(48, 64, device="cuda").t()  # not contiguous: Tensor.add_
    s_src = torch.randn(64, 48, device="cuda").to(dtype)
    s_want = strided + s_src.float()
    upcast_add_triton(strided, s_src)
    assert torch.equal(strided, s_want)
