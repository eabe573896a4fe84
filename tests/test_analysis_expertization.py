"""Dense vs selective vs comprehensive RoM (issue 27): the ``ssm`` and ``expertization`` columns of the collected
table, and ``analysis.tables.expertization_table`` with seed means, s.d.s and differences against the seed noise
(synthetic Mamba-2 / Gated DeltaNet records)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.collect import EXPERTIZATIONS, collect, read_table, runs_at_train_length, write_table
from analysis.errors import AnalysisError
from analysis.families import SSM_KINDS
from analysis.outputs import TABLES
from analysis.synthetic import scaling_study, synthetic_record, write_study
from analysis.tables import (NO_EXPERTIZATION_RUNS, Est, all_tables, expertization_rows, expertization_table,
                             to_csv, to_latex, to_markdown, write_tables)

SELECTIVE = ["conv", "gate", "out"]


def _rec(name: str, kind: str, loss: float, *, ssm: str = "mamba2", role: str = "scaling", seed: int = 0,
         d_model: int = 256, n: int = 1_000_000, projections: list[str] | None = None) -> dict:
    """A record of architecture ``ssm``: dense, or RoM with rom.expertization = ``kind``."""
    routed = kind != "dense"
    model: dict = {"ssm": ssm}
    if routed:
        model["rom"] = {"num_experts": 8, "top_k": 1, "expert_projections": projections or SELECTIVE,
                        "expertization": kind}
    rec = synthetic_record(name=name, family="rom" if routed else "mamba", n_active_nonembedding=n, loss=loss,
                           role=role, seed=seed, d_model=d_model, num_experts=8 if routed else 1,
                           model_config=model)
    rec["family"] = SSM_KINDS[ssm][1 if routed else 0]  # the family name the model config writes
    if routed:  # the record's typed list, as the trainer writes it (the config's, after the preset)
        rec["model"]["expert_projections"] = list(model["rom"]["expert_projections"])
    return rec


def _mamba2_study() -> list[dict]:
    return [
        # d_model 256: all three kinds; dense and comprehensive with a seed replicate; a custom RoM beside them
        _rec("m2-m", "dense", 3.00), _rec("m2-m-seed1", "dense", 3.02, role="seed", seed=1),
        _rec("sel-m", "selective", 2.94, role="ablation", n=700_000),
        _rec("comp-m", "comprehensive", 2.90, n=800_000),
        _rec("comp-m-seed1", "comprehensive", 2.94, role="seed", seed=1, n=800_000),
        _rec("cust-m", "custom", 2.97, role="ablation", n=700_000, projections=["conv", "out"]),
        # d_model 128: dense and comprehensive only
        _rec("m2-s", "dense", 3.30, d_model=128, n=300_000), _rec("comp-s", "comprehensive", 3.20, d_model=128),
        # d_model 384: dense only, no row
        _rec("m2-l", "dense", 2.80, d_model=384, n=3_000_000),
    ]


@pytest.fixture(scope="module")
def mamba2_df(tmp_path_factory: pytest.TempPathFactory):
    return collect(write_study(_mamba2_study(), tmp_path_factory.mktemp("m2"), metrics=False))


def test_expertization_values_match_the_config() -> None:
    from rom.config import Expertization

    assert set(EXPERTIZATIONS) == {e.value for e in Expertization}


def test_ssm_and_expertization_columns(mamba2_df, tmp_path: Path) -> None:
    runs = runs_at_train_length(mamba2_df).set_index("name")
    assert set(runs["ssm"]) == {"mamba2"}
    assert runs.loc["m2-m", "expertization"] == "dense"
    assert runs.loc["sel-m", "expertization"] == "selective"
    assert runs.loc["comp-m", "expertization"] == "comprehensive"
    assert runs.loc["cust-m", "expertization"] == "custom[conv,out]"
    # Mamba-1 records made before both fields: ssm mamba, a RoM run custom with its projection list
    old = runs_at_train_length(collect(write_study(scaling_study(hybrids=True, sizes=(1_000_000,),
                                                                 rom_sizes=(1_000_000,)),
                                                   tmp_path / "old", metrics=False))).set_index("family")
    assert set(old["ssm"]) == {"mamba"}
    assert old.loc["rom", "expertization"] == old.loc["hybrid-rom", "expertization"] == "custom[conv,gate,out]"
    assert old.loc["mamba", "expertization"] == old.loc["hybrid-mamba", "expertization"] == "dense"


def test_read_table_fills_the_columns_of_an_older_table(mamba2_df, tmp_path: Path) -> None:
    write_table(mamba2_df.drop(columns=["ssm", "expertization"]), tmp_path / "old.csv")
    back = read_table(tmp_path / "old.csv")
    assert back["ssm"].tolist() == mamba2_df["ssm"].tolist()
    assert back["expertization"].tolist() == mamba2_df["expertization"].tolist()


def test_unknown_expertization_fails_naming_the_record(tmp_path: Path) -> None:
    rec = _rec("odd", "comprehensive", 3.0)
    rec["config"]["model"]["rom"]["expertization"] = "everything"
    path = write_study([rec], tmp_path / "raw", metrics=False)[0]
    with pytest.raises(AnalysisError) as err:
        collect([path])
    assert str(path) in str(err.value) and "'config.model.rom.expertization' is 'everything'" in str(err.value)
    rec = _rec("nolist", "custom", 3.0)
    rec["model"]["expert_projections"] = []
    path = write_study([rec], tmp_path / "raw2", metrics=False)[0]
    with pytest.raises(AnalysisError, match="expert_projections' must be a non-empty list"):
        collect([path])


def test_one_row_per_shape_with_more_than_one_kind(mamba2_df) -> None:
    rows = expertization_rows(mamba2_df)
    assert [(r.architecture, r.d_model) for r in rows] == [("mamba2", 128), ("mamba2", 256)]
    small, mid = rows
    assert set(small.kinds) == {"dense", "comprehensive"}
    assert list(mid.kinds) == ["dense", "selective", "comprehensive"]
    assert mid.kinds["dense"].names == ("m2-m", "m2-m-seed1") and mid.kinds["selective"].names == ("sel-m",)
    assert "custom expert projections, not compared: cust-m" in mid.note


def test_seed_means_sds_and_differences_against_the_noise(mamba2_df) -> None:
    mid = expertization_rows(mamba2_df)[1]
    dense, sel, comp = (mid.kinds[k] for k in ("dense", "selective", "comprehensive"))
    assert dense.mean == pytest.approx(3.01) and dense.sd == pytest.approx(math.sqrt(2e-4))
    assert sel.mean == pytest.approx(2.94) and sel.sd is None and len(sel.losses) == 1
    assert comp.mean == pytest.approx(2.92) and comp.sd == pytest.approx(math.sqrt(8e-4))
    # seed noise per family (analysis.noise): mamba2 from the dense pair, rom-mamba2 from the comprehensive pair
    s_dense, s_rom = math.sqrt(2e-4), math.sqrt(8e-4)
    assert dense.noise.sigma_nats == pytest.approx(s_dense) and sel.noise.sigma_nats == pytest.approx(s_rom)
    d = mid.diff("selective", "dense")
    assert d.value == pytest.approx(-0.07) and d.se == pytest.approx(math.sqrt(s_rom ** 2 + s_dense ** 2 / 2))
    d = mid.diff("comprehensive", "selective")
    assert d.value == pytest.approx(-0.02) and d.se == pytest.approx(math.sqrt(s_rom ** 2 / 2 + s_rom ** 2))
    t = expertization_table(mamba2_df)
    row = dict(zip(t.columns, t.rows[1]))
    assert row["architecture"] == "mamba2" and row["shape"].startswith("d_model 256, 4 layers")
    assert row["dense seeds"] == 2 and row["selective seeds"] == 1 and row["comprehensive seeds"] == 2
    assert row["selective active params"] == 700_000 + 4096 * 256
    assert isinstance(row["comprehensive − dense (nats)"], Est)
    # -0.07 ± 0.0300 and -0.09 ± 0.0224 are beyond 2x their noise; -0.02 ± 0.0346 is not
    assert row["beyond 2x the seed noise"] == "selective − dense, comprehensive − dense"
    small = dict(zip(t.columns, t.rows[0]))
    assert small["selective − dense (nats)"] is None and small["selective seeds"] is None
    for render in (to_csv, to_markdown, to_latex):
        assert "comprehensive" in render(t)
    assert "selective − dense (nats) s.e." in to_csv(t).splitlines()[0]


def test_diverged_replicate_is_left_out(tmp_path: Path) -> None:
    recs = [_rec("d", "dense", 3.0), _rec("c", "comprehensive", 2.9),
            _rec("c-seed1", "comprehensive", 2.8, role="seed", seed=1)]
    recs[2]["training"]["diverged"] = True
    rows = expertization_rows(collect(write_study(recs, tmp_path / "raw", metrics=False)))
    comp = rows[0].kinds["comprehensive"]
    assert comp.names == ("c", "c-seed1") and comp.losses == (2.9,)
    assert "diverged or without a loss, left out: c-seed1" in rows[0].note
    assert rows[0].diff("comprehensive", "dense").se is None  # no seed group without the diverged run


def test_gated_deltanet_rows(tmp_path: Path) -> None:
    recs = [_rec("g", "dense", 3.1, ssm="gated-deltanet"),
            _rec("g-sel", "selective", 3.05, ssm="gated-deltanet", role="ablation",
                 projections=["q", "k", "v", "gate", "out"]),
            _rec("g-comp", "comprehensive", 3.0, ssm="gated-deltanet",
                 projections=["q", "k", "v", "decay", "beta", "gate", "out"])]
    df = collect(write_study(recs, tmp_path / "raw", metrics=False))
    assert set(df["ssm"]) == {"gated-deltanet"}
    t = expertization_table(df)
    assert len(t.rows) == 1 and t.rows[0][0] == "gated-deltanet"
    row = dict(zip(t.columns, t.rows[0]))
    assert row["comprehensive − selective (nats)"].value == pytest.approx(-0.05)
    assert row["beyond 2x the seed noise"] == "no seed noise estimate"


def test_a_study_without_such_runs_writes_a_table_saying_so(tmp_path: Path) -> None:
    df = collect(write_study(scaling_study(hybrids=False, sizes=(1_000_000, 2_000_000), rom_sizes=(1_000_000,)),
                             tmp_path / "raw", metrics=False))
    assert expertization_rows(df) == []
    t = expertization_table(df)
    assert t.rows[0][0] == NO_EXPERTIZATION_RUNS and len(t.rows) == 1 and NO_EXPERTIZATION_RUNS in t.caption
    tables = all_tables(df, [], [], [])
    assert [x.name for x in tables] == list(TABLES) and "expertization" in TABLES
    written = write_tables(tables, tmp_path / "tables")
    for ext in ("csv", "md", "tex"):
        text = (tmp_path / "tables" / f"expertization.{ext}").read_text()
        assert NO_EXPERTIZATION_RUNS in text
    assert len(written) == 3 * len(TABLES)


@pytest.mark.parametrize("with_runs", [True, False])
def test_report_section_only_with_such_runs(with_runs: bool, mamba2_df, tmp_path: Path) -> None:
    from analysis.report import build_report

    df = mamba2_df if with_runs else collect(write_study(
        scaling_study(hybrids=False, sizes=(1_000_000,), rom_sizes=(1_000_000,)), tmp_path / "raw", metrics=False))
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "figures.json").write_text(json.dumps({"figures": {}}))
    build_report(df, [], [], tmp_path / "figures", tmp_path / "report.html", tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    assert ("Expertization: dense vs selective vs comprehensive RoM" in md) == with_runs
    assert ("comp-m-seed1" in md.split("## Provenance")[0]) == with_runs
