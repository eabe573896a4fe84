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
