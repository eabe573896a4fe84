"""Layout-aware projections and expert un/permutation (CPU): values and every gradient against plain torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom import kernels
from rom.kernels.reference.experts import channels_to_rows_reference, rows_to_channels_reference


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("token_input", [True, False], ids=["tokens-in", "channels-in"])
@pytest.mark.parametrize("out_tokens", [True, False], ids=["tokens-out", "channels-out"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_channels_matches_f_linear_forward_and_backward(token_input, out_tokens, bias):
    torch.manual_seed(0)
    b, L, d_in, d_out = 3, 7, 5, 6
    if token_input:
        leaf = torch.randn(b, L, d_in, dtype=torch.float64, requires_grad=True)
        x = leaf.transpose(1, 2)
    else:
        leaf = torch.randn(b, d_in, L, dtype=torch.float64, requires_grad=True)
        x = leaf
    w = torch.randn(d_out, d_in, dtype=torch.float64, requires_grad=True)
    bb = torch.randn(d_out, dtype=torch.float64, requires_grad=True) if bias else None
    out = kernels.linear_channels(x, w, bb, out_tokens=out_tokens)
    ref_tok = F.linear(x.transpose(1, 2), w, bb)  # (b, L, d_out)
    ref = ref_tok if out_tokens else ref_tok.transpose(1, 2)
    assert out.shape == ref.shape and out.is_contiguous()
    assert _rel(out, ref) < 1e-13
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, [leaf, w] + ([bb] if bias else []), g)
    ref_grads = torch.autograd.grad(ref, [leaf, w] + ([bb] if bias else []), g)
    for mine, theirs in zip(grads, ref_grads):
        assert _rel(mine, theirs) < 1e-13
    # the input gradient comes back in the input's own layout: no copy needed upstream
    assert grads[0].is_contiguous()


def test_linear_channels_under_cpu_autocast_computes_in_bf16_and_returns_param_dtypes():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 16, requires_grad=True)
    w = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.linear_channels(x, w)
        ref = F.linear(x.transpose(1, 2), w).transpose(1, 2)
    assert out.dtype == torch.bfloat16 == ref.dtype
    assert _rel(out, ref) < 1e-2
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_linear_channels_rejects_bad_shapes():
    with pytest.raises(ValueError, match="linear_channels"):
        kernels.linear_channels(torch.randn(2, 3, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="bias"):
        kernels.linear_channels(torch.randn(2, 3, 4), torch.randn(5, 3), torch.randn(4))


def _dispatch(T: int, k: int, E: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    idx[: T // 3] = idx[0]  # skewed load, some experts empty
    return kernels.make_dispatch(idx, E)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_rows_channels_references_match_loops_and_are_adjoint(top_k):
    b, L, C, E = 2, 5, 4, 6
    d = _dispatch(b * L, top_k, E, seed=top_k)
    rows = torch.randn(b * L * top_k, C, dtype=torch.float64)
    cf = torch.randn(b, C, L, dtype=torch.float64)
    out = rows_to_channels_reference(rows, d.inverse_index, top_k, b, L, scale=0.5)
    back = channels_to_rows_reference(cf, d.inverse_index, top_k, scale=0.5)
    for t in range(b * L):
        bi, li = divmod(t, L)
        want = sum(rows[d.inverse_index[t * top_k + j]] for j in range(top_k)) * 0.5
        assert torch.allclose(out[bi, :, li], want)
        for j in range(top_k):
            assert torch.allclose(back[d.inverse_index[t * top_k + j]], 0.5 * cf[bi, :, li])
    # <R2C(rows), cf> == <rows, C2R(cf)>: each is the other's backward
    assert torch.allclose((out * cf).sum(), (rows * back).sum())


@pytest.mark.parametrize("top_k", [1, 2])
def test_layout_aware_permutations_gradcheck(top_k):
    b, L, C, E = 2, 4, 3, 5
    d = _dispatch(b * L, top_k, E, seed=7 + top_k)
    rows = torch.randn(b * L * top_k, C, dtype=torch.float64, requires_grad=True)
    cf = torch.randn(b, C, L, dtype=torch.float64, requires_grad=True)
    scale = 1.0 / top_k
    assert torch.autograd.gradcheck(lambda r: kernels.unpermute_to_channels(r, d, b, L, scale, "reference"), (rows,))
    assert torch.autograd.gradcheck(lambda x: kernels.permute_from_channels(x, d, "reference"), (cf,))
    strided = torch.randn(b, L, C, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kernels.permute_from_channels(x.transpose(1, 2), d, "reference"),
                                    (strided,))


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("weighted", [True, False])
def test_permute_and_unpermute_backward_equal_plain_autograd(top_k, weighted):
    """The gather-only backward of permute / unpermute equals autograd through index_select (index_add)."""
    T, C, E = 11, 4, 5
    d = _dispatch(T, top_k, E, seed=3)
    x = torch.randn(T, C, dtype=torch.float64, requires_grad=True)
    w = torch.rand(T, top_k, dtype=torch.float64, requires_grad=True) if weighted else None
    out = kernels.unpermute(kernels.permute(x, d) * 1.5, d, w)
    g = torch.randn_like(out)
    inputs = [x] + ([w] if weighted else [])
    grads = torch.autograd.grad(out, inputs, g)
    rows = x.index_select(0, d.token_index) * 1.5
    y = rows.index_select(0, d.inverse_index).view(T, top_k, C)
    ref = (y * w.unsqueeze(-1)).sum(1) if weighted else y.sum(1)
    assert torch.allclose(out, ref)
    for mine, theirs in zip(grads, torch.autograd.grad(ref, inputs, g)):
        assert torch.allclose(mine, theirs)


def test_layout_permutations_reject_bad_shapes():
    d = _dispatch(6, 1, 3, seed=0)
    with pytest.raises(ValueError, match="unpermute_to_channels"):
        kernels.unpermute_to_channels(torch.randn(5, 2), d, 2, 3)
    with pytest.raises(ValueError, match="batch\\*seq_len"):
        kernels.unpermute_to_channels(torch.randn(6, 2), d, 2, 4)
    with pytest.raises(ValueError, match="permute_from_channels"):
        kernels.permute_from_channels(torch.randn(2, 4, 4), d)
