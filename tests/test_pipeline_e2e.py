"""End to end (slow, minutes): the default study from an empty results/, a rerun that does nothing, Snakemake's
report, regeneration from the study's own records alone, and a training job interrupted and resumed.

Run with `pytest -m slow tests/test_pipeline_e2e.py` (.ci/run does). Each test works in a temporary copy of
the pipeline files, so the repository's results/ is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("context_ppl", "loss_vs_active_params", "loss_vs_flops", "loss_vs_total_params", "training_curves",
           "expert_load")


def copy_pipeline(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(work: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work, capture_output=True, text=True,
                            timeout=timeout)
    return result


def test_default_study_end_to_end_then_regenerate(tmp_path):
    work = copy_pipeline(tmp_path / "clone")
    start = time.monotonic()
    run = snakemake(work, "--cores", "2")
    wall = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-4000:]
    out = work / "results" / "tiny"
    study = yaml.safe_load((work / "config" / "studies" / "tiny.yaml").read_text())
    records = sorted(out.glob("runs/*/final.json"))
    assert len(records) == len(study["runs"])
    for path in records:
        record = json.loads(path.read_text())
        assert record["eval"]["results"] and record["training"]["tokens"] > 0
        assert not record["training"]["diverged"]
    scored = [json.loads(p.read_text())["downstream"] for p in records]
    assert sum(d is not None for d in scored) == len(study["downstream"]["runs"])
    for name in FIGURES:
        assert (out / "analysis" / "figures" / f"{name}.png").stat().st_size > 0
    assert (out / "analysis" / "report.html").stat().st_size > 0
    print(f"default study: {wall:.0f} s wall on {os.cpu_count()} CPUs")

    rerun = snakemake(work, "-n", "--cores", "2")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    report = snakemake(work, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (work / "report.html").stat().st_size > 100_000

    # a fresh clone holding only the committed records: the analysis comes back, nothing else runs
    fresh = copy_pipeline(tmp_path / "fresh")
    for path in records:
        dest = fresh / path.relative_to(work).parent
        dest.mkdir(parents=True)
        for name in ("final.json", "metrics.jsonl"):
            shutil.copy2(path.parent / name, dest / name)
    regen = snakemake(fresh, "--cores", "2", "--config", "regenerate=true")
    assert regen.returncode == 0, regen.stderr[-4000:]
    assert (fresh / "results" / "tiny" / "analysis" / "report.html").stat().st_size > 0
    assert not (fresh / "results" / "tiny" / "data").exists()
    original = (out / "analysis" / "claims.json").read_text()
    assert json.loads((fresh / "results" / "tiny" / "analysis" / "claims.json").read_text()) == json.loads(original)


def test_interrupted_training_resumes(tmp_path):
    work = copy_pipeline(tmp_path)
    study = yaml.safe_load((work / "config" / "studies" / "tiny.yaml").read_text())
    study["study"] = "resume"
    study["runs"] = [dict(study["runs"][0])]
    study["runs"][0]["train"] = {"tokens": 65536, "checkpoint_every": 4}
    study["downstream"]["runs"] = []
    (work / "resume.yaml").write_text(yaml.safe_dump(study))
    config = ["--config", "study=resume.yaml"]

    # build the data first, then start training and interrupt it once a checkpoint exists
    data = snakemake(work, "--cores", "2", *config, "--until", "tokenize")
    assert data.returncode == 0, data.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *config], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    runs = work / "results" / "resume" / "runs"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(runs.glob("*/checkpoint*/*")):
        time.sleep(1)
    assert list(runs.glob("*/checkpoint*/*")), "no checkpoint appeared"
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    proc.communicate(timeout=300)
    assert not list(runs.glob("*/train.json")), "training finished before the interrupt; nothing was tested"

    resumed = snakemake(work, "--cores", "2", *config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = next((work / "results" / "resume" / "logs" / "train").glob("*.log")).read_text()
    # the rerun's progress bar starts at the checkpoint's step, not at 0
    first_step = re.search(r"train [\w.-]+:\s+\d+%\|[^|]*\| (\d+)/64", log)
    assert first_step and int(first_step.group(1)) > 0, log[:500]
    part = json.loads(next(runs.glob("*/train.json")).read_text())
    assert part["training"]["tokens"] == 65536
