"""The Snakefile parses, lints clean and builds the DAG of every shipped study (dry runs, no training).

Each test copies the pipeline files (Snakefile, workflow/, config/, profiles/) into a temporary directory and
runs Snakemake there, so nothing touches the repository's results/ or .snakemake/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ("Snakefile", "workflow", "config", "profiles")
STUDIES = ("tiny", "gpu", "paper")

pytest.importorskip("snakemake")


def copy_pipeline(dest: Path) -> Path:
    for name in PIPELINE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> Counter:
    """Job stats table of a dry run: rule -> count."""
    counts: Counter = Counter()
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_pipeline(tmp_path_factory.mktemp("pipeline"))


def study_runs(study: str) -> list[dict]:
    return yaml.safe_load((ROOT / "config" / "studies" / f"{study}.yaml").read_text())["runs"]


def test_lint_has_no_findings(workdir):
    result = snakemake(workdir, "--lint")
    assert result.returncode == 0, result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


@pytest.mark.parametrize("study", STUDIES)
def test_dry_run_lists_every_stage(workdir, study):
    result = snakemake(workdir, "-n", "-p", "--cores", "2", "--config", f"study={study}")
    assert result.returncode == 0, result.stderr + result.stdout
    # the default (local) profile trains with plain `python -m rom train`, one process per run
    assert "python -m rom train --config" in result.stdout and "torchrun" not in result.stdout
    counts = job_counts(result.stdout)
    runs = len(study_runs(study))
    for rule in ("run_config", "train", "eval", "flops", "record"):
        assert counts[rule] == runs, (rule, counts)
    for rule in ("data_config", "corpus", "tokenizer", "tokenize", "export_tasks", "collect", "fit", "claims",
                 "figures", "tables", "report", "all"):
        assert counts[rule] == 1, (rule, counts)
    assert counts["downstream"] >= 2
    # one directory per run, named by its run id (name + config hash), all distinct
    run_ids = set(re.findall(rf"results/{study}/runs/([^/\s]+)/train\.json", result.stdout))
    assert len(run_ids) == runs
    names = {run["name"] for run in study_runs(study)}
    assert {run_id.rsplit("-", 1)[0] for run_id in run_ids} == names


def test_regenerate_mode_needs_no_data_or_training(workdir, tmp_path):
    """With regenerate=true only the analysis rules exist; without records it fails naming the glob."""
    result = snakemake(workdir, "-n", "--config", "regenerate=true")
    assert result.returncode != 0
    assert "runs/*/final.json" in result.stderr + result.stdout
    # the `regenerate` target without the mode points to the right command instead of retraining
    result = snakemake(workdir, "-n", "regenerate")
    assert result.returncode != 0
    assert "--config regenerate=true" in result.stderr + result.stdout


@pytest.mark.parametrize("flag", ["--profile", "--workflow-profile"])
def test_slurm_profile_gives_training_gpus_and_torchrun(workdir, flag):
    """Either way of naming the profile works: profiles/default sets nothing that would override it."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake(workdir, "-n", "--cores", "64", flag, "profiles/slurm", "--config", "study=paper")
    assert result.returncode == 0, result.stderr + result.stdout
    blocks = result.stdout.split("\nrule ")
    train = [b for b in blocks if b.startswith("train:")]
    assert len(train) == len(study_runs("paper"))
    for block in train:
        assert re.search(r"resources: .*\bgpu=8\b", block), block
        assert "runtime=" in block and "mem_mb=" in block
        assert "torchrun --standalone --nproc-per-node=8 -m rom train" in block
    for rule in ("eval", "downstream"):
        blocks_rule = [b for b in blocks if b.startswith(f"{rule}:")]
        assert blocks_rule and all(re.search(r"\bgpu=1\b", b) for b in blocks_rule)


def test_scoring_a_trained_run_outranks_the_next_training(workdir):
    """A GPU slot freed by a finished training must go to that run's eval (and its record) before another training
    starts: otherwise a sitting cut short leaves trained runs without records (sitting 7 of the miniature study
    ended with five). Snakemake prints a job's priority when it is not 0."""
    result = snakemake(workdir, "-n", "--cores", "2", "--config", "study=gpu")
    assert result.returncode == 0, result.stderr + result.stdout
    blocks = result.stdout.split("\nrule ")

    def priorities(rule: str) -> set[int]:
        found = [b for b in blocks if b.startswith(f"{rule}:")]
        assert found, rule
        return {int(m.group(1)) if (m := re.search(r"\n\s+priority: (\d+)", b)) else 0 for b in found}

    train = priorities("train")
    assert train == {0}
    for rule in ("eval", "flops", "downstream", "record"):
        assert min(priorities(rule)) > max(train), (rule, priorities(rule))
