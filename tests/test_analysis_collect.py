"""analysis.collect: records -> tidy table; bad records give errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.errors import AnalysisError
from analysis.collect import COLUMNS, collect, expand_record_paths, read_table, runs_at_train_length, write_table
from analysis.synthetic import scaling_study, synthetic_record, write_study
from rom.records import RecordError, validate_record


@pytest.fixture()
def study(tmp_path: Path) -> list[Path]:
    return write_study(scaling_study(hybrids=False, sizes=(1_000_000, 2_000_000, 4_000_000), rom_sizes=(1_000_000,)),
                       tmp_path / "raw")


def test_synthetic_records_pass_the_schema() -> None:
    for rec in scaling_study():
        validate_record(rec, "synthetic")


def test_table_one_row_per_run_and_length(study: list[Path], tmp_path: Path) -> None:
    df = collect(study)
    assert len(df) == 4 * 3  # 4 runs x eval at 1x, 2x, 4x
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(df["context_multiple"]) == {1.0, 2.0, 4.0}
    runs = runs_at_train_length(df)
    assert len(runs) == 4 and runs["at_train_length"].all()
    assert (runs["context_length"] == runs["train_seq_len"]).all()
    assert "downstream.hellaswag.acc_norm" in df.columns
    # Round trip through CSV keeps types the later steps rely on.
    write_table(df, tmp_path / "table.csv")
    back = read_table(tmp_path / "table.csv")
    assert back["at_train_length"].dtype == bool and len(back) == len(df)
    assert Path(back["metrics_path"].iloc[0]).name == "metrics.jsonl"


def test_directory_and_glob_expansion(study: list[Path], tmp_path: Path) -> None:
    by_dir = expand_record_paths([tmp_path / "raw"])
    by_glob = expand_record_paths([str(tmp_path / "raw" / "*" / "final.json")])
    assert sorted(by_dir) == sorted(by_glob) == sorted(study)
    assert len(expand_record_paths([study[0], study[0]])) == 1  # duplicates collapse
    with pytest.raises(AnalysisError, match="no record file matches"):
        expand_record_paths([str(tmp_path / "nothing*.json")])


def _write(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    rec = synthetic_record(name="bad", n_active_nonembedding=1_000_000, loss=3.0)
    del rec["params"]["active_nonembedding"]
    path = _write(tmp_path / "bad" / "final.json", rec)
    with pytest.raises(RecordError) as e:
        collect([path])
    assert str(path) in str(e.value) and "params.active_nonembedding" in str(e.value)


def test_other_schema_version_names_file(tmp_path: Path) -> None:
    rec = synthetic_record(name="old", n_active_nonembedding=1_000_000, loss=3.0)
    rec["schema_version"] = 0
    path = _write(tmp_path / "old" / "final.json", rec)
    with pytest.raises(RecordError) as e:
        collect([path])
    assert str(path) in str(e.value) and "schema_version" in str(e.value)


def test_cli_reports_bad_record_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from analysis.cli import main

    rec = synthetic_record(name="bad", n_active_nonembedding=1_000_000, loss=3.0)
    del rec["eval"]["results"][0]["loss"]
    path = _write(tmp_path / "bad" / "final.json", rec)
    assert main(["-q", "collect", "--records", str(path), "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "eval.results[0].loss" in err
    assert not (tmp_path / "t.csv").exists()


def test_duplicate_run_id_is_an_error(tmp_path: Path) -> None:
    rec = synthetic_record(name="a", n_active_nonembedding=1_000_000, loss=3.0)
    p1 = _write(tmp_path / "x" / "final.json", rec)
    p2 = _write(tmp_path / "y" / "final.json", rec)
    with pytest.raises(RecordError, match="already read"):
        collect([p1, p2])


def test_read_table_rejects_foreign_csv(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(AnalysisError, match="lacks columns"):
        read_table(tmp_path / "t.csv")


def test_downstream_metric_names_from_lm_eval(tmp_path: Path) -> None:
    scores = {"piqa": {"acc,none": 0.6, "acc_stderr,none": 0.01}, "hellaswag": {"acc_norm": 0.3}}
    rec = synthetic_record(name="d", n_active_nonembedding=1_000_000, loss=3.0, downstream=scores)
    df = collect([_write(tmp_path / "d" / "final.json", rec)])
    assert df["downstream.piqa.acc"].iloc[0] == 0.6 and df["downstream.hellaswag.acc_norm"].iloc[0] == 0.3
    assert "downstream.piqa.acc_stderr" in df.columns


# ------------------------------------------------------------------------------- families from typed fields


def test_family_comes_from_typed_fields(tmp_path: Path) -> None:
    recs = [synthetic_record(name=n, family=f, n_active_nonembedding=1_000_000, loss=3.0)
            for n, f in (("m", "mamba"), ("r", "rom"), ("hm", "hybrid-mamba"), ("hr", "hybrid-rom+moe"))]
    runs = runs_at_train_length(collect(write_study(recs, tmp_path / "raw", metrics=False))).set_index("name")
    assert runs.loc["hr", ["pattern", "ssm_mixer", "base_family", "ffn_moe", "uses_rom"]].tolist() == \
        ["hybrid", "rom", "hybrid-rom", True, True]
    assert runs.loc["hm", ["pattern", "ssm_mixer", "uses_rom"]].tolist() == ["hybrid", "mamba", False]
    assert runs.loc["r", ["pattern", "ssm_mixer", "uses_rom"]].tolist() == ["rom", "rom", True]


@pytest.mark.parametrize("field,value,message", [
    (("model", "pattern"), "mamba2", "'model.pattern' is 'mamba2'"),
    (("config", "model", "hybrid_ssm"), "gated_deltanet", "names the SSM mixer 'gated_deltanet'"),
    (("model", "mlp"), "glu", "'model.mlp' is 'glu'"),
])
def test_unknown_pattern_or_mixer_fails_loudly(tmp_path: Path, field: tuple[str, ...], value: str,
                                               message: str) -> None:
    rec = synthetic_record(name="new", family="hybrid-rom", n_active_nonembedding=1_000_000, loss=3.0)
    node = rec
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    path = write_study([rec], tmp_path / "raw", metrics=False)[0]
    with pytest.raises(AnalysisError) as err:
        collect([path])
    assert str(path) in str(err.value) and message in str(err.value)


def test_family_string_must_agree_with_the_model_fields(tmp_path: Path) -> None:
    rec = synthetic_record(name="liar", family="rom", n_active_nonembedding=1_000_000, loss=3.0)
    rec["family"] = "mamba"  # a name that would join the dense curve
    path = write_study([rec], tmp_path / "raw", metrics=False)[0]
    with pytest.raises(AnalysisError, match="field 'family' is 'mamba' but the model fields .* make 'rom'"):
        collect([path])


def test_analysis_knows_every_mixer_and_pattern_of_the_model_config() -> None:
    from analysis.families import MLP_KINDS, PATTERNS, SSM_MIXERS
    from rom.config import Mixer, Mlp, ModelConfig, Pattern

    ssm_mixers = {m.value for m in Mixer} - {Mixer.ATTENTION.value}
    assert set(SSM_MIXERS) == ssm_mixers, "a new mixer needs an entry in analysis/families.py SSM_MIXERS"
    assert set(PATTERNS) == {p.value for p in Pattern}
    assert set(MLP_KINDS) == {m.value for m in Mlp}
    from analysis.families import Family

    for pattern in Pattern:  # the derived name is the one the model config writes into the record
        for ssm in ssm_mixers:
            for mlp in Mlp:
                cfg = ModelConfig(pattern=pattern, hybrid_ssm=Mixer(ssm), mlp=mlp)
                hybrid, fixed = PATTERNS[pattern.value]
                fam = Family(hybrid=hybrid, ssm=fixed or ssm, moe=mlp == Mlp.MOE)
                assert fam.name == cfg.family


def test_eval_device_rides_along_and_the_report_names_the_odd_ones(tmp_path: Path) -> None:
    """Runs scored by `rom eval` on another device (sitting 7 of the miniature study scored five trained runs on a
    CPU, in fp32, where the rest were scored on CUDA in bf16) are named in the table and the report's provenance;
    cooldown branches, scored by the trainer, carry the training device."""
    from analysis.report import _eval_devices, _eval_devices_text

    paths = []
    for i, device in enumerate(("cuda", "cuda", "cpu")):
        rec = synthetic_record(name=f"run{i}", n_active_nonembedding=1_000_000 * (i + 1), loss=3.0 - 0.1 * i,
                               branches=[(0.5, 3.2)] if i == 0 else ())
        rec["eval"]["device"] = device
        paths.append(_write(tmp_path / f"run{i}" / "final.json", rec))
    df = collect(paths)
    write_table(df, tmp_path / "table.csv")
    back = read_table(tmp_path / "table.csv")
    main = back[back["point"] == "main"]
    assert dict(zip(main["name"], main["eval_device"])) == {"run0": "cuda", "run1": "cuda", "run2": "cpu"}
    branch = back[back["point"] == "branch"]
    assert len(branch) == 1 and list(branch["eval_device"]) == list(branch["device"])
    by_device = _eval_devices(back)
    assert {d: len(ids) for d, ids in by_device.items()} == {"cuda": 2, "cpu": 1}
    text = _eval_devices_text(by_device)
    assert "cpu (1 run: run2-" in text and "cuda (2 runs)" in text
    # a table collected before the column existed still reads; its devices are unknown, not invented
    old = tmp_path / "old.csv"
    back.drop(columns=["eval_device"]).to_csv(old, index=False)
    assert set(read_table(old)["eval_device"]) == {""}
