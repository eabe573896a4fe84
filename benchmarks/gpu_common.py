"""Shared helpers for the GPU benchmarks: device facts, the two ceilings, timing, JSON output.

Timing follows docs/gpu_kernels.md: warm-up, CUDA-event timing through ``triton.testing.do_bench`` (median),
random inputs (never zeros), every variant measured in the same process on the same GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_facts() -> dict[str, Any]:
    """GPU name, SM count, max SM clock (nvidia-smi), versions: stored with every result."""
    props = torch.cuda.get_device_properties(0)
    facts: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "gpu": props.name,
        "sm_count": props.multi_processor_count,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm,driver_version", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.strip().split(",")
        facts["max_sm_clock_mhz"] = float(out[0])
        facts["driver"] = out[1].strip()
    except Exception:  # noqa: BLE001 - informative only
        facts["max_sm_clock_mhz"] = None
    return facts


def layer_shape_parser(doc: str | None) -> argparse.ArgumentParser:
    """Arguments of the layer benchmarks (gpu_layers.py, gpu_layer_kernels.py): the issue's layer shape by default
    (8 x 2048 tokens, d_model 1024, 8 experts) and where to write the JSON."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--out-dir", default=None)
    return ap


def bench_ms(fn: Callable[[], Any], warmup_ms: float = 25, rep_ms: float = 200) -> float:
    """Median time of fn in ms, CUDA events (triton.testing.do_bench)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def measure_copy_bandwidth(n_bytes: int = 2 * 2**30) -> float:
    """Device-to-device copy, bytes read + written per second."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * n_bytes / (ms * 1e-3)


def measure_matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = bench_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def measure_exp_rate() -> float:
    """exp2 results per second from a Triton kernel that only runs independent exp2 chains in registers."""
    import triton
    import triton.language as tl

    @triton.jit
    def _exp_kernel(out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x0 = offs.to(tl.float32) * 1e-9 - 0.5
        x1 = x0 + 0.25
        x2 = x0 - 0.25
        x3 = x0 + 0.125
        for _ in range(ITERS):
            x0 = tl.exp2(x0) - 1.5
            x1 = tl.exp2(x1) - 1.5
            x2 = tl.exp2(x2) - 1.5
            x3 = tl.exp2(x3) - 1.5
        tl.store(out_ptr + offs, x0 + x1 + x2 + x3)

    block, iters = 1024, 4096
    n_prog = torch.cuda.get_device_properties(0).multi_processor_count * 16
    out = torch.empty(n_prog * block, device="cuda")
    ms = bench_ms(lambda: _exp_kernel[(n_prog,)](out, ITERS=iters, BLOCK=block, num_warps=8))
    return n_prog * block * iters * 4 / (ms * 1e-3)


def write_result(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Atomic JSON write into benchmarks/results/<name>.json (and a copy under out_dir if given)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rom.io import atomic_write_json

    path = RESULTS_DIR / f"{name}.json"
    atomic_write_json(path, payload)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / f"{name}.json", payload)
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
