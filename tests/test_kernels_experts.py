"""Sort-based expert path: grouped GEMM vs per-expert loop vs a dense per-token reference."""

from __future__ import annotations

import pytest
import torch

from rom.kernels import expert_matmul, grouped_mm_op, make_dispatch, permute, unpermute
from rom.kernels.experts import Dispatch


def random_routing(tokens: int, top_k: int, experts: int, seed: int, empty: tuple[int, ...] = ()) -> torch.Tensor:
    """(tokens, top_k) distinct expert ids per token, never using the experts in ``empty``."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([e for e in range(experts) if e not in empty])
    rows = [allowed[torch.randperm(len(allowed), generator=g)[:top_k]] for _ in range(tokens)]
    return torch.stack(rows)


def dense_reference(x, weight, idx, weights):
    """out[t] = sum_j w[t, j] * x[t] @ W[idx[t, j]], one token at a time."""
    rows = []
    for t in range(x.shape[0]):
        acc = 0
        for j in range(idx.shape[1]):
            wt = 1.0 if weights is None else weights[t, j]
            acc = acc + wt * (x[t] @ weight[idx[t, j]])
        rows.append(acc)
    return torch.stack(rows)


def expert_path(x, weight, idx, weights, backend):
    d = make_dispatch(idx, weight.shape[0])
    return unpermute(expert_matmul(permute(x, d), weight, d, backend=backend), d, weights)


CASES = [
    # tokens, top_k, experts, d_in, d_out, empty experts
    (9, 1, 4, 8, 12, (2,)),
    (9, 2, 4, 8, 12, (0, 3)),
    (11, 3, 6, 6, 5, (1,)),  # unaligned d_in/d_out: padded for the grouped GEMM
    (5, 2, 3, 4, 4, ()),
]


@pytest.mark.parametrize("tokens,top_k,experts,d_in,d_out,empty", CASES)
@pytest.mark.parametrize("use_weights", [True, False])
def test_grouped_loop_and_dense_agree_forward_and_backward(tokens, top_k, experts, d_in, d_out, empty, use_weights):
    seed = tokens * 100 + top_k * 10 + experts
    g = torch.Generator().manual_seed(seed)
    idx = random_routing(tokens, top_k, experts, seed, empty)
    x = torch.randn(tokens, d_in, generator=g)
    weight = torch.randn(experts, d_in, d_out, generator=g)
    w = torch.rand(tokens, top_k, generator=g) if use_weights else None
    cot = torch.randn(tokens, d_out, generator=g)
    results = {}
    for name in ("dense", "reference", "loop"):
        xs = x.clone().requires_grad_()
        ws = weight.clone().requires_grad_()
        wt = None if w is None else w.clone().requires_grad_()
        if name == "dense":
            y = dense_reference(xs, ws, idx, wt)
        else:
            y = expert_path(xs, ws, idx, wt, name)
        leaves = [xs, ws] + ([wt] if wt is not None else [])
        results[name] = [y, *torch.autograd.grad((y * cot).sum(), leaves)]
    for name in ("reference", "loop"):
        for got, want in zip(results[name], results["dense"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for e in empty:  # an expert without tokens gets an exactly zero weight gradient
        assert torch.count_nonzero(results["reference"][2][e]) == 0


def test_float64_falls_back_to_loop_and_is_exact() -> None:
    idx = random_routing(7, 2, 3, 1, empty=(1,))
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    y = expert_path(x, weight, idx, None, "auto")
    torch.testing.assert_close(y, dense_reference(x, weight, idx, None))
    assert torch.autograd.gradcheck(lambda a, b: expert_path(a, b, idx, None, "reference"), (x, weight))


def test_bfloat16_grouped_forward_close_to_float32() -> None:
    idx = random_routing(16, 2, 4, 2)
    x = torch.randn(16, 16)
    weight = torch.randn(4, 16, 8)
    y16 = expert_path(x.bfloat16(), weight.bfloat16(), idx, None, "reference")
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), expert_path(x, weight, idx, None, "loop"), rtol=3e-2, atol=1e-1)


def test_non_contiguous_incoming_gradient() -> None:
    """grouped_mm rejects strided gradients; the autograd.Function makes them contiguous."""
    idx = random_routing(6, 2, 3, 3)
    d = make_dispatch(idx, 3)
    x = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(3, 8, 16, requires_grad=True)
    y = expert_matmul(permute(x, d), weight, d)
    (y.t() @ torch.randn(12, 4)).sum().backward()  # the gradient reaching y is a transposed view
    assert x.grad is not None and weight.grad is not None and torch.isfinite(weight.grad).all()


def test_dispatch_invariants() -> None:
    idx = torch.tensor([[2, 0], [0, 1], [2, 1], [0, 2]])
    d = make_dispatch(idx, 4)
    assert isinstance(d, Dispatch)
    assert d.tokens_per_expert.tolist() == [3, 2, 3, 0]
    assert d.tokens_per_expert.dtype == torch.int64
    assert d.offsets.tolist() == [3, 5, 8, 8] and d.offsets.dtype == torch.int32
    # rows sorted by expert, stable in (token, slot) order
    assert d.slot_index.tolist() == [1, 2, 6, 3, 5, 0, 4, 7]
    assert d.token_index.tolist() == [0, 1, 3, 1, 2, 0, 2, 3]
    assert idx.reshape(-1)[d.slot_index].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert d.slot_index[d.inverse_index].tolist() == list(range(8))
    assert (d.num_tokens, d.top_k, d.num_experts) == (4, 2, 4)


def test_unpermute_inverts_permute() -> None:
    idx = random_routing(10, 3, 5, 4)
    d = make_dispatch(idx, 5)
    x = torch.randn(10, 7)
    torch.testing.assert_close(unpermute(permute(x, d), d, None), 3 * x)
    w = torch.rand(10, 3)
    torch.testing.assert_close(unpermute(permute(x, d), d, w), w.sum(1, keepdim=True) * x)


def test_no_host_synchronisation_on_the_grouped_path() -> None:
    """Meta tensors have no data: any .item()/.tolist()/.cpu()-style sync raises. Forward and backward."""
    device = torch.device("meta")
    idx = torch.randint(0, 4, (10, 2), device=device)
    x = torch.randn(10, 16, device=device, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(4, 16, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.rand(10, 2, device=device, dtype=torch.bfloat16, requires_grad=True)
    d = make_dispatch(idx, 4)
    y = unpermute(expert_matmul(permute(x, d), weight, d, backend="reference"), d, w)
    y.sum().backward()
    assert y.shape == (10, 32) and weight.grad.shape == weight.shape and w.grad.shape == w.shape
    with pytest.raises((RuntimeError, NotImplementedError)):  # the check itself can fail: the loop syncs
        expert_matmul(permute(x, d), weight, d, backend="loop")


def test_grouped_mm_op_is_what_the_path_dispatches_to() -> None:
    op = grouped_mm_op()
    assert op is not None
    seen = []

    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.overloadpacket)
            return func(*args, **(kwargs or {}))

    idx = random_routing(4, 1, 2, 5)
    d = make_dispatch(idx, 2)
    x = torch.randn(4, 8)
    with Record():
        expert_matmul(permute(x, d), torch.randn(2, 8, 4), d)
    assert op in seen


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_dispatch(torch.tensor([0, 1]), 2), "must be \\(tokens, top_k\\)"),
        (lambda: make_dispatch(torch.tensor([[0], [5]]), 2), "expert ids must lie in"),
        (lambda: make_dispatch(torch.tensor([[0.0]]), 2), "must be int64"),
        (
            lambda: expert_matmul(torch.randn(2, 3), torch.randn(2, 4, 5), make_dispatch(torch.tensor([[0], [1]]), 2)),
            "x_perm must be",
        ),
        (
            lambda: expert_matmul(torch.randn(2, 4), torch.randn(3, 4, 5), make_dispatch(torch.tensor([[0], [1]]), 2)),
            "weight must be",
        ),
        (
            lambda: unpermute(torch.randn(2, 4), make_dispatch(torch.tensor([[0], [1]]), 2), torch.rand(2, 2)),
            "weights must be",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_grouped_path_has_no_host_sync_and_matches_loop() -> None:
    device = torch.device("cuda")
    idx = random_routing(64, 2, 8, 9, empty=(5,)).to(device)
    x = torch.randn(64, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(8, 32, 48, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.rand(64, 2, device=device, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        d = make_dispatch(idx, 8)
        y = unpermute(expert_matmul(permute(x, d), weight, d, backend="auto"), d, w)
        y.float().square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    grads = (x.grad.clone(), weight.grad.clone(), w.grad.clone())
    x.grad = weight.grad = w.grad = None
    y_loop = expert_path(x, weight, idx, w, "loop")
    y_loop.float().square().sum().backward()
    torch.testing.assert_close(y, y_loop, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, (x.grad, weight.grad, w.grad)):
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=1e-1)
    assert torch.count_nonzero(grads[1][5]) == 0
