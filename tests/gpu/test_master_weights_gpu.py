"""train.master_weights on CUDA: the fused AdamW update against float64, and training runs (eager and graphed,
with and without gradient accumulation) against the default policy and each other."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the trainer test helpers

from gpu_helpers import rel_err  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("n", [1, 2047, 2049, 1 << 20])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adamw_step_matches_float64(n: int, weight_decay: float) -> None:
    pytest.importorskip("triton")
    from rom.kernels.adamw import adamw_step_reference
    from rom.kernels.triton_adamw import adamw_step_triton

    torch.manual_seed(n)
    master = torch.randn(n, device="cuda")
    m, v = torch.zeros_like(master), torch.zeros_like(master)
    work = torch.full((n,), float("nan"), device="cuda", dtype=torch.bfloat16)  # poisoned
    ref = [master.double(), m.double(), v.double(), torch.empty(n, device="cuda", dtype=torch.float64)]
    for step in range(1, 5):
        grad = torch.randn(n, device="cuda").to(torch.bfloat16)
        args = (3e-3, weight_decay, 0.9, 0.95, 1e-8, step)
        adamw_step_triton(master, grad, m, v, work, *args)
        adamw_step_reference(ref[0], grad, ref[1], ref[2], ref[3], *args)
    assert rel_err(master, ref[0]) < 1e-6 and rel_err(m, ref[1]) < 1e-6 and rel_err(v, ref[2]) < 1e-6
    assert torch.equal(work, master.to(torch.bfloat16))  # round to nearest, as Tensor.to


def _config(**train: object) -> dict:
    from test_train_support import VOCAB, tiny_config

    cfg = tiny_config(**train)
    cfg["model"] = {"d_model": 64, "n_layer": 2, "vocab_size": VOCAB, "pattern": "rom",
                    "rom": {"num_experts": 4, "top_k": 1}, "mamba": {"d_state": 16}}
    return cfg


def _losses(cfg: dict, data: Path, out: Path) -> dict[int, float]:
    from rom.config import run_config_from_dict
    from rom.train.loop import train
    from test_train_support import step_losses

    train(run_config_from_dict(cfg), data, out, device="cuda")
    return step_losses(out)


@pytest.mark.parametrize("micro_batch_size", [8, 4])
def test_master_weight_training_on_gpu(micro_batch_size: int, tmp_path: Path) -> None:
    """Graphed and eager master-weight runs agree (to 1e-5); both follow the default policy's losses."""
    pytest.importorskip("triton")
    from test_train_support import make_data

    data = make_data(tmp_path / "data", n_train=20_000, n_val=4_000)
    common = {"tokens": 32 * 8 * 6, "batch_size": 8, "micro_batch_size": micro_batch_size, "checkpoint_every": 100,
              "eval_every": 0}
    default = _losses(_config(**common), data, tmp_path / "default")
    eager = _losses(_config(master_weights=True, cuda_graphs=False, **common), data, tmp_path / "eager")
    graphed = _losses(_config(master_weights=True, cuda_graphs=True, **common), data, tmp_path / "graphed")
    assert "captured the micro-batch step" in (tmp_path / "graphed" / "train.log").read_text()
    assert default.keys() == eager.keys() == graphed.keys()
    for k in default:
        assert graphed[k] == pytest.approx(eager[k], rel=1e-5), k
        assert eager[k] == pytest.approx(default[k], rel=2e-3), k
