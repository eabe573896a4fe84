"""scripts/offline_gpu_study.sh pack: refuses a study without its data stages, and packs exactly the files the
GPU side needs with their modification times (so Snakemake there sees the data stages as done)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "offline_gpu_study.sh"
NEEDED = ("config.yaml", "corpus/corpus.json", "tokenizer.json", "tokens/train.bin", "tokens/train.json",
          "tokens/val.bin", "tokens/val.json", "tasks/manifest.json")

pytestmark = pytest.mark.skipif(shutil.which("xz") is None, reason="needs xz")


def _pack(cwd: Path, study: str, bundle: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "pack", study, bundle], cwd=cwd, capture_output=True, text=True)


def test_pack_names_the_missing_data_file(tmp_path):
    (tmp_path / "results" / "s" / "data").mkdir(parents=True)
    res = _pack(tmp_path, "s", "bundle")
    assert res.returncode != 0
    assert "results/s/data/config.yaml is missing" in res.stderr
    assert not (tmp_path / "bundle").exists()


def test_pack_keeps_the_data_files_and_their_times_and_leaves_the_corpus(tmp_path):
    data = tmp_path / "results" / "s" / "data"
    for i, rel in enumerate(NEEDED + ("corpus/train.jsonl.gz",)):
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(64))
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
    res = _pack(tmp_path, "s", "bundle")
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "bundle" / "data.tar.xz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
    assert set(members) == {f"data/{rel}" for rel in NEEDED}
    for i, rel in enumerate(NEEDED):
        assert members[f"data/{rel}"].mtime == 1_600_000_000 + i
    assert not list((tmp_path / "bundle").glob("*.tmp"))


def test_collect_reports_progress_and_packs_no_checkpoints(tmp_path):
    """`collect` on a sitting laid out as `start` leaves it: a finished run, one mid-way, one not started."""
    sit = tmp_path / "sit"
    runs = sit / "s" / "results" / "s" / "runs"
    for name in ("a", "b", "c"):
        (runs / name).mkdir(parents=True)
    (runs / "a" / "final.json").write_text("{}")
    (runs / "a" / "checkpoint_00000004.pt").write_bytes(b"weights")
    (runs / "b" / "metrics.jsonl").write_text('{"step": 2, "train/loss": 5.0}\n{"step": 448, "train/loss": 3.2}\n')
    (runs / "b" / "model.safetensors").write_bytes(b"weights")
    (sit / "s.pid").write_text("999999999\n")  # no such process: the background has ended
    res = subprocess.run(["bash", str(SCRIPT), "collect", "s", str(tmp_path / "out.tgz")], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "ROM_SITTING_DIR": str(sit)})
    assert res.returncode == 0, res.stderr
    assert "background run ended" in res.stdout
    assert "a: finished" in res.stdout and "b: at step 448" in res.stdout and "c: not started" in res.stdout
    assert "collected 1 finished runs" in res.stdout
    with tarfile.open(tmp_path / "out.tgz") as tar:
        names = set(tar.getnames())
    assert "runs/a/final.json" in names and "runs/b/metrics.jsonl" in names
    assert not [n for n in names if n.endswith((".pt", ".safetensors"))]
    assert not (tmp_path / "out.tgz.tmp").exists()


def test_start_refuses_a_bundle_without_data(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "wheels").mkdir()
    res = subprocess.run(["bash", str(SCRIPT), "start", "s", "bundle", "wheels", "60"], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "ROM_SITTING_DIR": str(tmp_path / "sit")})
    assert res.returncode != 0 and "data.tar.xz is missing" in res.stderr
