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


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adamw_step_matches_float64(weight_decay: float) -> None:
    """Weights of several sizes (ending inside a block and a program's chunk), bf16 and fp32 gradients and a
    transposed weight (the reference's) in one call, four steps on the same tensors (the cached address table),
    against float64; working copies poisoned first and then exactly the masters rounded to nearest."""
    pytest.importorskip("triton")
    from rom.kernels.reference.adamw import adamw_step_reference
    from rom.kernels.triton_adamw import adamw_step_triton

    torch.manual_seed(0)
    sizes = (1, 2047, 2049, 4 * 2048 + 1, 1 << 20, 3 << 20)
    masters = [torch.randn(n, device="cuda") for n in sizes] + [torch.randn(16, 48, device="cuda").t()]
    grad_dtypes = [torch.bfloat16, torch.float32] * 3 + [torch.bfloat16]
    ms, vs = [torch.zeros_like(p) for p in masters], [torch.zeros_like(p) for p in masters]
    works = [torch.full_like(p, float("nan"), dtype=torch.bfloat16) for p in masters]
    ref = [[t.double() for t in ts] for ts in (masters, ms, vs)]
    ref_works = [torch.empty_like(p, dtype=torch.float64) for p in masters]
    grads = [torch.empty(p.shape, device="cuda", dtype=dt) for p, dt in zip(masters, grad_dtypes)]
    for step in range(1, 5):
        for g in grads:
            g.copy_(torch.randn(g.shape, device="cuda"))
        args = (3e-3, weight_decay, 0.9, 0.95, 1e-8, step)
        adamw_step_triton(masters, grads, ms, vs, works, *args)
        adamw_step_reference(ref[0], grads, ref[1], ref[2], ref_works, *args)
    for i, p in enumerate(masters):
        assert rel_err(p, ref[0][i]) < 1e-6 and rel_err(ms[i], ref[1][i]) < 1e-6 and rel_err(vs[i], ref[2][i]) < 1e-6
        assert torch.equal(works[i], p.to(torch.bfloat16)), i  # round to nearest, as Tensor.to


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
