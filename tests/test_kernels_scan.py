"""Chunked reference selective scan vs the sequential float64 ground truth (forward and every gradient)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from rom.kernels import selective_scan, selective_scan_sequential
from rom.kernels.reference.scan import CHUNK, selective_scan_reference

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int,
    dim: int,
    length: int,
    n: int,
    *,
    seed: int,
    dtype: torch.dtype = torch.float64,
    with_z: bool = True,
    with_D: bool = True,
    with_bias: bool = True,
    delta_scale: float = 1.0,
) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    inputs: dict[str, torch.Tensor | None] = {
        "u": rnd(batch, dim, length),
        "delta": rnd(batch, dim, length) * 0.5 * delta_scale,
        "A": -torch.exp(rnd(dim, n) * 0.5),  # negative, as -exp(A_log)
        "B": rnd(batch, n, length),
        "C": rnd(batch, n, length),
        "D": rnd(dim) if with_D else None,
        "z": rnd(batch, dim, length) if with_z else None,
        "delta_bias": rnd(dim) * 0.5 if with_bias else None,
    }
    return {k: None if v is None else v.to(dtype).requires_grad_() for k, v in inputs.items()}


def run(fn, inputs: dict, softplus: bool, **kw) -> torch.Tensor:
    return fn(
        inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"], inputs["z"],
        inputs["delta_bias"], softplus, **kw,
    )


def grads(y: torch.Tensor, inputs: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)  # a non-trivial cotangent
    names = [k for k in GRAD_NAMES if inputs[k] is not None]
    out = torch.autograd.grad((y * weight).sum(), [inputs[k] for k in names], allow_unused=True)
    # length 1: the decay never acts, so A may be unused by one implementation (its gradient is zero)
    return {k: torch.zeros_like(inputs[k]) if o is None else o for k, o in zip(names, out)}


def as64(inputs: dict) -> dict:
    return {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= atol + rtol * scale, f"{name}: max abs error {err:.3g} (reference scale {scale:.3g})"


@pytest.mark.parametrize("length", [1, 2, 7, 16, 65, 130])
def test_chunked_matches_sequential_float64_forward_and_all_grads(length: int) -> None:
    seed = 100 + length
    inputs = make_inputs(2, 3, length, 4, seed=seed)
    y_ref = run(selective_scan_sequential, inputs, True)
    g_ref = grads(y_ref, inputs, seed)
    y = run(selective_scan_reference, inputs, True)
    g = grads(y, inputs, seed)
    assert_close("y", y, y_ref, 1e-10, 1e-10)
    assert set(g) == set(GRAD_NAMES)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-9, 1e-9)


@pytest.mark.parametrize(
    "with_z,with_D,with_bias,softplus", list(itertools.product([False, True], repeat=4))
)
def test_optional_inputs(with_z: bool, with_D: bool, with_bias: bool, softplus: bool) -> None:
    seed = 7 + 8 * with_z + 4 * with_D + 2 * with_bias + softplus
    inputs = make_inputs(1, 2, 23, 3, seed=seed, with_z=with_z, with_D=with_D, with_bias=with_bias)
    if not softplus:  # raw delta must be positive for a decaying scan
        inputs["delta"] = inputs["delta"].detach().abs().requires_grad_()
    y_ref = run(selective_scan_sequential, inputs, softplus)
    g_ref = grads(y_ref, inputs, seed)
    y = run(selective_scan, inputs, softplus)
    g = grads(y, inputs, seed)
    assert_close("y", y, y_ref, 1e-10, 1e-10)
    for name in g_ref:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-9, 1e-9)


@pytest.mark.parametrize("chunk", [2, 3, 4, 16])
def test_other_chunk_sizes(chunk: int) -> None:
    inputs = make_inputs(2, 2, 37, 3, seed=chunk)
    y_ref = run(selective_scan_sequential, inputs, True)
    y = run(selective_scan_reference, inputs, True, chunk=chunk)
    assert_close("y", y, y_ref, 1e-9, 1e-9)
    assert CHUNK >= 2


@pytest.mark.parametrize("block_bytes", [1, 3 * 2 * 29 * 4 * 8])
def test_channel_blocking_changes_nothing(block_bytes: int) -> None:
    """Blocks of 1 and of 3 channels (5 channels: a ragged last block), forward, grads and last state."""
    inputs = make_inputs(2, 5, 29, 4, seed=41)
    y_ref, h_ref = run(selective_scan_sequential, inputs, True, return_last_state=True)
    g_ref = grads(y_ref, inputs, 41)
    y, h = run(selective_scan_reference, inputs, True, return_last_state=True, block_bytes=block_bytes)
    g = grads(y, inputs, 41)
    assert_close("y", y, y_ref, 1e-10, 1e-10)
    assert_close("last state", h, h_ref, 1e-10, 1e-10)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-9, 1e-9)


def test_float32_tolerances() -> None:
    inputs = make_inputs(2, 8, 130, 16, seed=3, dtype=torch.float32)
    y = run(selective_scan, inputs, True)
    assert y.dtype == torch.float32
    g = grads(y, inputs, 3)
    ref_inputs = as64(inputs)
    y_ref = run(selective_scan_sequential, ref_inputs, True)
    g_ref = grads(y_ref, ref_inputs, 3)
    assert_close("y", y, y_ref, 1e-5, 1e-5)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-4, 1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_return_input_dtype(dtype: torch.dtype) -> None:
    inputs = make_inputs(1, 4, 20, 4, seed=5, dtype=dtype)
    y = run(selective_scan, inputs, True)
    assert y.dtype == dtype
    y_ref = run(selective_scan_sequential, as64(inputs), True)
    assert_close("y", y, y_ref, 2e-2, 2e-2)


def test_large_delta_does_not_overflow() -> None:
    """delta*|A| up to ~1e3 per step: naive exp(-cumsum) would be inf in float32 (and float64)."""
    torch.manual_seed(0)
    inputs = make_inputs(2, 4, 70, 8, seed=11, dtype=torch.float32, with_bias=False)
    raw = inputs["delta"].detach()
    # mix huge steps with ordinary ones so that state still has to be carried across chunks
    big = torch.rand(raw.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    delta = torch.where(big, 50.0 + 100.0 * raw.abs(), raw.abs() * 0.1)
    inputs["delta"] = delta.requires_grad_()
    inputs["A"] = (inputs["A"].detach() * 8.0).requires_grad_()
    assert (delta.detach().unsqueeze(-1) * inputs["A"].detach().abs().unsqueeze(1)).max() > 500
    y = run(selective_scan, inputs, False)
    g = grads(y, inputs, 11)
    ref_inputs = as64(inputs)
    y_ref = run(selective_scan_sequential, ref_inputs, False)
    g_ref = grads(y_ref, ref_inputs, 11)
    assert_close("y", y, y_ref, 1e-5, 1e-5)
    for name in g_ref:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-4, 1e-4)


def test_large_delta_float64_matches_to_floor_precision() -> None:
    inputs = make_inputs(1, 3, 41, 4, seed=12, with_bias=False)
    inputs["delta"] = (inputs["delta"].detach().abs() * 200.0).requires_grad_()
    y_ref = run(selective_scan_sequential, inputs, False)
    g_ref = grads(y_ref, inputs, 12)
    y = run(selective_scan_reference, inputs, False)
    g = grads(y, inputs, 12)
    assert_close("y", y, y_ref, 1e-8, 1e-8)
    for name in g_ref:
        assert_close(f"grad {name}", g[name], g_ref[name], 1e-7, 1e-7)


def test_semantics_by_hand() -> None:
    """One channel, one state, two steps, written out: delta_bias before softplus; (C.h + D u) * silu(z)."""
    u = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.3, -0.2]]], dtype=torch.float64)
    A = torch.tensor([[-0.7]], dtype=torch.float64)
    B = torch.tensor([[[0.5, -1.5]]], dtype=torch.float64)
    C = torch.tensor([[[2.0, 0.25]]], dtype=torch.float64)
    D = torch.tensor([0.1], dtype=torch.float64)
    z = torch.tensor([[[0.4, -0.9]]], dtype=torch.float64)
    bias = torch.tensor([0.05], dtype=torch.float64)
    dt = F.softplus(delta[0, 0] + bias[0])
    h1 = dt[0] * 0.5 * 1.0
    h2 = torch.exp(dt[1] * -0.7) * h1 + dt[1] * -1.5 * 2.0
    want = torch.stack([(2.0 * h1 + 0.1 * 1.0) * F.silu(z[0, 0, 0]), (0.25 * h2 + 0.1 * 2.0) * F.silu(z[0, 0, 1])])
    for fn in (selective_scan_sequential, selective_scan_reference):
        y = fn(u, delta, A, B, C, D, z, bias, True)
        torch.testing.assert_close(y[0, 0], want, rtol=1e-12, atol=1e-12)


def test_return_last_state() -> None:
    inputs = make_inputs(2, 3, 19, 4, seed=21)
    y_ref, h_ref = run(selective_scan_sequential, inputs, True, return_last_state=True)
    y, h = run(selective_scan, inputs, True, return_last_state=True)
    assert h.shape == (2, 3, 4)
    assert_close("y", y, y_ref, 1e-10, 1e-10)
    assert_close("last state", h, h_ref, 1e-10, 1e-10)
    # the last state continues the scan: scanning [x1, x2] == scanning x2 from h(x1) (checked on y only)
    full = run(selective_scan_reference, inputs, True)
    assert_close("y without state", full, y_ref, 1e-10, 1e-10)


def test_backends_reference_and_auto_agree_on_cpu() -> None:
    inputs = make_inputs(1, 2, 9, 2, seed=4)
    a = run(selective_scan, inputs, True)
    b = selective_scan(*[inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")], True,
                       backend="reference")
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "name,shape,match",
    [
        ("delta", (1, 2, 8), "delta must have shape"),
        ("B", (1, 3, 9), "B must have shape"),
        ("D", (3,), "D must have shape"),
        ("A", (3, 2), "A must be"),
    ],
)
def test_bad_shapes_raise_clear_errors(name: str, shape: tuple, match: str) -> None:
    inputs = make_inputs(1, 2, 9, 2, seed=0)
    inputs[name] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        run(selective_scan, inputs, True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reference_on_cuda_matches_cpu_float64() -> None:
    inputs = make_inputs(2, 16, 130, 8, seed=31)
    y_cpu = run(selective_scan_reference, inputs, True)
    g_cpu = grads(y_cpu, inputs, 31)
    cuda_inputs = {k: None if v is None else v.detach().cuda().requires_grad_() for k, v in inputs.items()}
    y = run(selective_scan_reference, cuda_inputs, True)
    g = grads(y, cuda_inputs, 31)
    assert_close("y", y.cpu(), y_cpu, 1e-10, 1e-10)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", g[name].cpu(), g_cpu[name], 1e-9, 1e-9)
