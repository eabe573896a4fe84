"""The analysis of a miniature-like study (issue 23): cooldown-branch points, the Mamba-width series of claim (b)
and the token-budget view of claim (a), on synthetic records with known laws (the learning-rate check:
tests/test_analysis_lr_check.py)."""

from __future__ import annotations

import json
import pandas as pd
import pytest

from analysis.claims import compute_claims
from analysis.claims.equivalence import budget_trend, BudgetRatio
from analysis.collect import (BRANCH_POINT, MAIN_POINT, collect, main_budget, main_rows, read_table,
                              runs_at_train_length, write_table)
from analysis.fit import FitKind, fit_all, fit_family
from analysis.noise import estimate_noise
from analysis.pooled import PooledX, budget_key, pooled_all, pooled_key
from analysis.series import WHOLE, WIDTH, hybrid_series, series_fits, series_pooled, width_series
from analysis.synthetic import miniature_study, scaling_study, table, write_study

D = 2 ** 26
BOOT = 40


@pytest.fixture(scope="module")
def records():
    return miniature_study()


@pytest.fixture(scope="module")
def df(records):
    return table(records)


def _analyse(df: pd.DataFrame) -> dict:
    fits = fit_all(df, bootstrap=BOOT) + series_fits(df, bootstrap=BOOT)
    pairs = [("mamba", "rom"), ("hybrid-mamba", "hybrid-rom")]
    pooled = pooled_all(df, pairs, bootstrap=BOOT) + series_pooled(df, bootstrap=BOOT)
    claims = compute_claims(df, {f.key: f for f in fits}, pooled={p.key: p for p in pooled})
    return {"fits": {f.key: f for f in fits}, "pooled": {p.key: p for p in pooled},
            "claims": {c.id: c for c in claims}}


@pytest.fixture(scope="module")
def analysed(df):
    return _analyse(df)


# ------------------------------------------------------------------------------------------ branch rows


