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

    src = torch.randn(64, 48, device="cuda").to(torch.bfloat16).t()  # not contiguous
    assert torch.equal(upcast_triton(src, torch.float32), src.float())
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
