"""What the figures, tables and report show (issue 24, items 5 and 6): seed error bars, greyed bound fits named in
words, run names instead of hashes, normalised context perplexity, cross-entropy curves without cooldown
branches, no lines through seeds or ablations, the prediction carried to 1.3B; intervals one convention per
column, downstream standard errors and chance levels, a table of contents and the analysis' own provenance."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from analysis.claims import compute_claims
from analysis.claims.downstream import CHANCE_LEVELS, DOWNSTREAM_COLUMNS
from analysis.collect import collect
from analysis.figures import (STYLE, RunMetrics, bound_words, fig_context_ppl, fig_loss_vs_params,
                              fig_loss_vs_total_params, fig_prediction, fig_training_curves, length_label,
                              make_figures, seed_groups_of)
from analysis.families import Family
from analysis.fit import fit_all
from analysis.pooled import pooled_all
from analysis.synthetic import pooled_study, synthetic_record, write_study
from analysis.tables import Est, downstream_results_table, fmt, interval_columns, to_csv, to_latex


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Dense and RoM runs with seed groups at the middle sizes, plus an ablation and a run at another length."""
    root = tmp_path_factory.mktemp("figs")
    recs = pooled_study(noise=0.002, seeds=2, seed=3)
    recs.append(synthetic_record(name="rom-3000k-top2", n_active_nonembedding=3_000_000, loss=3.2, family="rom",
                                 role="ablation", num_experts=8, top_k=2, context_multipliers=(1,)))
    recs.append(synthetic_record(name="rom-3000k-len512", n_active_nonembedding=3_000_000, loss=3.1,
                                 family="rom", role="extrapolation", num_experts=8, seq_len=512,
                                 context_multipliers=(1, 2, 4), ppl_growth=0.02))
    df = collect(write_study(recs, root / "raw"))
    fits = {f.key: f for f in fit_all(df, bootstrap=20, seed=0)}
    pooled = {f.key: f for f in pooled_all(df, [("mamba", "rom")], bootstrap=30, seed=0)}
    claims = compute_claims(df, fits, pooled=pooled)
    return {"root": root, "df": df, "fits": fits, "pooled": pooled, "claims": claims}


def test_length_labels() -> None:
    assert [length_label(n) for n in (256, 512, 1024, 1536, 2048, 4096, 16384, 1 << 20)] == \
        ["256", "512", "1K", "1.5K", "2K", "4K", "16K", "1M"]


def test_bound_words_name_the_parameter_and_bound() -> None:
    names = ("E", "A", "alpha")
    assert bound_words(names, {"E": 0.0, "A": 5.0, "alpha": 0.3}, {}, 3.0, True) == ["E at its lower bound 0"]
    words = bound_words(names, {"E": 3.0, "A": 5.0, "alpha": 3.0}, {}, 3.0, True)
    assert words == ["E at its upper bound, the lowest loss 3", "alpha at its upper bound 3"]
    assert bound_words(names, {"E": 1.0, "A": 5.0, "alpha": 0.0}, {}, 3.0, True) == \
        ["alpha at its lower bound 0 (no fall with size)"]
    assert bound_words(names, {"E": 1.0, "A": 5.0, "alpha": 0.3}, {}, 3.0, True) == ["a coefficient at its bound"]
    assert bound_words(names, {"E": 1.0, "A": 5.0, "alpha": 0.3}, {}, 3.0, False) == []
    assert bound_words(names, {"E": 0.0, "A": 5.0, "alpha": 0.3}, {"E": 0.0}, 3.0, False) == []  # fixed E
    assert bound_words(("E", "A[rom]", "alpha[rom]"), {"E": 1, "A[rom]": 2, "alpha[rom]": 3.0}, {}, 3, True) == \
        ["alpha[rom] at its upper bound 3"]


def test_seed_groups_are_a_run_and_its_replicates(study: dict) -> None:
    groups = {g.family: g for g in seed_groups_of(study["df"])}
    assert set(groups) == {"mamba", "rom"}
    assert all(len(g.run_ids) == 3 for g in groups.values())
    assert groups["rom"].label == "rom-3000k" and groups["mamba"].label == "mamba-8000k"


