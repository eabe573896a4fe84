"""The Triton kernels against float64 references in Triton's CPU interpreter (no GPU needed).

Runs ``tests/triton_interpreter_cases.py`` in a subprocess with ``TRITON_INTERPRET=1`` (see its docstring for
what the interpreter does and does not check). Needs triton 3.6, the version the GPU results were measured
with: either installed, or in a directory named by ``ROM_TRITON_INTERPRETER_PATH`` (``.ci/run`` does
``pip install --no-deps --target DIR triton==3.6.0``; triton installs on CPU-only machines too). Skipped
otherwise: a CPU-only torch does not bring triton, and triton 3.9's interpreter turns one of the scan's
combined load masks into int32 and rejects it (the compiled kernels are unaffected).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "triton_interpreter_cases.py"
SUPPORTED = "3.6."


def _env() -> dict[str, str]:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    paths = [str(ROOT)]
    extra = os.environ.get("ROM_TRITON_INTERPRETER_PATH")
    if extra:
        if not Path(extra).is_dir():
            raise ValueError(f"ROM_TRITON_INTERPRETER_PATH={extra!r}: expected a directory holding triton")
        paths.insert(0, extra)
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


@pytest.fixture(scope="module")
def interpreter_env() -> dict[str, str]:
    env = _env()
    probe = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], env=env,
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("triton is not importable (set ROM_TRITON_INTERPRETER_PATH to a triton 3.6 install)")
    version = probe.stdout.strip()
    if not version.startswith(SUPPORTED):
        pytest.skip(f"interpreter checks need triton {SUPPORTED}x, found {version}")
    return env


@pytest.mark.parametrize("group", ["scan", "conv", "layout", "cast", "routing", "inner", "adamw"])
def test_triton_kernels_match_float64_in_the_interpreter(group, interpreter_env):
    run = subprocess.run([sys.executable, str(WORKER), group], env=interpreter_env, capture_output=True,
                         text=True, timeout=900, cwd=ROOT)
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    failed = [r for r in rows if not r["ok"]]
    assert run.returncode == 0 and rows and not failed, (
        f"{group}: rc {run.returncode}; out of tolerance: {failed}\n{run.stderr[-3000:]}")
