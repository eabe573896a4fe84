"""Killed and resumed runs: metrics.jsonl equal to an uninterrupted run's (SIGTERM mid logging window, SIGKILL),
corrupt checkpoints: fall back to the previous one, or say how to start over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rom.cli import main as rom_main
from rom.config import run_config_from_dict
from rom.models.files import load_state_dict
from rom.train.loop import train
from rom.train.metrics import read_metrics
from test_train_support import run_cli, tiny_config, write_config

# log every 3 steps, checkpoint every 4: a signal at step 5 falls inside the logging window 4..6
CFG = dict(log_every=3, checkpoint_every=4, eval_every=6)


def curve(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (wall clock differs between any two runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")}
            for row in read_metrics(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    train(run_config_from_dict(tiny_config(**CFG)), fault_data, out)
    return out


def args_for(tmp_path: Path, data: Path) -> list[str]:
    cfg = write_config(tmp_path / "run.yaml", tiny_config(**CFG))
    return ["train", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run")]


def same_weights(a: Path, b: Path) -> bool:
    import torch

    x, y = load_state_dict(a), load_state_dict(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sigterm_resume_writes_the_uninterrupted_metrics(reference: Path, fault_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    args = args_for(tmp_path, fault_data)
    monkeypatch.setenv("ROM_TEST_SIGNAL_AT_STEP", "5:SIGTERM")
    assert rom_main(args) == 128 + 15
    assert "SIGTERM received: checkpoint of step 5" in capsys.readouterr().err
    assert max(r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")) == 4  # no line at step 5
    monkeypatch.delenv("ROM_TEST_SIGNAL_AT_STEP")
    assert rom_main(args) == 0
    assert curve(tmp_path / "run") == curve(reference)  # same lines; the step-6 line averages steps 5 and 6
    assert same_weights(tmp_path / "run", reference)


def test_sigkill_resume_writes_the_uninterrupted_metrics(reference: Path, fault_data: Path, tmp_path: Path) -> None:
    args = args_for(tmp_path, fault_data)
    killed = run_cli(args, env={"ROM_TEST_SIGNAL_AT_STEP": "10:SIGKILL"})  # after the step-8 checkpoint
    assert killed.returncode == -9
    assert rom_main(args) == 0
    assert curve(tmp_path / "run") == curve(reference)
    assert same_weights(tmp_path / "run", reference)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(reference: Path, fault_data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    args = args_for(tmp_path, fault_data)
    monkeypatch.setenv("ROM_TEST_SIGNAL_AT_STEP", "9:SIGINT")  # checkpoints at 4, 8, then 9
    assert rom_main(args) == 130
    monkeypatch.delenv("ROM_TEST_SIGNAL_AT_STEP")
    ckpt = tmp_path / "run" / "checkpoint"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == 9 and meta["previous"]["step"] == 8
    newest = ckpt / meta["file"]
    newest.write_bytes(newest.read_bytes()[:200])
    capsys.readouterr()
    assert rom_main(args) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and str(newest) in err and "truncated" in err and "previous checkpoint" in err
    assert "step 8 instead of 9" in err
    assert curve(tmp_path / "run") == curve(reference)  # steps 9.. redone bit for bit
    assert same_weights(tmp_path / "run", reference)


def test_corrupt_checkpoint_without_fallback_says_how_to_start_over(fault_data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    args = args_for(tmp_path, fault_data)
    monkeypatch.setenv("ROM_TEST_SIGNAL_AT_STEP", "2:SIGINT")  # one checkpoint only
    assert rom_main(args) == 130
    monkeypatch.delenv("ROM_TEST_SIGNAL_AT_STEP")
    ckpt = tmp_path / "run" / "checkpoint"
    state = next(ckpt.glob("step-*.pt"))
    data = state.read_bytes()
    state.write_bytes(data[:-10] + b"0123456789")  # same size, other bytes
    capsys.readouterr()
    assert rom_main(args) == 1
    err = capsys.readouterr().err
    assert str(state) in err and "corrupt" in err and "no previous checkpoint" in err
    assert f"rm -r {ckpt}" in err and "same `rom train` command" in err and "Traceback" not in err

    (ckpt / "meta.json").write_text("{torn")
    assert rom_main(args) == 1
    err = capsys.readouterr().err
    assert str(ckpt / "meta.json") in err and f"rm -r {ckpt}" in err
    import shutil

    shutil.rmtree(ckpt)  # the advice works: the run starts over and completes
    assert rom_main(args) == 0
