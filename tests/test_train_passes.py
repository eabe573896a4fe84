"""Passes over the training split: recorded per run (training.passes, and per cooldown branch), and a run
planned beyond rom.train.loop.MAX_PASSES passes is warned about in train.log and on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from rom.config import run_config_from_dict
from rom.train.loop import MAX_PASSES, train
from test_train_support import make_data, tiny_config


def test_passes_recorded_and_over_the_limit_warned(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_data(tmp_path / "data", n_train=2_000, n_val=2_000)  # 12 steps x 128 tokens: 0.77 passes
    part = train(run_config_from_dict(tiny_config()), data, tmp_path / "few")
    assert part["training"]["passes"] == pytest.approx(12 * 128 / 2_000)
    assert "passes over" not in (tmp_path / "few" / "train.log").read_text()

    tokens = 32 * 4 * 80  # 80 steps = 5.12 passes
    part = train(run_config_from_dict(tiny_config(tokens=tokens, eval_every=0, checkpoint_every=100)), data,
                 tmp_path / "many")
    assert part["training"]["passes"] == pytest.approx(tokens / 2_000) and part["training"]["passes"] > MAX_PASSES
    log = (tmp_path / "many" / "train.log").read_text()
    assert "WARNING" in log and "5.12 passes over the 2000-token training split, more than 4" in log
    assert "5.12 passes" in capsys.readouterr().err
