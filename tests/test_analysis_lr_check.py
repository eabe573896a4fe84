"""The learning-rate check (analysis.lr_check): runs at a quarter of the main budget at 0.5x / 2x the rate against
the base run's cooldown branch at that budget, found from typed fields (synthetic miniature-like records)."""

from __future__ import annotations

import json

import pytest

from analysis.lr_check import lr_check, lr_check_rows
from analysis.synthetic import miniature_study, scaling_study, table

D = 2 ** 26


@pytest.fixture(scope="module")
def records():
    return miniature_study()


@pytest.fixture(scope="module")
def df(records):
    return table(records)


def test_lr_check_compares_with_the_base_runs_quarter_branch(df) -> None:
    res = lr_check(df)
    names = dict(zip(df["run_id"], df["name"]))
    assert sorted(names[c.base_run] for c in res.checks) == ["mamba-xl", "mamba-xxs", "rom-m", "rom-xs"]
    for c in res.checks:
        assert [p.multiplier for p in c.points] == [0.5, 1.0, 2.0]
        one = c.points[1]
        assert one.run_id == f"{c.base_run}@0.25" and c.tokens == D // 4
        assert c.best_multiplier == 1.0 and c.gap_1x_nats == 0 and c.within_tolerance
    assert res.per_family == {"mamba": True, "rom": True} and "does not favour" in res.favours
    caption, columns, rows = lr_check_rows(df)
    assert caption.startswith("Learning-rate check") and "does not favour" in caption
    assert len(rows) == 4 and "loss at 2x lr (nats)" in columns


def test_lr_check_says_when_the_rate_favours_a_family() -> None:
    df = table(miniature_study(lr_penalty={"rom": (0.02, -0.03)}))
    res = lr_check(df)
    rom = [c for c in res.checks if c.family == "rom"]
    assert all(c.best_multiplier == 2.0 and c.gap_1x_nats == pytest.approx(0.03) and not c.within_tolerance
               for c in rom)
    assert res.per_family == {"mamba": True, "rom": False} and "favours mamba" in res.favours


def test_lr_check_without_the_base_branch_has_no_1x_point(records) -> None:
    recs = json.loads(json.dumps(records))
    for r in recs:
        if r["name"] == "rom-m":
            r.pop("branches")
    res = lr_check(table(recs))
    c = next(c for c in res.checks if c.family == "rom" and "no cooldown branch" in c.note)
    assert c.within_tolerance is None and [p.multiplier for p in c.points] == [0.5, 2.0]
    assert res.per_family["rom"] is None and "not decided for rom" in res.favours


def test_lr_check_is_empty_without_check_runs() -> None:
    res = lr_check(table(scaling_study(downstream=False)))
    assert res.checks == () and "no learning-rate check runs" in res.favours