def test_loss_vs_params_seed_bars_greyed_bounds_and_names(study: dict) -> None:
    from dataclasses import replace

    from analysis.fit import FitStatus

    fits = dict(study["fits"])
    dense = fits["params:mamba"]
    fits["params:mamba"] = replace(dense, status=FitStatus.HIT_BOUND, params={**dense.params, "E": 0.0})
    with plt.rc_context(STYLE):
        fig = fig_loss_vs_params(study["df"], fits, study["claims"], [])
    texts = _legend_texts(fig)
    assert any("mamba fit" in t and "E at its lower bound 0" in t for t in texts)
    assert not any("hit_bound" in t or "converged" in t for t in texts)  # words, not status names
    assert "rom-3000k: mean ± std of 3 seeds" in texts
    assert any(t.startswith("rom-3000k-top2 (ablation") for t in texts)
    run_ids = set(study["df"]["run_id"])
    assert not any(rid in t for t in texts for rid in run_ids)  # names, never hashed ids
    ax = fig.axes[0]
    assert ax.containers, "the seed group is an error bar"
    bar = ax.containers[0]
    seg = bar.lines[2][0].get_segments()[0]
    assert seg[1][1] - seg[0][1] > 0  # a bar of +-std, not a point
    plt.close(fig)


def test_total_params_lines_skip_seeds_and_ablations(study: dict) -> None:
    df = study["df"]
    with plt.rc_context(STYLE):
        fig = fig_loss_vs_total_params(df, [])
    runs = df[df["at_train_length"]].drop_duplicates("run_id")
    scaling_x = set(runs[runs["role"] == "scaling"]["params_total"].astype(float))
    other_x = set(runs[runs["role"] != "scaling"]["params_total"].astype(float)) - scaling_x
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() not in ("None", "none", "")]
    assert lines
    for ln in lines:
        xs = set(map(float, ln.get_xdata()))
        assert xs <= scaling_x and not xs & other_x
    plt.close(fig)


