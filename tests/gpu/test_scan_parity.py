"""Triton selective scan vs the float64 sequential reference: forward and every gradient, on CUDA."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err, selective_scan_f64, stable_seed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# per-dtype bounds on ||out - ref|| / ||ref||: output, then gradients (bf16/fp16 outputs are rounded)
TOL = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (1e-2, 2e-2), torch.float16: (3e-3, 1e-2)}
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]

# (batch, d_inner, L, d_state): lengths not multiples of any block, channels not multiples of BLOCK_D
SHAPES = [(1, 64, 1, 16), (2, 96, 37, 16), (3, 130, 200, 64), (8, 48, 517, 16), (4, 33, 301, 64)]


def _inputs(batch, d_inner, seq_len, d_state, dtype, full: bool, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dt)

    return {
        "u": rnd(batch, d_inner, seq_len),
        "delta": rnd(batch, d_inner, seq_len, scale=0.5) if full else torch.rand(
            batch, d_inner, seq_len, device="cuda", generator=g).mul(0.2).to(dtype),
        "A": -torch.exp(rnd(d_inner, d_state, scale=0.5, dt=torch.float32)),
        "B": rnd(batch, d_state, seq_len),
        "C": rnd(batch, d_state, seq_len),
        "D": rnd(d_inner, dt=torch.float32) if full else None,
        "z": rnd(batch, d_inner, seq_len) if full else None,
        "delta_bias": (torch.rand(d_inner, device="cuda", generator=g) * -3.0 - 1.0) if full else None,
    }


def _check_gradients(out, out_ref, ours: dict, ref: dict, dtype) -> None:
    """Backward of ours and of the float64 reference with the same (rounded) output gradient; every input's
    gradient within the dtype's tolerance."""
    dout = torch.randn_like(out_ref).to(dtype)
    poison_cuda_cache()
    out.backward(dout)
    out_ref.backward(dout.double())
    tol_grad = TOL[dtype][1]
    errors = {k: rel_err(ours[k].grad, ref[k].grad) for k in NAMES if ours[k] is not None}
    bad = {k: e for k, e in errors.items() if not e < tol_grad}
    assert not bad, f"gradient rel errors over {tol_grad}: {bad} (all: {errors})"


def _forward_against_float64(x: dict, dtype, full: bool, **scan_kwargs):
    """Our scan (outputs poisoned first) and the float64 reference on copies of x; the forward within the
    dtype's tolerance. Returns (out, out_ref, ours, ref) for the gradient checks."""
    from rom.kernels.triton_scan import selective_scan_triton

    ours = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in x.items()}
    ref = {k: (v.detach().double().requires_grad_(True) if v is not None else None) for k, v in x.items()}
    poison_cuda_cache()
    out = selective_scan_triton(*[ours[k] for k in NAMES], delta_softplus=full, **scan_kwargs)
    out_ref = selective_scan_f64(*[ref[k] for k in NAMES], delta_softplus=full)
    assert rel_err(out, out_ref) < TOL[dtype][0], f"forward rel err {rel_err(out, out_ref):.3e}"
    return out, out_ref, ours, ref


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("full", [True, False], ids=["z-D-bias-softplus", "plain"])
@pytest.mark.parametrize("impl", ["v2", "v1"])
def test_scan_forward_backward_matches_float64(shape, dtype, full, impl):
    if impl == "v1" and dtype != torch.float32:
        pytest.skip("v1 (kept for comparison) is checked in fp32 only")
    pytest.importorskip("triton")
    seed = stable_seed(shape, str(dtype), full)
    x = _inputs(*shape, dtype=dtype, full=full, seed=seed)
    out, out_ref, ours, ref = _forward_against_float64(x, dtype, full, impl=impl)
    assert out.dtype == dtype and out.shape == out_ref.shape
    _check_gradients(out, out_ref, ours, ref, dtype)
    for k in NAMES:
        if ours[k] is not None:
            assert ours[k].grad.dtype == ours[k].dtype, k


# (batch, d_inner, L, d_state, segments): segments forced for forward and backward, lengths that leave a
# partial last chunk and uneven segments; None = the automatic plan (few channels, long L: it splits)
SEGMENTED = [(2, 96, 517, 16, 2), (2, 96, 517, 16, 3), (1, 40, 1030, 16, 8), (3, 130, 200, 64, 3),
             (2, 33, 301, 64, 4), (1, 64, 2048, 16, None)]


