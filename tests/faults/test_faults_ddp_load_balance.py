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


def test_torchrun_with_load_balancing_matches_one_process(fault_data: Path, tmp_path: Path) -> None:
    """The trainer end to end (about 10 s): two gloo ranks x 2 sequences against one process x 4, with the
    load-balancing loss on. Per-rank statistics made step 1 differ by ~1e-4 (tests/test_train_loop.py had to
    switch the loss off); global ones agree to float reduction order."""
    from rom.config import run_config_from_dict
    from rom.train.loop import train
    from test_train_support import run_cli, step_losses, tiny_config, write_config

    cfg = tiny_config(tokens=32 * 4 * 4, eval_every=0)
    cfg["model"]["rom"]["load_balance_coef"] = 0.01
    cfg_file = write_config(tmp_path / "run.yaml", cfg)
    train(run_config_from_dict(cfg), fault_data, tmp_path / "one")
    result = run_cli(["train", "--config", str(cfg_file), "--data", str(fault_data), "--out", str(tmp_path / "two")],
                     torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-6), (k, a[k], b[k])
