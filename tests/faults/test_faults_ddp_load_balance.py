"""Under data parallelism the load-balancing loss counts every rank's tokens: two gloo processes, each with half
of a batch, give (averaged as DDP averages) the loss and router gradient of one process on the whole batch;
the per-rank statistics of before did not."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rom.layers.router import Router, use_global_load_balance

T, D, E = 64, 16, 4
CASES = ((1, False), (2, False), (2, True))  # (top_k, renormalize): the fused top-1 path and the softmax path


def inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, D, generator=g)
    x[: T // 2] += 2.0 * torch.randn(D, generator=g)  # the two halves route differently: local f_i differ
    return x


def loss_and_grad(x: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    router = Router(D, E, top_k, renormalize=renormalize, load_balance_coef=1.0, backend="reference")
    loss = router(x).stats.load_balance_loss
    loss.backward()
    return loss.detach(), router.weight.grad.detach().clone()


def worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = {}
    half = inputs()[rank * T // 2:(rank + 1) * T // 2]
    for global_stats in (True, False):
        use_global_load_balance(global_stats)
        results[global_stats] = []
        for top_k, renormalize in CASES:
            loss, grad = loss_and_grad(half, top_k, renormalize)
            both = torch.cat([loss.reshape(1), grad.flatten()])
            dist.all_reduce(both)  # what DDP does to gradients (and what the trainer's log does to losses)
            results[global_stats].append(both / 2)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(tmp_path: Path) -> dict[bool, list[torch.Tensor]]:
    """{global statistics on: per case (loss, router gradient) averaged over the two ranks}."""
    out = str(tmp_path / "ranks.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    return torch.load(out)


def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    one = []
    for top_k, renormalize in CASES:
        loss, grad = loss_and_grad(inputs(), top_k, renormalize)
        one.append(torch.cat([loss.reshape(1), grad.flatten()]))
    ranks = two_ranks(tmp_path)
    for case, a, b in zip(CASES, one, ranks[True]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m: f"{case}: {m}")
    local = ranks[False]  # the old per-rank statistics: a different loss
    assert all(not torch.allclose(a[:1], b[:1], rtol=1e-4) for a, b in zip(one, local))


def test_validation_needs_no_collective() -> None:
    """Without gradients (validation) the router stays local: no process group needed, no all-reduce."""
    use_global_load_balance(True)
    try:
        with torch.no_grad():
            loss, _ = Router(D, E, 1, load_balance_coef=1.0)(inputs()).stats.load_balance_loss, None
        assert torch.isfinite(loss)
    finally:
        use_global_load_balance(False)
