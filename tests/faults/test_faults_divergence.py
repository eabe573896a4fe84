"""A diverged run: exit status 3 (0 with --on-divergence exclude), strict-JSON records with null and the
reason, evaluation skipped, the record valid, and the analysis leaving the run out of fits with the reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rom.cli import main as rom_main
from rom.io import NonFiniteJSONError, atomic_write_json
from rom.records import load_record
from rom.train import factory
from rom.train.loop import DIVERGED_EXIT_CODE
from test_train_support import tiny_config, write_config


def strict(text: str):
    """json.loads that refuses NaN / Infinity, like strict parsers (jq, JavaScript, Go)."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture()
def exploding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's logits become NaN from its third forward pass on (a run that diverges at step 3)."""
    real = factory.make_model

    def make(cfg, backend="auto"):
        model = real(cfg, backend)
        calls = {"n": 0}

        def poison(module, inputs, output):
            calls["n"] += 1
            if calls["n"] >= 3:
                output.logits = output.logits * float("nan")
            return output

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(factory, "make_model", make)


def test_diverged_run_fails_with_its_own_exit_code(exploding, fault_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "run.yaml", tiny_config(checkpoint_every=100))
    out = tmp_path / "run"
    code = rom_main(["train", "--config", str(cfg), "--data", str(fault_data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == DIVERGED_EXIT_CODE == 3
    assert "DIVERGED" in err and "non-finite training loss" in err and "at step 3" in err and "Traceback" not in err
    part = strict((out / "train.json").read_text())  # strict JSON: no bare NaN anywhere
    tr = part["training"]
    assert tr["diverged"] is True and tr["steps"] == 3 and "at step 3" in tr["divergence"]
    assert tr["final_val_loss"] is None
    assert tr["final_train_loss"] is None or math.isfinite(tr["final_train_loss"])
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict(line)


def test_exclude_keeps_going_and_the_analysis_names_the_reason(exploding, fault_data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "run.yaml", tiny_config(checkpoint_every=100))
    run = tmp_path / "run"
    assert rom_main(["train", "--config", str(cfg), "--data", str(fault_data), "--out", str(run),
                     "--on-divergence", "exclude"]) == 0
    assert "--on-divergence exclude" in capsys.readouterr().err
    # evaluation and downstream scoring are skipped with the reason, and exit 0
    assert rom_main(["eval", "--run", str(run), "--data", str(fault_data), "--out", str(run / "eval.json")]) == 0
    ev = strict((run / "eval.json").read_text())["eval"]
    assert ev["results"] == [] and ev["skipped"].startswith("training diverged: non-finite")
    assert rom_main(["downstream", "--run", str(run), "--tasks", str(tmp_path / "none"),
                     "--out", str(run / "downstream.json")]) == 0
    assert strict((run / "downstream.json").read_text())["downstream"] == {}
    assert rom_main(["flops", "--run", str(run), "--out", str(run / "flops.json"), "--no-measure"]) == 0
    assert rom_main(["record", "--run", str(run), "--out", str(run / "final.json")]) == 0
    record = load_record(run / "final.json")
    assert record["training"]["diverged"] is True

    import pandas as pd

    from analysis.collect import record_rows
    from analysis.fit import ALL_BUDGETS, select_points

    df = pd.DataFrame(record_rows(record, run / "final.json"))
    points, excluded = select_points(df, str(df["family"].iloc[0]), ALL_BUDGETS)
    assert points.empty
    assert len(excluded) == 1 and excluded[0][1].startswith("training diverged: non-finite training loss")


def test_strict_json_writer_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "part.json"
    with pytest.raises(NonFiniteJSONError, match=r"part.json: field 'training.losses\[1\]'"):
        atomic_write_json(path, {"training": {"losses": [1.0, float("nan")]}})
    assert not path.exists()


def test_study_option_defaults_to_fail() -> None:
    import yaml
    from snakemake.utils import validate

    schema = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "study.schema.yaml"
    study = {"study": "s", "data": {}, "runs": [{"name": "a", "role": "scaling", "model": {}}]}
    validate(study, str(schema))
    assert study["on_divergence"] == "fail"
    bad = {**study, "on_divergence": "ignore"}
    with pytest.raises(Exception, match="ignore"):
        validate(bad, str(schema))
    assert yaml.safe_load(schema.read_text())["properties"]["on_divergence"]["enum"] == ["fail", "exclude"]


def test_pipeline_passes_the_study_option_to_rom_train(tmp_path: Path) -> None:
    """A dry run of the tiny study with on_divergence: exclude trains with --on-divergence exclude (default
    fail is covered by the schema test above)."""
    pytest.importorskip("snakemake")
    import yaml

    from test_pipeline_dag import copy_pipeline, snakemake

    work = copy_pipeline(tmp_path)
    study = yaml.safe_load((work / "config" / "studies" / "tiny.yaml").read_text())
    study.update(study="tiny-exclude", on_divergence="exclude")
    (work / "config" / "studies" / "tiny-exclude.yaml").write_text(yaml.safe_dump(study))
    result = snakemake(work, "-n", "-p", "--cores", "1", "--config", "study=tiny-exclude")
    assert result.returncode == 0, result.stderr + result.stdout
    trains = [line for line in result.stdout.splitlines() if "python -m rom train " in line]
    assert trains and all("--on-divergence exclude" in line for line in trains)
