"""scripts/offline_gpu_study.sh pack: refuses a study without its data stages, and packs exactly the files the
GPU side needs with their modification times (so Snakemake there sees the data stages as done)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
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
    tuned = tmp_path / "triton-cache" / ("ab" * 32) / "chunk_fwd_kernel.autotune.json"  # what the sitting tuned
    tuned.parent.mkdir(parents=True)
    tuned.write_text('{"key": [64], "configs_timings": [[{"num_warps": 4}, [0.1]]]}')
    (tuned.parent / "chunk_fwd_kernel.cubin").write_bytes(b"binary")
    res = subprocess.run(["bash", str(SCRIPT), "collect", "s", str(tmp_path / "out.tgz")], cwd=tmp_path,
                         capture_output=True, text=True,
                         env={**os.environ, "ROM_SITTING_DIR": str(sit), "TRITON_CACHE_DIR": str(tuned.parents[1])})
    assert res.returncode == 0, res.stderr
    assert "background run ended" in res.stdout
    assert "a: finished" in res.stdout and "b: at step 448" in res.stdout and "c: not started" in res.stdout
    assert "collected 1 finished runs" in res.stdout
    with tarfile.open(tmp_path / "out.tgz") as tar:
        names = set(tar.getnames())
    assert "runs/a/final.json" in names and "runs/b/metrics.jsonl" in names
    assert not [n for n in names if n.endswith((".pt", ".safetensors"))]
    assert not (tmp_path / "out.tgz.tmp").exists()
    # Triton's autotune records come back beside the tarball, its compiled kernels do not
    back = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "triton-autotune").rglob("*") if p.is_file()]
    assert back == [f"triton-autotune/{'ab' * 32}/chunk_fwd_kernel.autotune.json"]


def test_start_refuses_a_bundle_without_data(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "wheels").mkdir()
    res = subprocess.run(["bash", str(SCRIPT), "start", "s", "bundle", "wheels", "60"], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "ROM_SITTING_DIR": str(tmp_path / "sit")})
    assert res.returncode != 0 and "data.tar.xz is missing" in res.stderr


def _script(tmp_path, *args, sit=None):
    env = {**os.environ, "ROM_SITTING_DIR": str(sit or tmp_path / "sit")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, env=env)


def _background_group(tmp_path) -> int:
    """A session like the one `start` leaves: a setsid'd shell named like the study's script copy, with a child
    that holds on in a process group of its own (as `timeout` puts Snakemake)."""
    proc = subprocess.Popen(["setsid", "bash", "-c", "set -m; sleep 300 & sleep 300; wait", "s.offline_gpu_study.sh"],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc.pid


def _alive_in_session(sid: int) -> list[str]:
    rows = subprocess.run(["ps", "-ww", "-e", "-o", "sid=,pid=,stat=,args="], capture_output=True, text=True).stdout
    return [r for r in rows.splitlines() if r.split()[:1] == [str(sid)] and not r.split()[2].startswith("Z")]


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid")
def test_stop_ends_the_whole_background_session_and_start_refuses_a_live_one(tmp_path):
    sit = tmp_path / "sit"
    (sit / "s").mkdir(parents=True)
    (sit / "s" / "keep").write_text("files in use")
    pid = _background_group(tmp_path)
    (sit / "s.pid").write_text(f"{pid}\n")
    (sit / "s.bundle").write_text(str(tmp_path / "bundle"))
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "data.tar.xz").write_bytes(b"")
    (tmp_path / "wheels").mkdir()
    try:
        for args in (("start", "s", "bundle", "wheels", "60"), ("resume", "s", "60")):
            res = _script(tmp_path, *args)
            assert res.returncode != 0 and "still going" in res.stderr, (args, res.stderr)
        assert (sit / "s" / "keep").exists()  # start did not wipe a live sitting
        res = _script(tmp_path, "stop", "s")
        assert res.returncode == 0, res.stderr
        assert f"stopped s (session {pid})" in res.stdout
        assert _alive_in_session(pid) == []  # the child in its own process group too
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(pid)], capture_output=True)


def test_stop_and_resume_name_a_study_that_was_never_started(tmp_path):
    for args in (("stop", "nope"), ("resume", "nope", "60")):
        res = _script(tmp_path, *args)
        assert res.returncode != 0 and "no started study nope" in res.stderr


def test_collect_packs_job_logs_and_the_sitting_log_and_names_trained_runs(tmp_path):
    sit = tmp_path / "sit"
    study = sit / "s" / "results" / "s"
    (study / "runs" / "t").mkdir(parents=True)
    (study / "runs" / "t" / "train.json").write_text("{}")
    (study / "runs" / "t" / "metrics.jsonl").write_text('{"step": 1024}\n')
    (study / "logs" / "eval").mkdir(parents=True)
    (study / "logs" / "eval" / "t.log").write_text("torch.OutOfMemoryError: CUDA out of memory\n")
    (sit / "s.log").write_text("Error in rule eval:\n")
    (sit / "s.pid").write_text("999999999\n")
    res = _script(tmp_path, "collect", "s", str(tmp_path / "out.tgz"))
    assert res.returncode == 0, res.stderr
    assert "t: trained, not yet evaluated" in res.stdout
    with tarfile.open(tmp_path / "out.tgz") as tar:
        assert tar.extractfile("logs/eval/t.log").read().startswith(b"torch.OutOfMemoryError")
        assert tar.extractfile("sitting.log").read() == b"Error in rule eval:\n"


def _fake_nvidia_smi(tmp_path, total_mib: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{total_mib}'\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def _fake_nvidia_smi_memory(tmp_path, total_mib: int, free_mib: int) -> dict:
    """An nvidia-smi that answers a memory.free,memory.total query as the real one does: "free, total"."""
    env = _fake_nvidia_smi(tmp_path, "")
    (tmp_path / "bin" / "nvidia-smi").write_text(
        f'#!/bin/sh\ncase "$*" in *memory.free,memory.total*) echo "{free_mib}, {total_mib}";; esac\n')
    return env


def test_gpu_jobs_auto_counts_the_memory_other_processes_leave_free(tmp_path):
    """An H100 whose 4 parity-test workers hold 30 GiB gets 2 jobs, not the idle card's 4, and says why on stderr."""
    env = _fake_nvidia_smi_memory(tmp_path, total_mib=81559, free_mib=81559 - 30 * 1024)
    res = subprocess.run(["bash", str(SCRIPT), "gpu-jobs", "auto"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "2"
    assert "50839 of 81559 MiB free (other processes hold the rest)" in res.stderr
    env = _fake_nvidia_smi_memory(tmp_path, total_mib=81559, free_mib=81000)  # an idle card: no message
    res = subprocess.run(["bash", str(SCRIPT), "gpu-jobs", "auto"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert (res.stdout.strip(), res.stderr) == ("4", "")


@pytest.mark.parametrize("total_mib, jobs", [("81559", "4"), ("143771", "8"), ("8000", "1"), ("200000", "8")])
def test_gpu_jobs_auto_fits_the_first_gpus_memory(tmp_path, total_mib, jobs):
    """17 GiB a job by default: 4 on an 80 GB H100, 8 on a 141 GB H200, never fewer than 1 or more than 8."""
    env = _fake_nvidia_smi(tmp_path, f"{total_mib}\n1024")
    res = subprocess.run(["bash", str(SCRIPT), "gpu-jobs", "auto"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == jobs
    res = subprocess.run(["bash", str(SCRIPT), "gpu-jobs"], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "ROM_GPU_JOB_GIB": "40"})
    assert res.stdout.strip() == str(min(8, max(1, int(total_mib) // (40 * 1024))))


def test_gpu_jobs_names_a_bad_value_and_a_missing_gpu(tmp_path):
    for value in ("0", "two", "-1"):
        res = _script(tmp_path, "gpu-jobs", value)
        assert res.returncode != 0 and f"GPU_JOBS must be a whole number >= 1 or auto, got '{value}'" in res.stderr
    env = _fake_nvidia_smi(tmp_path, "")
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # no GPU
    res = subprocess.run(["bash", str(SCRIPT), "gpu-jobs", "auto"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert res.returncode != 0 and "nvidia-smi gave no GPU memory" in res.stderr
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "data.tar.xz").write_bytes(b"")
    res = _script(tmp_path, "start", "s", "bundle", "wheels", "60", "many")  # refused before anything starts
    assert res.returncode != 0 and "got 'many'" in res.stderr and not (tmp_path / "sit" / "s").exists()


def test_wait_returns_at_the_record_count_at_the_end_of_the_run_or_at_the_limit(tmp_path):
    sit = tmp_path / "sit"
    runs = sit / "s" / "results" / "s" / "runs"
    for name in ("a", "b"):
        (runs / name).mkdir(parents=True)
        (runs / name / "final.json").write_text("{}")
    live = subprocess.Popen(["sleep", "60"])
    try:
        (sit / "s.pid").write_text(f"{live.pid}\n")
        res = _script(tmp_path, "wait", "s", "100", "2")
        assert res.returncode == 0 and "wait: 2 records (asked for 2)" in res.stdout
        res = _script(tmp_path, "wait", "s", "1", "3")
        assert res.returncode == 0 and "wait: 1s passed (2 records)" in res.stdout
    finally:
        live.kill()
        live.wait()
    res = _script(tmp_path, "wait", "s", "100", "5")
    assert res.returncode == 0 and "background run has ended (2 records)" in res.stdout
    res = _script(tmp_path, "wait", "nope", "10")
    assert res.returncode != 0 and "no started study nope" in res.stderr
    res = _script(tmp_path, "wait", "s", "soon")
    assert res.returncode != 0 and "SECONDS must be a whole number, got 'soon'" in res.stderr


@pytest.mark.skipif(shutil.which("setsid") is None or shutil.which("pkill") is None, reason="needs setsid, pkill")
def test_a_command_that_cannot_see_the_background_run_still_sees_it_alive_and_stops_it(tmp_path):
    """Each device command may run in a process namespace of its own. A real `start` whose Snakemake (a stand-in
    python3 that sleeps, under `timeout` like the real one) keeps running; then the pid file is made to name a
    process that does not exist, as a later command sees it: `collect` and `wait` must still call the run alive
    (its heartbeat), and `stop` must end its whole session through the stop file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/bash\nsleep 300 & wait\n")
    fake.chmod(0o755)
    host = tmp_path / "host"  # the tree `start` snapshots (the sitting folder must not be inside it)
    (host / "results" / "s" / "data" / "tokens").mkdir(parents=True)
    (host / "results" / "s" / "data" / "tokens" / "train.bin").write_bytes(b"")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "data.tar.xz").write_bytes(b"")
    (tmp_path / "wheels").mkdir()
    sit = tmp_path / "sit"
    env = {**os.environ, "ROM_SITTING_DIR": str(sit), "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def script(*args):
        return subprocess.run(["bash", str(SCRIPT), *args], cwd=host, capture_output=True, text=True, env=env,
                              timeout=120)

    res = script("start", "s", str(tmp_path / "bundle"), str(tmp_path / "wheels"), "600", "1")
    assert res.returncode == 0, res.stderr
    sid = int((sit / "s.pid").read_text())
    try:
        for _ in range(50):  # until the stand-in Snakemake runs under `timeout`
            if any(str(fake) in row for row in _alive_in_session(sid)):
                break
            time.sleep(0.2)
        assert any(str(fake) in row for row in _alive_in_session(sid)), (_alive_in_session(sid), (sit / "s.log").read_text())
        (sit / "s.pid").write_text("4194000\n")  # what a command in another process namespace finds there
        res = script("collect", "s", str(tmp_path / "c.tgz"))
        assert "s: background run running" in res.stdout
        res = script("wait", "s", "1")
        assert "wait: 1s passed" in res.stdout
        res = script("start", "s", str(tmp_path / "bundle"), str(tmp_path / "wheels"), "600", "1")
        assert res.returncode != 0 and "still going" in res.stderr
        res = script("stop", "s")
        assert res.returncode == 0, res.stderr + (sit / "s.log").read_text()
        assert "stopped s" in res.stdout
        deadline = time.monotonic() + 10
        while _alive_in_session(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive_in_session(sid) == []
        assert (sit / "s.exit").read_text().strip() == "143"  # the run saw the TERM and wrote its exit marker
        res = script("wait", "s", "100")
        assert "background run has ended" in res.stdout
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(sid)], capture_output=True)


def test_unscored_sends_each_trained_unrecorded_run_in_parts_that_reassemble(tmp_path):
    """A lease that ends between training and scoring: the trained run's weights and parts come back in parts
    under a size limit; a recorded run, a run still training and a run whose weights are gone do not."""
    study = tmp_path / "sit" / "s" / "results" / "s" / "runs"
    weights = os.urandom(5000)
    for name, files in {
        "trained": {"model.safetensors": weights, "train.json": b"{}", "config.yaml": b"a: 1\n",
                    "metrics.jsonl": b'{"step": 1}\n', "flops.json": b"{}", "checkpoint.pt": b"x"},
        "recorded": {"model.safetensors": b"w", "train.json": b"{}", "final.json": b"{}"},
        "training": {"metrics.jsonl": b'{"step": 3}\n', "checkpoint.pt": b"x"},
        "no-weights": {"train.json": b"{}"},
    }.items():
        (study / name).mkdir(parents=True)
        for f, data in files.items():
            (study / name / f).write_bytes(data)
    out = tmp_path / "out"
    res = subprocess.run(["bash", str(SCRIPT), "unscored", "s", str(out)], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "ROM_SITTING_DIR": str(tmp_path / "sit"),
                                         "ROM_PART_BYTES": "2K"})
    assert res.returncode == 0, res.stderr
    assert "unscored: 1 trained run(s) of s without a record" in res.stdout
    assert "no-weights: trained, but its model.safetensors is gone" in res.stderr
    parts = sorted(out.iterdir())
    assert [p.name for p in parts][:2] == ["trained.tgz.partaa", "trained.tgz.partab"] and len(parts) >= 2
    assert all(p.stat().st_size <= 2048 for p in parts)
    whole = tmp_path / "trained.tgz"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(whole) as tar:
        assert sorted(tar.getnames()) == ["config.yaml", "flops.json", "metrics.jsonl", "model.safetensors",
                                          "train.json"]
        assert tar.extractfile("model.safetensors").read() == weights
    res = _script(tmp_path, "unscored", "nope", str(out))
    assert res.returncode != 0 and "no started study nope" in res.stderr


def test_usage_prints_the_whole_header():
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "scripts/offline_gpu_study.sh unscored STUDY OUT_DIR" in res.stdout
    assert res.stdout.rstrip().endswith("a finished run is never trained twice.")
    assert "set -euo pipefail" not in res.stdout
