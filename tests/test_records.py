"""Run records: train part -> (eval, flops parts) -> `rom record` -> load_record, and its failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rom.cli import main as rom_main
from rom.config import run_config_from_dict
from rom.records import collect_parts, load_record, validate_record
from rom.train.loop import train
from test_train_support import make_data, tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rec")
    data = make_data(root / "data", n_train=8000, n_val=3000)
    run = root / "run"
    train(run_config_from_dict(tiny_config(tokens=32 * 4 * 3, eval_every=0)), data, run)
    return run, data


def test_train_part_round_trip(run_dir: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    run, data = run_dir
    final = run / "final.json"
    # train alone cannot make a final record (eval and flops are required fields of the schema)
    assert rom_main(["record", "--run", str(run), "--out", str(final)]) == 1
    assert "missing field" in capsys.readouterr().err and not final.exists()
    assert rom_main(["record", "--run", str(run), "--out", str(final), "--require", "eval,flops"]) == 1
    assert "eval.json: required part 'eval' is missing" in capsys.readouterr().err

    assert rom_main(["eval", "--run", str(run), "--data", str(data), "--out", str(run / "eval.json")]) == 0
    assert rom_main(["flops", "--run", str(run), "--out", str(run / "flops.json"), "--no-measure"]) == 0
    assert rom_main(["record", "--run", str(run), "--out", str(final), "--require", "eval,flops"]) == 0
    record = load_record(final)
    train_part = json.loads((run / "train.json").read_text())
    assert record["part"] == "final" and record["run_id"] == train_part["run_id"]
    assert record["training"] == train_part["training"] and record["params"] == train_part["params"]
    assert [r["context_length"] for r in record["eval"]["results"]] == [32, 64, 128]
    assert record["flops"]["train_total"] == pytest.approx(record["flops"]["per_token_train"] * 3 * 128)
    assert record["downstream"] is None and record["metrics_file"] == "metrics.jsonl"
    assert run_config_from_dict(record["config"]).run_id == record["run_id"]  # config round-trips to the id
    validate_record(json.loads(json.dumps(record)))


def test_parts_from_another_run_are_refused(run_dir: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    run, _ = run_dir
    if not ((run / "eval.json").exists() and (run / "flops.json").exists()):
        pytest.skip("needs the round-trip test's eval and flops parts (run the module, not this test alone)")
    other = tmp_path / "run"
    other.mkdir()
    for name in ("train.json", "flops.json"):
        (other / name).write_text((run / name).read_text())
    ev = json.loads((run / "eval.json").read_text())
    ev["run_id"] = "someone-else"
    (other / "eval.json").write_text(json.dumps(ev))
    assert rom_main(["record", "--run", str(other), "--out", str(other / "final.json")]) == 1
    assert "disagree on run_id" in capsys.readouterr().err and not (other / "final.json").exists()


def test_collect_parts_errors(tmp_path: Path) -> None:
    from rom.records import RecordError

    with pytest.raises(RecordError, match="train.json: required part 'train'"):
        collect_parts(tmp_path)
    with pytest.raises(RecordError, match="unknown part"):
        collect_parts(tmp_path, ["evl"])
    (tmp_path / "train.json").write_text("{truncated")
    with pytest.raises(RecordError, match="train.json: not valid JSON"):
        collect_parts(tmp_path)
