"""train.deterministic on CPU: a hybrid (attention) model trains with it, to bit for bit the weights of the
run without it (the CPU path is unchanged); the global torch flags are restored afterwards; the run id keeps
the option only when on. The CUDA side (identical gradients) is tests/gpu/test_attention_determinism.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rom.config import run_config_from_dict
from rom.models.files import load_state_dict
from rom.records import load_part
from rom.train.loop import deterministic_mode, train
from test_train_support import make_data, real_model_works, tiny_config


def hybrid_config(**train: object) -> dict:
    cfg = tiny_config(**train)
    cfg["name"] = "tiny-hybrid"
    cfg["model"] = {"d_model": 32, "n_layer": 2, "vocab_size": 256, "pattern": "hybrid", "mlp": "dense",
                    "mamba": {"d_state": 4}, "attention": {"n_heads": 4, "window": 16}}  # seq 32 > window
    return cfg


def test_deterministic_mode_sets_and_restores_flags() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_option_is_hashed_only_when_on() -> None:
    base = run_config_from_dict(hybrid_config())
    assert run_config_from_dict(hybrid_config(deterministic=False)).run_id == base.run_id
    assert run_config_from_dict(hybrid_config(deterministic=True)).run_id != base.run_id


@pytest.mark.skipif(not real_model_works(), reason="needs the real rom.models (hybrid with attention)")
def test_hybrid_trains_deterministically_and_cpu_results_are_unchanged(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    on = train(run_config_from_dict(hybrid_config(deterministic=True)), data, tmp_path / "on")
    off = train(run_config_from_dict(hybrid_config()), data, tmp_path / "off")
    assert on["training"]["deterministic"] and not off["training"]["deterministic"]
    assert on["training"]["final_val_loss"] < 5.5  # it learns (ln 256 = 5.55 at the start)
    assert on["training"]["final_val_loss"] == off["training"]["final_val_loss"]
    a = load_state_dict(tmp_path / "on")
    b = load_state_dict(tmp_path / "off")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "deterministic algorithms on" in (tmp_path / "on" / "train.log").read_text()
    assert load_part(tmp_path / "on" / "train.json", "train")["config"]["train"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()
