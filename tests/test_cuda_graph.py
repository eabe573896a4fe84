"""CUDA-graph training option on a CPU machine: config rules, run identity, the CPU fallback, and the router
statistics snapshot that graphed runs rely on. (The captured step itself: tests/gpu/test_cuda_graph_gpu.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rom.config import ConfigError, run_config_from_dict
from rom.layers.aux import RouterStats
from rom.train.distributed import DistInfo
from rom.train.loop import cuda_graphs_decision, train
from test_train_support import make_data, step_losses, tiny_config


def test_cuda_graphs_and_compile_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="cuda_graphs and train.compile are exclusive"):
        run_config_from_dict(tiny_config(cuda_graphs=True, compile=True))


def test_cuda_graphs_is_runtime_only_for_the_run_id() -> None:
    eager = run_config_from_dict(tiny_config())
    graphed = run_config_from_dict(tiny_config(cuda_graphs=True))
    assert graphed.train.cuda_graphs and not eager.train.cuda_graphs
    assert graphed.run_id == eager.run_id  # the same run, only executed differently


def test_cuda_graphs_unset_with_compile_is_allowed() -> None:
    cfg = run_config_from_dict(tiny_config(compile=True))  # unset means "where it can run": compile wins
    assert cfg.train.cuda_graphs is None


def _info(device: str, world: int = 1) -> DistInfo:
    return DistInfo(rank=0, world_size=world, local_rank=0, device=torch.device(device),
                    backend="nccl" if world > 1 else "none")


@pytest.mark.parametrize(("setting", "device", "world", "compile_", "expected"), [
    (None, "cuda", 1, False, (True, "one CUDA process (train.cuda_graphs unset)")),
    (True, "cuda", 1, False, (True, "one CUDA process")),
    (False, "cuda", 1, False, (False, "train.cuda_graphs=false")),
    (None, "cpu", 1, False, (False, "device cpu is not CUDA")),
    (True, "cpu", 1, False, (False, "device cpu is not CUDA")),   # one config serves CPU and GPU hosts
    (None, "cuda", 2, False, (False, "2 processes (DDP / FSDP hooks are not captured)")),
    (None, "cuda", 1, True, (False, "train.compile is on (torch.compile has its own CUDA graphs, "
                                    "mode='reduce-overhead')")),
])
def test_cuda_graphs_decision(setting: bool | None, device: str, world: int, compile_: bool,
                              expected: tuple[bool, str]) -> None:
    t = run_config_from_dict(tiny_config(cuda_graphs=setting, compile=compile_)).train
    assert cuda_graphs_decision(t, _info(device, world)) == expected


def test_cuda_graphs_true_under_torchrun_is_an_error() -> None:
    t = run_config_from_dict(tiny_config(cuda_graphs=True)).train
    with pytest.raises(ConfigError, match="train.cuda_graphs=true runs one CUDA process; this run has 4"):
        cuda_graphs_decision(t, _info("cuda", 4))


def test_cuda_graphs_on_cpu_trains_eagerly_and_says_so(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", n_train=8_000, n_val=2_000)
    small = {"tokens": 32 * 4 * 4, "checkpoint_every": 100, "eval_every": 0}
    train(run_config_from_dict(tiny_config(**small)), data, tmp_path / "eager", device="cpu")
    train(run_config_from_dict(tiny_config(cuda_graphs=True, **small)), data, tmp_path / "graphs", device="cpu")
    assert step_losses(tmp_path / "graphs") == step_losses(tmp_path / "eager")
    assert "train.cuda_graphs=true ignored: device cpu is not CUDA" in (tmp_path / "graphs" / "train.log").read_text()
    assert "CUDA graphs off: device cpu is not CUDA" in (tmp_path / "eager" / "train.log").read_text()


def test_router_stats_snapshot_owns_its_tensors() -> None:
    logits = torch.randn(6, 4)
    stats = RouterStats(name="mixer.router", layer=2, tokens_per_expert=torch.tensor([1.0, 2.0, 3.0, 0.0]),
                        load_balance_loss=torch.tensor(1.5, requires_grad=True) * 1, weighted_loss=torch.tensor(0.1),
                        logits=logits)
    snap = stats.snapshot()
    entropy, z = stats.entropy.clone(), stats.z_loss.clone()
    stats.tokens_per_expert.zero_()  # what a graph replay does to the originals
    stats.logits.mul_(3.0)
    assert snap.name == "mixer.router" and snap.layer == 2 and snap.z_loss_value is None
    assert snap.tokens_per_expert.tolist() == [1.0, 2.0, 3.0, 0.0]
    assert not snap.load_balance_loss.requires_grad and float(snap.load_balance_loss) == 1.5
    assert torch.equal(snap.entropy, entropy) and torch.equal(snap.z_loss, z)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_captured_step_needs_cuda() -> None:
    from rom.train.cuda_graph import CapturedStep

    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        CapturedStep(lambda: None, [])
