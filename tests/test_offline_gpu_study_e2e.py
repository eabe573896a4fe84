"""scripts/offline_gpu_study.sh end to end on CPU with a two-run micro study: data stages on the "networked"
side, `pack`, `run` on a fresh "host" copy that has only the bundle, then a second slice on another fresh copy
that received the first slice's records with scrambled modification times: it must train nothing again."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from test_pipeline_regenerate import copy_pipeline

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "offline_gpu_study.sh"

MICRO = {
    "study": "micro",
    "data": {"source": "sotu", "val_fraction": 0.05, "tokenizer": {"kind": "bpe", "vocab_size": 512}},
    "model": {"vocab_size": 512, "mamba": {"d_state": 4}},
    "train": {"tokens": 4096, "seq_len": 64, "batch_size": 8, "lr": 3.0e-3, "checkpoint_every": 4,
              "log_every": 2, "eval_batches": 2},
    "eval": {"context_multipliers": [1, 2], "max_tokens": 1024},
    "runs": [
        {"name": "mamba-micro", "role": "scaling", "model": {"pattern": "mamba", "d_model": 16, "n_layer": 1}},
        {"name": "rom-micro", "role": "scaling",
         "model": {"pattern": "rom", "d_model": 16, "n_layer": 1, "rom": {"num_experts": 2, "top_k": 1}}},
    ],
    "downstream": {"tasks": ["piqa"], "limit": 2, "runs": ["mamba-micro"]},
}


def _site(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    work = copy_pipeline(tmp / name)
    (work / "config" / "studies" / "micro.yaml").write_text(yaml.safe_dump(MICRO, sort_keys=False))
    return work


def _sh(cwd: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def test_pack_run_and_continue_without_training_twice(tmp_path):
    net = _site(tmp_path, "net")
    _sh(net, "snakemake", "--cores", "2", "--config", "study=micro", "--until", "tokenize", "export_tasks")
    _sh(net, "bash", str(SCRIPT), "pack", "micro", str(tmp_path / "bundle"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()  # the host already has every package

    host1 = _site(tmp_path, "host1")
    out1 = _sh(host1, "bash", str(SCRIPT), "run", "micro", str(tmp_path / "bundle"), str(wheels),
               str(tmp_path / "records1.tgz"), "500", "1")
    assert "snakemake exit status: 0" in out1
    with tarfile.open(tmp_path / "records1.tgz") as tar:
        names = tar.getnames()
    finals = [n for n in names if n.endswith("final.json")]
    assert len(finals) == 2
    assert not [n for n in names if n.endswith(".pt") or "/checkpoint" in n or n.startswith("./data")]

    # the second slice's copy: records back in place, modification times lost (here: reversed)
    host2 = _site(tmp_path, "host2")
    study_dir = host2 / "results" / "micro"
    study_dir.mkdir(parents=True)
    with tarfile.open(tmp_path / "records1.tgz") as tar:
        tar.extractall(study_dir, filter="data")
    files = sorted(p for p in (study_dir / "runs").rglob("*") if p.is_file())
    for i, path in enumerate(reversed(files)):
        os.utime(path, (2_000_000_000 - i, 2_000_000_000 - i))  # final.json older than config.yaml, all future
    # Snakemake judges a rule by the oldest of its outputs, its benchmark file and log included: left older than the
    # restamped config.yaml, they re-trained 34 recorded runs of a real sitting
    stale = sorted(p for sub in ("benchmarks", "logs") for p in (study_dir / sub).rglob("*") if p.is_file())
    assert any(p.suffix == ".tsv" for p in stale)
    for path in stale:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    before = {p: p.read_text() for p in (study_dir / "runs").glob("*/final.json")}
    # autotune records carried from the first lease go into this host's Triton cache before anything runs
    carried = host2 / ".triton-autotune" / ("c" * 64) / "chunk_fwd_kernel.autotune.json"
    carried.parent.mkdir(parents=True)
    carried.write_text('{"key": [64], "configs_timings": [[{"num_warps": 4}, [0.1]]]}')
    out2 = _sh(host2, "bash", str(SCRIPT), "run", "micro", str(tmp_path / "bundle"), str(wheels),
               str(tmp_path / "records2.tgz"), "500", "1", env={"TRITON_CACHE_DIR": str(tmp_path / "cache2")})
    assert "snakemake exit status: 0" in out2
    assert "triton autotune restore: 1 records copied" in out2
    assert (tmp_path / "cache2" / ("c" * 64) / "chunk_fwd_kernel.autotune.json").read_text() == carried.read_text()
    assert "rule train:" not in out2 and "rule eval:" not in out2, out2[-3000:]
    assert {p: p.read_text() for p in before} == before
    record = json.loads(next(iter(before.values())))
    assert record["training"]["steps"] == 4096 // (8 * 64)


def test_start_runs_in_the_background_on_a_snapshot_and_collect_takes_what_is_there(tmp_path):
    """`start` returns at once and trains on a copy of the tree (the working tree can change under it);
    `collect` packs the small files of the runs so far and says where each run stands."""
    import time

    net = _site(tmp_path, "net")
    _sh(net, "snakemake", "--cores", "2", "--config", "study=micro", "--until", "tokenize", "export_tasks")
    _sh(net, "bash", str(SCRIPT), "pack", "micro", str(tmp_path / "bundle"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    host = _site(tmp_path, "host")
    sit = tmp_path / "sitting"
    env_sit = {"ROM_SITTING_DIR": str(sit)}
    started = subprocess.run(["bash", str(SCRIPT), "start", "micro", str(tmp_path / "bundle"), str(wheels), "500",
                              "1"], cwd=host, capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env_sit})
    assert started.returncode == 0, started.stderr
    assert "started micro" in started.stdout
    (host / "Snakefile").write_text("this tree changed after start\n")  # the snapshot must not see it

    log = sit / "micro.log"
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and "snakemake exit status" not in (log.read_text() if log.exists() else ""):
        time.sleep(2)
    time.sleep(2)  # the last line is written just before the background shell exits
    assert (sit / "micro.records.tar.gz").exists(), (sit / "micro.log").read_text()[-3000:]
    assert "snakemake exit status: 0" in (sit / "micro.log").read_text()
    assert not (host / "results" / "micro" / "runs").exists()  # trained in the snapshot, not here

    collected = subprocess.run(["bash", str(SCRIPT), "collect", "micro", str(tmp_path / "now.tgz")], cwd=host,
                               capture_output=True, text=True, timeout=60, env={**os.environ, **env_sit})
    assert collected.returncode == 0, collected.stderr
    assert "background run ended" in collected.stdout
    assert collected.stdout.count(": finished") == 2
    assert "collected 2 finished runs" in collected.stdout
    with tarfile.open(tmp_path / "now.tgz") as tar:
        names = tar.getnames()
    assert len([n for n in names if n.endswith("final.json")]) == 2
    assert not [n for n in names if n.endswith((".pt", ".safetensors")) or "/checkpoint" in n]

    missing = subprocess.run(["bash", str(SCRIPT), "collect", "other", str(tmp_path / "x.tgz")], cwd=host,
                             capture_output=True, text=True, timeout=60, env={**os.environ, **env_sit})
    assert missing.returncode != 0 and "no started study other" in missing.stderr

    # a run that trained but lost its evaluation (as when a crowded GPU killed the eval job), and the lock a
    # killed Snakemake leaves: `resume` releases the lock and only evaluates the trained run again
    snapshot = sit / "micro"
    run = sorted((snapshot / "results" / "micro" / "runs").glob("*/final.json"))[0].parent
    trained = (run / "train.json").read_text()
    for part in ("eval.json", "final.json"):
        (run / part).unlink()
    locks = snapshot / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(f"results/micro/runs/{run.name}/eval.json\n")  # as Snakemake keys it
    resumed = subprocess.run(["bash", str(SCRIPT), "resume", "micro", "300", "1"], cwd=host, capture_output=True,
                             text=True, timeout=120, env={**os.environ, **env_sit})
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed micro" in resumed.stdout
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and log.read_text().count("snakemake exit status") < 2:
        time.sleep(2)
    time.sleep(2)
    after = log.read_text().split("--- resumed", 1)[1]
    assert "snakemake exit status: 0" in after, after[-3000:]
    assert "rule train:" not in after and "rule eval:" in after, after[-3000:]
    assert (run / "final.json").exists() and (run / "train.json").read_text() == trained