def test_context_ppl_is_normalised_with_length_ticks(study: dict) -> None:
    with plt.rc_context(STYLE):
        fig = fig_context_ppl(study["df"], [])
    assert [a.get_title() for a in fig.axes] == ["trained at 256 tokens", "trained at 512 tokens"]
    ax = fig.axes[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1K", "2K"]
    assert ax.get_ylabel() == "ppl(L) / ppl(512)"
    drawn = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert drawn and all(ln.get_ydata()[0] == pytest.approx(1.0) for ln in drawn)
    assert all(ln.get_ydata()[2] > 1.0 for ln in drawn)  # the synthetic runs degrade past T
    assert "rom-3000k-len512 (3M)" in _legend_texts(fig)
    plt.close(fig)


def test_training_curves_show_cross_entropy_and_keep_branches_off(tmp_path: Path) -> None:
    rows = [{"step": i, "tokens": 1000 * i, "train/loss": 9.0, "train/ce": 3.0 + 1.0 / i} for i in range(1, 9)]
    rows.insert(4, {"step": 4, "branch": {"fraction": 0.5, "step": 5, "tokens": 5000, "train/ce": 0.1,
                                          "train/loss": 0.1}})
    rows.insert(6, {"step": 4, "branch": {"fraction": 0.5, "step": 6, "tokens": 6000, "val/loss": 2.5}})
    m = RunMetrics(Family(False, "rom", False), 8, rows, "rom-m", "scaling", 3e6)
    notes: list[str] = []
    with plt.rc_context(STYLE):
        fig = fig_training_curves({"rom-m-abc123": m}, notes)
    ax = fig.axes[0]
    curve = next(ln for ln in ax.get_lines() if ln.get_linestyle() == "-")
    assert max(curve.get_ydata()) < 4.1 and min(curve.get_ydata()) > 3.0  # train/ce, not train/loss, no branch
    assert len(curve.get_xdata()) == 8
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert crosses and list(crosses[0].get_ydata()) == [2.5] and list(crosses[0].get_xdata()) == [6000]
    assert "rom-m (3M)" in _legend_texts(fig) and not any("abc123" in t for t in _legend_texts(fig))
    assert any("cooldown" in n for n in notes)
    plt.close(fig)
    # A file without train/ce falls back to train/loss and says so.
    old = RunMetrics(Family(False, "mamba", False), 1, [{"step": 1, "tokens": 10, "train/loss": 5.0},
                                                        {"step": 2, "tokens": 20, "train/loss": 4.0}], "mamba-s")
    notes = []
    with plt.rc_context(STYLE):
        plt.close(fig_training_curves({"x": old}, notes))
    assert any("no train/ce" in n and "mamba-s" in n for n in notes)


def test_prediction_figure_reaches_the_paper_scale(study: dict) -> None:
    claim_a = next(c for c in study["claims"] if c.id == "a")
    assert claim_a.prediction is not None
    notes: list[str] = []
    with plt.rc_context(STYLE):
        fig = fig_prediction(study["df"], study["claims"], study["pooled"], notes)
    ax, ax_k = fig.axes[:2]
    assert ax.get_xlim()[1] > 1.3e9 and ax_k.get_xlim()[1] > 1.3e9
    assert ax.collections, "a band around the pooled law"
    texts = _legend_texts(fig)
    assert any(t.startswith("prediction at 1.3B:") for t in texts)
    assert any("paper: 2.3x" in t for t in texts)
    assert any(claim_a.prediction["fit_key"] in n for n in notes)
    plt.close(fig)
    # Without claims' prediction the figure reads one from the pooled fits; without pooled fits it says so.
    with plt.rc_context(STYLE):
        notes = []
        plt.close(fig_prediction(study["df"], [], study["pooled"], notes))
        assert any("read from the pooled fits" in n for n in notes)
        notes = []
        plt.close(fig_prediction(study["df"], study["claims"], {}, notes))
        assert any("no pooled" in n for n in notes)


def test_make_figures_writes_the_prediction(study: dict) -> None:
    out = study["root"] / "figures"
    manifest = make_figures(study["df"], study["fits"], study["claims"], out, pooled=study["pooled"])
    assert (out / "prediction_at_paper_scale.png").stat().st_size > 10_000
    assert manifest["figures"]["prediction_at_paper_scale"]["notes"]


# ------------------------------------------------------------------------------------------ tables


def test_interval_columns_never_mix_conventions() -> None:
    headers, rows = interval_columns([("95% CI: runs", (1, 2)), ("range over runs", (0.9, 1.0)),
                                      ("95% CI: runs", (3, 4)), ("95% CI: runs", None)])
    assert headers == ["95% CI: runs", "range over runs"]
    assert rows == [[(1, 2), None], [None, (0.9, 1.0)], [(3, 4), None], [None, None]]


def test_downstream_table_has_standard_errors_and_chance(tmp_path: Path) -> None:
    scores = {t: {m: 0.3, f"{m}_stderr": 0.01} for t, m, _ in DOWNSTREAM_COLUMNS}
    recs = [synthetic_record(name="mamba-m", n_active_nonembedding=4_000_000, loss=3.7, downstream=scores),
            synthetic_record(name="rom-m", n_active_nonembedding=4_000_000, loss=3.6, family="rom", num_experts=8,
                             downstream={t: {m: 0.31} for t, m, _ in DOWNSTREAM_COLUMNS})]
    t = downstream_results_table(collect(write_study(recs, tmp_path)))
    assert set(CHANCE_LEVELS) == {task for task, _, _ in DOWNSTREAM_COLUMNS}
    chance = dict(zip(t.columns, t.rows[0]))
    assert chance["run"] == "chance level" and chance["PIQA acc"].value == 0.5 and chance["LAMBADA acc"].value == 0
    rows = {r[0]: dict(zip(t.columns, r)) for r in t.rows[1:]}
    assert fmt(rows["mamba-m"]["HellaSwag acc_norm"]) == "0.3 ± 0.01"
    assert rows["mamba-m"]["Average"].se == pytest.approx(math.sqrt(6 * 0.01 ** 2) / 6)
    assert rows["rom-m"]["PIQA acc"].se is None and fmt(rows["rom-m"]["PIQA acc"]) == "0.31"
    header = to_csv(t).splitlines()[0].split(",")
    assert header[3:5] == ["LAMBADA acc", "LAMBADA acc s.e."]
    assert r"$\pm$" in to_latex(t)


def test_latex_through_styler_escapes_and_uses_booktabs() -> None:
    from analysis.tables import Table

    t = Table("x_y", "50% of runs & #1_a", ("a_b", "c%"), (("p_q & r", Est(0.5, 0.01)), ("∞", math.inf)))
    tex = to_latex(t)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"a\_b & c\%" in tex and r"p\_q \& r & 0.5 $\pm$ 0.01" in tex and r"$\infty$" in tex
    assert r"\caption{50\% of runs \& \#1\_a}" in tex and r"\label{tab:x_y}" in tex


# ------------------------------------------------------------------------------------------ report


def test_report_has_contents_prediction_and_provenance(study: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.report import ANALYSIS_PACKAGES, build_report

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00Z
    out = study["root"]
    make_figures(study["df"], study["fits"], study["claims"], out / "figures", pooled=study["pooled"])
    build_report(study["df"], list(study["fits"].values()), study["claims"], out / "figures", out / "r.html",
                 out / "r.md", pooled=list(study["pooled"].values()))
    md = (out / "r.md").read_text()
    html = (out / "r.html").read_text()
    assert md.index("## Contents") < md.index("## Summary")
    for anchor in ("summary", "claims", "prediction", "figures", "fits", "pooled", "downstream", "provenance"):
        assert f"](#{anchor})" in md and f"id='{anchor}'" in html
    assert "analysis regenerated at 2026-01-01T00:00:00Z from commit " in md
    for pkg in ("pandas", "scipy", "matplotlib", "numpy", "snakemake", "lm_eval"):
        assert pkg in ANALYSIS_PACKAGES and re.search(rf"^\| {pkg} \|", md, re.M), pkg
    assert "## At the paper's scale" in md and "1.3e+09" in md
    assert "Which fit each headline uses" in md
