"""scripts/triton_autotune_cache.py and its use in benchmarks/run_gpu_suite.sh: Triton's autotune records (and
nothing else of its cache) travel from one lent machine to the next, whole, without overwriting fresher ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from script_loader import ROOT, load_script

KEY_A, KEY_B, KEY_C = "a" * 64, "0123456789abcdef" * 4, "f" * 64
RECORD = {"key": [128, 64, "torch.bfloat16"], "configs_timings": [[{"kwargs": {"BK": 64}, "num_warps": 4,
                                                                      "num_stages": 2}, [0.11, 0.1, 0.12]]]}


def _load():
    return load_script("scripts/triton_autotune_cache.py")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fake_cache(cache: Path) -> None:
    """A Triton cache dir as a GPU run leaves it: compiled kernels beside the autotune records."""
    _write(cache / KEY_A / "chunk_fwd_kernel.autotune.json", json.dumps(RECORD))
    _write(cache / KEY_B / "chunk_bwd_kernel_dqkwg.autotune.json", json.dumps(RECORD))
    _write(cache / KEY_C / "chunk_fwd_kernel.cubin", "binary")           # compiled kernel: not carried
    _write(cache / KEY_C / "chunk_fwd_kernel.json", json.dumps({"name": "chunk_fwd_kernel"}))
    _write(cache / KEY_C / "torn.autotune.json", '{"key": [1], "configs_ti')  # cut mid-write
    _write(cache / "not-a-key" / "k.autotune.json", json.dumps(RECORD))


def test_save_copies_whole_autotune_records_only(tmp_path, capsys):
    tool = _load()
    _fake_cache(tmp_path / "cache")
    assert tool.main(["save", "--cache-dir", str(tmp_path / "cache"), "--to", str(tmp_path / "carry")]) == 0
    saved = sorted(p.relative_to(tmp_path / "carry").as_posix() for p in (tmp_path / "carry").rglob("*")
                   if p.is_file())
    assert saved == [f"{KEY_B}/chunk_bwd_kernel_dqkwg.autotune.json", f"{KEY_A}/chunk_fwd_kernel.autotune.json"]
    assert json.loads((tmp_path / "carry" / KEY_A / "chunk_fwd_kernel.autotune.json").read_text()) == RECORD
    err = capsys.readouterr().err
    assert "torn.autotune.json: skipped, not a whole autotune record" in err
    assert "not-a-key/k.autotune.json: skipped, its folder is not a Triton cache key" in err


def test_restore_keeps_the_machines_own_records(tmp_path):
    tool = _load()
    _fake_cache(tmp_path / "carry")
    own = _write(tmp_path / "cache" / KEY_A / "chunk_fwd_kernel.autotune.json", json.dumps({**RECORD, "key": [1]}))
    copied, kept, size = tool.copy_records(tmp_path / "carry", tmp_path / "cache")
    assert (copied, kept) == (1, 1) and size == len(json.dumps(RECORD))
    assert json.loads(own.read_text())["key"] == [1]
    assert (tmp_path / "cache" / KEY_B / "chunk_bwd_kernel_dqkwg.autotune.json").exists()
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_missing_source_is_not_an_error_but_a_file_is(tmp_path, capsys):
    tool = _load()
    assert tool.main(["restore", "--from", str(tmp_path / "none"), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "does not exist, nothing to copy" in capsys.readouterr().out
    _write(tmp_path / "file", "x")
    with pytest.raises(SystemExit, match="file: expected a directory of Triton cache entries"):
        tool.main(["restore", "--from", str(tmp_path / "file"), "--cache-dir", str(tmp_path / "cache")])


def test_gpu_suite_restores_the_carry_and_saves_the_union(tmp_path):
    """The suite started the real way with no part selected: it restores the carried records into Triton's
    cache dir before any part and sends back, under $OUT, what the cache then holds (carried and new)."""
    _write(tmp_path / "carry" / KEY_A / "chunk_fwd_kernel.autotune.json", json.dumps(RECORD))
    _write(tmp_path / "cache" / KEY_B / "chunk_bwd_kernel_dqkwg.autotune.json", json.dumps(RECORD))
    env = {**os.environ, "OUT": str(tmp_path / "out"), "TRITON_CACHE_DIR": str(tmp_path / "cache"),
           "TRITON_AUTOTUNE_CARRY": str(tmp_path / "carry"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu_suite.sh"), "no-such-part"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "triton autotune restore: 1 records copied" in res.stdout
    assert (tmp_path / "cache" / KEY_A / "chunk_fwd_kernel.autotune.json").exists()
    back = sorted(p.name for p in (tmp_path / "out" / "triton-autotune").rglob("*.autotune.json"))
    assert back == ["chunk_bwd_kernel_dqkwg.autotune.json", "chunk_fwd_kernel.autotune.json"]
    assert (tmp_path / "out" / "suite.log").read_text().count("triton autotune save: 2 records copied") == 1


KERNEL_KEY = """
from fla.ops.common import chunk_o
kernel = chunk_o.chunk_bwd_kernel_dqkwg
while type(kernel).__name__ != "JITFunction":  # under fla's autotune / heuristics wrappers
    kernel = kernel.fn
print(chunk_o.__file__)
print(kernel.cache_key)
"""


def test_the_kernel_part_of_the_key_does_not_depend_on_where_fla_is_installed(tmp_path):
    """A carried record is found again only if its key is the same on the next machine. The key's kernel part
    (``JITFunction.cache_key``, of fla's ``chunk_bwd_kernel_dqkwg`` here) hashes the kernel's source and globals,
    not its file's path: the same from fla as installed and from a copy elsewhere (the GPU host installs fla into
    a scratch folder). Needs triton (ROM_TRITON_INTERPRETER_PATH) and fla-core; no GPU."""
    import shutil

    paths = [p for p in (os.environ.get("ROM_TRITON_INTERPRETER_PATH"), os.environ.get("PYTHONPATH")) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    probe = subprocess.run([sys.executable, "-c", "import triton, fla"], env=env, capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"triton and fla-core not both importable: {probe.stderr.strip().splitlines()[-1:]}")
    installed = subprocess.run([sys.executable, "-c", KERNEL_KEY], env=env, capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    fla_dir = Path(installed.stdout.splitlines()[-2]).parents[2]
    shutil.copytree(fla_dir, tmp_path / "elsewhere" / "fla", ignore=shutil.ignore_patterns("__pycache__"))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "elsewhere"), *paths])
    copied = subprocess.run([sys.executable, "-c", KERNEL_KEY], env=env, capture_output=True, text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.splitlines()[-2].startswith(str(tmp_path / "elsewhere"))
    assert copied.stdout.splitlines()[-1] == installed.stdout.splitlines()[-1]