@pytest.mark.parametrize("case", SEGMENTED, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("full", [True, False], ids=["z-D-bias-softplus", "plain"])
def test_segmented_scan_matches_float64(case, dtype, full):
    """The sequence split into segments scanned in parallel (carries composed from segment summaries):
    forward and every gradient against the float64 reference."""
    pytest.importorskip("triton")
    import rom.kernels.triton_scan as ts
    from rom.kernels.scan_plan import V2_CHUNK, v2_launch

    *shape, segments = case
    batch, d_inner, seq_len, d_state = shape
    n_chunks = -(-seq_len // V2_CHUNK)
    fwd_cfg = bwd_cfg = None
    if segments is not None:
        fwd_cfg = (32 if d_state <= 16 else 8, 1, segments)
        bwd_cfg = (8 if d_state <= 16 else 4, 1, segments)   # the default block shapes at full occupancy
    else:  # the automatic plan must split this one, or the case tests nothing new
        _, _, plan = v2_launch(d_state, True, batch, d_inner, n_chunks, torch.device("cuda"), None)
        assert plan.n_seg > 1, plan
    x = _inputs(*shape, dtype=dtype, full=full, seed=stable_seed(tuple(case), str(dtype), full))
    out, out_ref, ours, ref = _forward_against_float64(x, dtype, full, fwd_config=fwd_cfg, bwd_config=bwd_cfg)
    tol_out = TOL[dtype][0]
    with torch.no_grad():  # the no-checkpoint forward takes the same plan
        assert rel_err(ts.selective_scan_triton(*[x[k] for k in NAMES], delta_softplus=full, fwd_config=fwd_cfg),
                       out_ref) < tol_out
    _check_gradients(out, out_ref, ours, ref, dtype)


def test_scan_forward_is_deterministic_and_inference_path_agrees():
    """Two forward calls give identical bits (a race would move them); no-grad path (no checkpoints) agrees."""
    pytest.importorskip("triton")
    from rom.kernels.triton_scan import selective_scan_triton

    x = _inputs(4, 200, 333, 16, torch.bfloat16, full=True, seed=7)
    args = [x[k] for k in NAMES]
    poison_cuda_cache()
    with torch.no_grad():
        a = selective_scan_triton(*args, delta_softplus=True)
        poison_cuda_cache()
        b = selective_scan_triton(*args, delta_softplus=True)
    c = selective_scan_triton(*[t.requires_grad_(True) if t is not None else None for t in args], delta_softplus=True)
    assert torch.equal(a, b)
    assert torch.equal(a, c.detach())


def test_scan_strided_inputs():
    """B, C as transposed slices of one projection and delta transposed, as the Mamba layer passes them;
    forward and gradients through the views."""
    pytest.importorskip("triton")
    from rom.kernels.triton_scan import selective_scan_triton

    batch, d_inner, seq_len, n = 2, 80, 129, 16
    g = torch.Generator(device="cuda").manual_seed(3)
    proj = torch.randn(batch, seq_len, 2 * n, device="cuda", generator=g).requires_grad_(True)
    delta_src = (torch.randn(batch, seq_len, d_inner, device="cuda", generator=g) * 0.5).requires_grad_(True)
    u = torch.randn(batch, d_inner, seq_len, device="cuda", generator=g).requires_grad_(True)
    A = -torch.rand(d_inner, n, device="cuda", generator=g) - 0.1
    leaves = (proj, delta_src, u)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]

    def run(fn, proj_, delta_, u_):
        return fn(u_, delta_.transpose(1, 2), A, proj_[..., :n].transpose(1, 2), proj_[..., n:].transpose(1, 2),
                  delta_softplus=True)

    out = run(selective_scan_triton, *leaves)
    ref = run(selective_scan_f64, *ref_leaves)
    assert rel_err(out, ref) < 1e-4
    dy = torch.randn_like(ref)
    out.backward(dy.float())
    ref.backward(dy)
    for name, mine, theirs in zip(("proj (B, C)", "delta", "u"), leaves, ref_leaves):
        assert rel_err(mine.grad, theirs.grad) < 1e-3, name


def test_scan_rejects_bad_shapes():
    pytest.importorskip("triton")
    from rom.kernels.triton_scan import selective_scan_triton

    u = torch.randn(1, 4, 8, device="cuda")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_triton(u, u, -torch.ones(4, 16, device="cuda"), torch.randn(1, 8, 8, device="cuda"),
                              torch.randn(1, 16, 8, device="cuda"))


# backward block shapes (BLOCK_D): the default at full occupancy (8 at d_state 16, 4 at 64), what the launch
# halves to for small problems, and the earlier default 16; each lays the state axis over a different number of
# lanes, so each is a different compiled reduction pattern
BLOCKS = [(2, 96, 37, 16, 4), (2, 96, 37, 16, 8), (2, 96, 37, 16, 16), (8, 48, 517, 16, 8),
          (3, 130, 200, 64, 2), (3, 130, 200, 64, 4)]


@pytest.mark.parametrize("case", BLOCKS, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_block_shapes_match_float64(case, dtype):
    pytest.importorskip("triton")
    *shape, block_d = case
    x = _inputs(*shape, dtype=dtype, full=True, seed=stable_seed(tuple(case), str(dtype)))
    out, out_ref, ours, ref = _forward_against_float64(x, dtype, True, bwd_config=(block_d, 1, 1))
    _check_gradients(out, out_ref, ours, ref, dtype)
