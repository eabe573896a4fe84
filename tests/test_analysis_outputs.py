"""analysis.figures / tables / report: every file written, non-empty, self-contained; browser check."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from analysis.claims import compute_claims
from analysis.collect import collect
from analysis.figures import FIGURES, STYLE, _save, fig_expert_load, fig_training_curves, make_figures, router_load
from analysis.fit import fit_all
from analysis.pooled import pooled_all
from analysis.report import build_report
from analysis.synthetic import metrics_lines, scaling_study, write_study
from analysis.tables import FORMATS, TABLE_NAMES, all_tables, latex_escape, write_tables


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("study")
    recs = scaling_study(sizes=(2_000_000, 4_000_000, 8_000_000, 16_000_000), rom_sizes=(4_000_000,),
                         noise=0.003, seed=4, hybrids=False)
    paths = write_study(recs, root / "raw")
    # One run lost its metrics file: figures must note it, not fail.
    (paths[1].parent / "metrics.jsonl").unlink()
    df = collect(paths)
    fits = {f.key: f for f in fit_all(df, bootstrap=20, seed=0)}
    pooled = {f.key: f for f in pooled_all(df, [("mamba", "rom")], bootstrap=20, seed=0)}
    claims = compute_claims(df, fits, pooled=pooled)
    manifest = make_figures(df, fits, claims, root / "figures", pooled=pooled)
    write_tables(all_tables(df, list(fits.values()), claims, list(pooled.values())), root / "tables")
    build_report(df, list(fits.values()), claims, root / "figures", root / "report.html", root / "report.md",
                 pooled=list(pooled.values()))
    return {"root": root, "df": df, "fits": fits, "claims": claims, "manifest": manifest, "paths": paths,
            "pooled": pooled}


def test_every_figure_written_non_empty(pipeline: dict) -> None:
    fig_dir = pipeline["root"] / "figures"
    for name in FIGURES:
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        assert png.stat().st_size > 5000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    manifest = json.loads((fig_dir / "figures.json").read_text())
    assert list(manifest["figures"]) == list(FIGURES)
    notes = manifest["figures"]["training_curves"]["notes"]
    assert any("missing" in n for n in notes)


def test_figures_without_router_or_metrics(tmp_path: Path) -> None:
    notes: list[str] = []
    with plt.rc_context(STYLE):
        figs = (("expert_load", fig_expert_load({}, notes)), ("training_curves", fig_training_curves({}, notes)))
        for name, fig in figs:
            for f in _save(fig, tmp_path, name):
                assert (tmp_path / f).stat().st_size > 1000
    assert any("no run logged router" in n for n in notes)


def test_router_load_reads_last_logged_step() -> None:
    rec = scaling_study(rom_sizes=(1_000_000,), sizes=(), hybrids=False)[0]
    rows = metrics_lines(rec) + [{"step": 99, "train/loss": 1.0}]
    load = router_load(rows)
    assert set(load) == {"load_cv", "load_max", "load_min"} and sorted(load["load_cv"]) == [0, 1, 2, 3]
    assert load["load_cv"][3] == pytest.approx(0.1 + 0.05 * 3)  # the last step with router keys (frac = 1)
    assert router_load([{"step": 1, "train/loss": 2.0}]) == {}


def test_tables_in_three_formats(pipeline: dict) -> None:
    tab = pipeline["root"] / "tables"
    for name in TABLE_NAMES:
        for ext in FORMATS:
            assert (tab / f"{name}.{ext}").stat().st_size > 50, (name, ext)
    claims_md = (tab / "claims.md").read_text()
    assert "(a) Active-parameter equivalence" in claims_md and "2.3x" in claims_md
    tex = (tab / "fits.tex").read_text()
    assert r"\begin{tabular}" in tex and "params:mamba".replace("_", r"\_") in tex
    for name in TABLE_NAMES:  # booktabs rules, escaped symbols, no raw non-ASCII symbol left
        tex = (tab / f"{name}.tex").read_text()
        assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule")) and r"\hline" not in tex
        assert not any(ch in tex for ch in "∞—±≥≤×"), name
        body = tex[tex.index(r"\begin{tabular}"):]
        text = re.sub(r"\$[^$]*\$", "", body).replace(" & ", " ")  # math and the column separators aside
        assert not re.search(r"(?<!\\)[%#&_]", text), name
    header = (tab / "downstream.csv").read_text().splitlines()[0]
    assert header.index("LAMBADA acc") < header.index("HellaSwag acc_norm") < header.index("WinoGrande acc")
    runs_csv = (tab / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + pipeline["df"]["run_id"].nunique()


def test_latex_escape() -> None:
    assert latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"


def test_report_is_self_contained(pipeline: dict) -> None:
    html = (pipeline["root"] / "report.html").read_text()
    for section in ("Summary", "Claims", "Verdict rules", "Figures", "Fit diagnostics", "Provenance"):
        assert section in html
    images = re.findall(r"<img [^>]*src='([^']+)'", html)
    assert len(images) == len(FIGURES)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r"(src|href)=['\"]https?://", html)  # nothing fetched from outside
    assert "0123456789abcdef" in html and "synthetic-cpu" in html  # git SHA and hardware from the records
    for verdict in ("supported", "inconclusive at this scale", "not supported"):
        if any(c.verdict.value == verdict for c in pipeline["claims"]):
            assert verdict in html
    md = (pipeline["root"] / "report.md").read_text()
    assert "## Claims" in md and "figures/context_ppl.png" in md


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium not installed")
def test_report_renders_in_headless_chromium(pipeline: dict, tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--hide-scrollbars", "--window-size=1200,1800", f"--screenshot={shot}",
           (pipeline["root"] / "report.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True, cwd=tmp_path)
    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # not a blank page
    assert (gray < 0.5).mean() > 0.005  # there is dark text on it
    # Figures and coloured verdict badges were rendered, not only black text on white.
    assert len(np.unique((img[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)) > 50


def test_metrics_found_under_records_dir_after_a_move(pipeline: dict, tmp_path: Path) -> None:
    from analysis.figures import _load_all_metrics

    moved = tmp_path / "moved"
    shutil.copytree(pipeline["root"] / "raw", moved)
    df = pipeline["df"].copy()
    df["metrics_path"] = [str(Path("/nonexistent") / Path(p).parent.name / "metrics.jsonl")
                          for p in df["record_path"]]
    notes: list[str] = []
    assert _load_all_metrics(df, notes) == {} and len(notes) == df["run_id"].nunique()
    notes = []
    found = _load_all_metrics(df, notes, moved)
    assert len(found) == df["run_id"].nunique() - 1  # one run's metrics file was deleted in the fixture
    assert len(notes) == 1 and "missing" in notes[0]


def test_ablations_table_compares_with_the_same_shape_and_scales_by_seed_spread(tmp_path: Path) -> None:
    from analysis.synthetic import synthetic_record
    from analysis.tables import ablations_table

    recs = [
        synthetic_record(name="rom-m", n_active_nonembedding=4_000_000, loss=3.60, family="rom", num_experts=8),
        synthetic_record(name="rom-m-seed1", n_active_nonembedding=4_000_000, loss=3.62, family="rom",
                         num_experts=8, role="seed", seed=1),
        synthetic_record(name="rom-m-e16", n_active_nonembedding=4_000_000, loss=3.50, family="rom",
                         num_experts=16, role="ablation"),
        synthetic_record(name="rom-wide-e16", n_active_nonembedding=8_000_000, loss=3.40, family="rom",
                         num_experts=16, role="ablation", d_model=512),  # no scaling run of this shape
        synthetic_record(name="mamba-m", n_active_nonembedding=4_000_000, loss=3.70),  # other family
    ]
    df = collect(write_study(recs, tmp_path / "raw"))
    t = ablations_table(df)
    rows = {row[0]: dict(zip(t.columns, row)) for row in t.rows}  # runs by name, never by hashed run id
    assert set(rows) == {"rom-m-seed1", "rom-m-e16", "rom-wide-e16"}
    e16 = rows["rom-m-e16"]
    assert e16["reference"] == "rom-m" and e16["reference loss"] == pytest.approx(3.60)
    assert e16["difference"] == pytest.approx(-0.10)
    assert e16["seed std"] == pytest.approx(0.02 / 2 ** 0.5)
    assert e16["difference / seed std"] == pytest.approx(-0.10 / (0.02 / 2 ** 0.5))
    assert e16["experts"] == 16
    assert rows["rom-wide-e16"]["reference"] is None and rows["rom-wide-e16"]["difference"] is None


# ------------------------------------------------------------------------------- the one list of outputs


def test_the_steps_write_exactly_the_listed_outputs(pipeline: dict) -> None:
    from analysis import outputs

    assert list(pipeline["manifest"]["figures"]) == list(outputs.FIGURES)
    assert [e["caption"] for e in pipeline["manifest"]["figures"].values()] == list(outputs.FIGURES.values())
    tables = all_tables(pipeline["df"], list(pipeline["fits"].values()), pipeline["claims"],
                        list(pipeline["pooled"].values()))
    assert [t.name for t in tables] == list(outputs.TABLES)
    assert all(t.caption.startswith(outputs.TABLES[t.name]) for t in tables)
    assert [c.id for c in pipeline["claims"]] == list(outputs.CLAIMS)
    expected = outputs.all_files(pipeline["root"])
    written = [p for p in expected if Path(p).is_file()]
    assert written == expected
    report_md = (pipeline["root"] / "report.md").read_text()
    for cid in outputs.CLAIMS:  # every claim's report section comes from its own module
        from analysis.claims import claim_module

        for section in claim_module(cid).report_sections(next(c for c in pipeline["claims"] if c.id == cid)):
            assert f"### {section.title}" in report_md


def test_outputs_list_imports_no_third_party_module() -> None:
    """The Snakefile imports analysis.outputs at parse time: it must stay plain Python."""
    code = ("import sys, analysis.outputs as o; heavy = [m for m in ('pandas', 'numpy', 'matplotlib', 'scipy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_claim_id_is_an_error() -> None:
    from analysis.errors import AnalysisError
    from analysis.claims import claim_module

    with pytest.raises(AnalysisError, match="unknown claim id 'z'"):
        claim_module("z")


def test_workflow_names_no_figure_or_table_itself() -> None:
    """Rules take names and captions from analysis/outputs.py; no per-figure caption file is left behind."""
    from analysis import outputs

    root = Path(__file__).resolve().parents[1]
    analysis_rules = (root / "workflow" / "rules" / "analysis.smk").read_text()
    common = (root / "workflow" / "rules" / "common.smk").read_text()  # also says "runs" of a study
    for name in [*outputs.FIGURES, *outputs.TABLES]:
        quoted = (f'"{name}"', f"'{name}'")
        assert not any(q in analysis_rules for q in quoted), name
        assert name in outputs.TABLES or not any(q in common for q in quoted), name
        assert not (root / "workflow" / "report" / f"{name}.rst").exists(), name
