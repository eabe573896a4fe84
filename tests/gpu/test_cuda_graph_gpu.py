"""Training with train.cuda_graphs on CUDA: the captured step trains exactly as the eager loop does (losses,
router statistics, final weights, with gradient accumulation and validation in between), resumes from a
checkpoint, and refuses what it cannot replay."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the trainer test helpers

from gpu_helpers import rel_err  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _config(pattern: str, **train: object) -> dict:
    from test_train_support import VOCAB, tiny_config

    cfg = tiny_config(**train)
    cfg["model"] = {"d_model": 64, "n_layer": 2, "vocab_size": VOCAB, "pattern": pattern,
                    "rom": {"num_experts": 4, "top_k": 1}, "mamba": {"d_state": 16}}
    return cfg


def _run(cfg: dict, data: Path, out: Path) -> Path:
    from rom.config import run_config_from_dict
    from rom.train.loop import train

    train(run_config_from_dict(cfg), data, out, device="cuda")
    return out


@pytest.mark.parametrize("pattern", ["mamba", "rom"])
def test_graphed_training_matches_eager(pattern: str, tmp_path: Path) -> None:
    pytest.importorskip("triton")
    from rom.models.files import load_trained_model
    from rom.train.metrics import read_metrics
    from test_train_support import make_data

    data = make_data(tmp_path / "data", n_train=20_000, n_val=4_000)
    common = {"tokens": 32 * 8 * 6, "batch_size": 8, "micro_batch_size": 4, "checkpoint_every": 100,
              "eval_every": 3, "log_every": 2}  # accumulation over 2 micro-batches, a validation pass midway
    eager = _run(_config(pattern, cuda_graphs=False, **common), data, tmp_path / "eager")
    graphs = _run(_config(pattern, cuda_graphs=True, **common), data, tmp_path / "graphs")
    assert "captured the micro-batch step as a CUDA graph" in (graphs / "train.log").read_text()

    rows_e, rows_g = read_metrics(eager / "metrics.jsonl"), read_metrics(graphs / "metrics.jsonl")
    assert [r["step"] for r in rows_e] == [r["step"] for r in rows_g]
    compared = 0
    for re_, rg in zip(rows_e, rows_g):
        keys = [k for k in re_ if k.startswith(("train/", "val/", "router/", "aux/")) or k == "grad_norm"]
        assert set(keys) <= set(rg), f"step {re_['step']}: graphed row lacks {set(keys) - set(rg)}"
        for k in keys:
            assert rg[k] == pytest.approx(re_[k], rel=1e-5, abs=1e-7), f"step {re_['step']} {k}"
            compared += 1
    assert compared > 10
    if pattern == "rom":
        assert any(k.startswith("router/") for k in rows_g[0])

    model_e, _ = load_trained_model(eager)
    model_g, _ = load_trained_model(graphs)
    state_e, state_g = model_e.state_dict(), model_g.state_dict()
    bad = {n: rel_err(state_g[n], state_e[n]) for n in state_e}
    bad = {n: e for n, e in bad.items() if not e < 1e-5}
    assert not bad, f"final weights differ: {bad}"


def test_default_trains_graphed_and_falls_back_when_a_capture_fails(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """train.cuda_graphs unset: graphed on one GPU; a model whose step cannot be captured trains eagerly (the
    same losses as an explicitly eager run) with a warning, and with cuda_graphs=true the failure is an error."""
    pytest.importorskip("triton")
    from rom.train import loop
    from test_train_support import make_data, step_losses

    data = make_data(tmp_path / "data", n_train=20_000, n_val=4_000)
    small = {"tokens": 32 * 4 * 4, "checkpoint_every": 100, "eval_every": 0}
    default = _run(_config("rom", **small), data, tmp_path / "default")
    assert "captured the micro-batch step as a CUDA graph" in (default / "train.log").read_text()
    eager = _run(_config("rom", cuda_graphs=False, **small), data, tmp_path / "eager")

    class Uncapturable:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(loop, "GraphedMicroStep", Uncapturable)
    fallback = _run(_config("rom", **small), data, tmp_path / "fallback")
    log_text = (fallback / "train.log").read_text()
    assert "CUDA graphs off: capturing the micro-batch step failed" in log_text
    got, want = step_losses(fallback), step_losses(eager)
    assert got.keys() == want.keys() and all(got[s] == pytest.approx(want[s], rel=1e-5) for s in want)
    with pytest.raises(RuntimeError, match="train.cuda_graphs=true: capturing the micro-batch step failed"):
        _run(_config("rom", cuda_graphs=True, **small), data, tmp_path / "required")


def test_graphed_run_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    from test_train_support import make_data, step_losses

    data = make_data(tmp_path / "data", n_train=20_000, n_val=4_000)
    cfg = _config("rom", cuda_graphs=True, tokens=32 * 4 * 8, checkpoint_every=3, eval_every=0)
    ref = _run(cfg, data, tmp_path / "ref")
    monkeypatch.setenv("ROM_TEST_SIGNAL_AT_STEP", "4:SIGTERM")
    with pytest.raises(Exception, match="SIGTERM"):
        _run(cfg, data, tmp_path / "run")
    monkeypatch.delenv("ROM_TEST_SIGNAL_AT_STEP")
    out = _run(cfg, data, tmp_path / "run")  # resumes from step 4, captures a new graph
    assert "resumed" in (out / "train.log").read_text()
    resumed, expected = step_losses(out), step_losses(ref)
    assert resumed.keys() == expected.keys()
    assert all(resumed[s] == pytest.approx(expected[s], rel=1e-5) for s in expected)


def test_captured_step_refuses_other_shapes_and_replaced_grads() -> None:
    pytest.importorskip("triton")
    from rom.config import MambaConfig, ModelConfig, Pattern, Precision, RoMConfig
    from rom.models import build_model
    from rom.train.cuda_graph import GraphedMicroStep

    cfg = ModelConfig(d_model=64, n_layer=1, vocab_size=256, pattern=Pattern.ROM, mamba=MambaConfig(d_state=16),
                      rom=RoMConfig(num_experts=4, top_k=1))
    model = build_model(cfg).cuda()
    step = GraphedMicroStep(model, (2, 64), 256, 1, torch.device("cuda"), Precision.AUTO)
    x = torch.randint(0, 256, (2, 64), device="cuda")
    ce, aux, stats = step(x, x)
    assert torch.isfinite(ce) and torch.isfinite(aux) and len(stats) == 1
    with pytest.raises(ValueError, match=r"captured for batches of shape \(2, 64\)"):
        step(x[:, :32], x[:, :32])
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="replaced"):
        step.captured.check_gradients_in_place()