def test_each_cooldown_branch_is_a_row_of_its_own_budget(records, df) -> None:
    rec = next(r for r in records if r["name"] == "mamba-s")
    rows = df[df["source_run_id"] == rec["run_id"]]
    branches = rows[rows["point"] == BRANCH_POINT].sort_values("train_tokens")
    assert list(branches["run_id"]) == [f"{rec['run_id']}@0.25", f"{rec['run_id']}@0.5"]
    assert list(branches["train_tokens"]) == [D // 4, D // 2]
    assert list(branches["loss_nats"]) == [b["val_loss"] for b in rec["branches"]]
    assert branches["at_train_length"].all() and (branches["context_length"] == 1024).all()
    per_token = rec["flops"]["per_token_train"]
    assert list(branches["flops_train_total"]) == [per_token * D // 4, per_token * D // 2]
    assert list(branches["wall_time_s"]) == [b["wall_time_s"] for b in rec["branches"]]
    main = rows[rows["point"] == MAIN_POINT]
    assert (main["run_id"] == rec["run_id"]).all() and (main["source_run_id"] == rec["run_id"]).all()
    assert len(main) == 3  # the record's own rows: one per evaluation length


def test_main_rows_budget_and_runs_leave_branches_out(records, df) -> None:
    assert main_budget(df) == D  # the lr-check runs at D/4 are ablations and do not count
    assert set(main_rows(df)["point"]) == {MAIN_POINT}
    runs = runs_at_train_length(df)
    assert len(runs) == len(records) and set(runs["run_id"]) == {r["run_id"] for r in records}


def test_a_table_written_before_branches_reads_as_all_main(df, tmp_path) -> None:
    old = main_rows(df).drop(columns=["point", "source_run_id"])
    write_table(old, tmp_path / "t.csv")
    back = read_table(tmp_path / "t.csv")
    assert (back["point"] == MAIN_POINT).all() and (back["source_run_id"] == back["run_id"]).all()


def test_collect_reads_branches_from_final_records(records, tmp_path) -> None:
    paths = write_study(records[:3], tmp_path, metrics=False)
    got = collect(paths)
    assert (got["point"] == BRANCH_POINT).sum() == 6
    with pytest.raises(Exception, match="branches"):
        bad = json.loads(paths[0].read_text())
        bad["branches"] = [{"fraction": 0.25}]
        paths[0].write_text(json.dumps(bad))
        collect(paths)


def test_noise_is_measured_on_the_runs_own_records(df) -> None:
    assert estimate_noise(df)["mamba"].dof == estimate_noise(main_rows(df))["mamba"].dof == 2


# ------------------------------------------------------------------------------------------ point selection


def test_one_budget_fits_use_the_main_budget_and_the_joint_fit_every_budget(df) -> None:
    f = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=0)
    assert f.n_points == 8 and "token budgets vary" not in f.message  # 6 sizes + 2 seeds, all at D
    assert all("is not the study's main token budget" in why for rid, why in f.excluded if "@" in rid)
    assert sum("@" in rid for rid, _ in f.excluded) == 16
    j = fit_family(df, "mamba", FitKind.JOINT, bootstrap=20)
    assert j.n_points == 24 and j.ok
    assert j.params["b"] == pytest.approx(0.35, rel=0.05)  # the synthetic law's D exponent


def test_pooled_params_fit_gets_branch_points_drawn_by_run(analysed) -> None:
    p = analysed["pooled"]["pooled:params:mamba+rom"]
    assert p.token_term and p.n_points == 3 * 13 and p.n_units == 13
    assert {pt.unit for pt in p.points if "@" in pt.run_id} <= {pt.run_id for pt in p.points if "@" not in pt.run_id}
    assert p.get("ratio").value == pytest.approx(1.8, rel=0.02)
    flops = analysed["pooled"]["pooled:flops:mamba+rom"]
    assert not flops.token_term and flops.n_points == 13 and "token budgets vary" not in flops.message


def test_claim_a_reports_the_ratio_at_each_budget(analysed) -> None:
    a = analysed["claims"]["a"]
    budgets = [v for v in a.views if "budget" in v]
    assert [v["at"] for v in budgets] == [D // 4, D // 2, D]
    for v in budgets:
        assert v["value"] == pytest.approx(1.8, rel=0.03)
        assert v["interval"][0] - 1e-6 <= v["value"] <= v["interval"][1] + 1e-6
        assert v["fit_key"] == budget_key("mamba", "rom", v["at"])
        assert v["budget"]["tokens_per_param"][0] > 0
    trend = a.views[-1]
    assert "tokens per parameter" in trend["what"] and "no change resolved" in trend["note"]
    assert abs(trend["value"]) < 0.05


def test_budget_trend_in_words() -> None:
    def b(tokens, ratio, lo, hi):
        return BudgetRatio(tokens, tokens / D, ratio, (lo, hi), (10.0, 20.0), "k", "converged", "")

    assert "grows" in budget_trend([b(D // 4, 1.2, 1.1, 1.3), b(D, 2.0, 1.8, 2.2)])[1]
    assert "shrinks" in budget_trend([b(D // 4, 2.0, 1.8, 2.2), b(D, 1.2, 1.1, 1.3)])[1]
    slope, words = budget_trend([b(D, 1.2, 1.1, 1.3)])
    assert slope is None and "fewer than two" in words


def test_a_study_with_one_budget_has_no_budget_view() -> None:
    df = table(scaling_study(hybrids=False, downstream=False))
    assert pooled_all(df, [("mamba", "rom")], bootstrap=0)[-1].key.count("@") <= 1
    assert not any(p.key.startswith("pooled:params:mamba+rom@D=")
                   for p in pooled_all(df, [("mamba", "rom")], bootstrap=0))


# ------------------------------------------------------------------------------------------ the width series


def test_width_and_whole_hybrid_series_from_typed_fields(df) -> None:
    found = {s.kind: s for s in hybrid_series(df)}
    w, whole = found[WIDTH], found[WHOLE]
    names = dict(zip(df["run_id"], df["name"]))
    assert [names[r] for r in w.dense_runs] == ["hybrid-e2", "hybrid-e3", "hybrid-e4", "hybrid-e6", "hybrid-e8"]
    assert w.expand == (2, 3, 4, 6, 8)
    assert sorted(names[r] for r in w.seed_runs) == ["hybrid-e2-seed1", "hybrid-e2-seed2"]
    assert sorted(names[r] for r in w.rom_runs) == ["rom-hybrid-e2", "rom-hybrid-e2-seed1", "rom-hybrid-e2-seed2"]
    assert names[w.rom_run] == "rom-hybrid-e2"
    assert [names[r] for r in whole.dense_runs] == ["hybrid-d128", "hybrid-d160", "hybrid-e2", "hybrid-d224"]
    assert width_series(df) == w


def test_a_hybrid_that_differs_in_another_field_is_not_in_the_width_series(records) -> None:
    recs = json.loads(json.dumps(records))
    e4 = next(r for r in recs if r["name"] == "hybrid-e4")
    e4["config"]["model"]["attention"]["window"] = 256  # not only the width differs
    w = width_series(table(recs))
    names = {r["run_id"]: r["name"] for r in recs}
    assert [names[r] for r in w.dense_runs] == ["hybrid-e2", "hybrid-e3", "hybrid-e6", "hybrid-e8"]


def test_no_width_series_without_three_widths() -> None:
    assert width_series(table(miniature_study(width_series=False))) is None
    assert hybrid_series(table(scaling_study(downstream=False))) == []  # identical configs, no expand: no series


def test_claim_b_reads_the_rom_hybrid_against_the_width_series(analysed, df) -> None:
    b = analysed["claims"]["b"]
    w = width_series(df)
    assert b.headline_fit == pooled_key(PooledX.FLOPS, True, "hybrid-mamba", "hybrid-rom", w.id)
    # true saving: the RoM hybrid equals the dense hybrid with 1.5x its active non-embedding parameters
    emb = 4096 * 192
    n = 1_980_000
    truth = 1 - (n + emb) / (1.5 * n + emb)
    assert b.ours == pytest.approx(truth, abs=0.03) and b.ci[0] - 1e-6 <= b.ours <= b.ci[1] + 1e-6
    assert "Mamba-width series" in b.reason and "hybrid-e8" in b.reason
    assert b.prediction is not None and b.prediction["fit_key"] == b.headline_fit
    head = [d for d in b.details if d["headline"]]
    assert len(head) == 1 and head[0]["series"] == w.id and head[0]["run_id"] == w.rom_run
    assert set(head[0]["series_runs"]) == set(w.dense_runs + w.seed_runs)
    assert {d["series"] for d in b.details} == {w.id, f"{WHOLE}:rom-hybrid-e2", "family fit"}
    views = {v["what"].split(" (")[0]: v for v in b.views}
    assert list(b.views[0]["series"]["dense_runs"]) == list(w.dense_runs)
    assert any("whole-hybrid series" in v["what"] and v["value"] is not None for v in b.views)
    assert any(v["fit_key"] == w.fit_key for v in b.views) and views


def test_claim_b_without_a_width_series_reads_as_before() -> None:
    df = table(miniature_study(width_series=False))
    assert series_fits(df, bootstrap=0) == [] and series_pooled(df, bootstrap=0) == []
    fits = {f.key: f for f in fit_all(df, bootstrap=BOOT)}
    pooled = {p.key: p for p in pooled_all(df, [("mamba", "rom"), ("hybrid-mamba", "hybrid-rom")], bootstrap=BOOT)}
    b = {c.id: c for c in compute_claims(df, fits, pooled=pooled)}["b"]
    assert "@" not in b.headline_fit and "series" not in " ".join(v["what"] for v in b.views)
    assert all("series" not in d for d in b.details)


def test_ablations_compare_each_run_with_its_own_width_and_leave_lr_checks_out(df) -> None:
    from analysis.tables import ablations_table

    rows = {row[0]: row for row in ablations_table(df).rows}
    # a hybrid seed is compared with the hybrid of its own Mamba width, not with a wider one of the same shape
    seed = next(name for name in rows if name.startswith("hybrid-e2-seed"))
    assert rows[seed][7] == "hybrid-e2"
    # runs at a quarter of the budget (the learning-rate check) are not ablations of the full-budget run
    assert not [name for name in rows if "-lr" in name]
