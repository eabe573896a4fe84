"""CPU benchmark: chunked reference selective scan vs the per-timestep loop, forward + backward.

Default problem (issue 2, "Speed"): batch 4, length 512, d_inner 512, d_state 16, float32, with D, z,
delta_bias and softplus as the Mamba mixer calls it. Goal: the chunked scan >= 10x faster than the loop.
Also sweeps the chunk size (the reference uses rom.kernels.scan_reference.CHUNK) and reports each variant's
max error against a float64 sequential scan.

    python benchmarks/cpu_scan.py [--repeats 3] [--loop-repeats 1] [--chunks 2 4 8 16] [--out PATH]

Prints a table and writes JSON (default benchmarks/results/cpu_scan.json). Timings are wall-clock minima
over repeats; the machine's load average is recorded before and after, since shared machines skew them.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from rom.io import atomic_write_json
from rom.kernels.scan_reference import CHUNK, selective_scan_reference, selective_scan_sequential

log = logging.getLogger("cpu_scan")
DEFAULT_OUT = Path(__file__).parent / "results" / "cpu_scan.json"


def make_inputs(batch: int, dim: int, length: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(dim, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3))))
    dt = dt * 1e-3
    return {
        "u": torch.randn(batch, dim, length, generator=g),
        "delta": torch.randn(batch, dim, length, generator=g) * 0.5,
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(dim, 1),  # S4D-real init
        "B": torch.randn(batch, n, length, generator=g),
        "C": torch.randn(batch, n, length, generator=g),
        "D": torch.ones(dim),
        "z": torch.randn(batch, dim, length, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus, as Mamba's dt_proj bias
    }


ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def fwd_bwd(fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], cot: torch.Tensor) -> tuple[float, Any]:
    leaves = [inputs[k].detach().clone().requires_grad_() for k in ORDER]
    start = time.perf_counter()
    y = fn(*leaves, True)
    grads = torch.autograd.grad((y * cot).sum(), leaves)
    elapsed = time.perf_counter() - start
    return elapsed, (y.detach(), [g.detach() for g in grads])


def max_rel_error(got: tuple, want: tuple) -> float:
    worst = 0.0
    for a, b in zip([got[0], *got[1]], [want[0], *want[1]]):
        scale = b.abs().max().item() or 1.0
        worst = max(worst, (a.double() - b.double()).abs().max().item() / scale)
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--d-inner", type=int, default=512)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each chunked variant")
    p.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the (slow) per-timestep loop")
    p.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    shape = dict(batch=args.batch, length=args.length, d_inner=args.d_inner, d_state=args.d_state)
    inputs = make_inputs(args.batch, args.d_inner, args.length, args.d_state, seed=0)
    cot = torch.randn(args.batch, args.d_inner, args.length, generator=torch.Generator().manual_seed(1))

    log.info("float64 sequential ground truth for the error column")
    truth_inputs = {k: v.double() for k, v in inputs.items()}
    _, truth = fwd_bwd(selective_scan_sequential, truth_inputs, cot.double())

    rows: list[dict[str, Any]] = []

    def measure(name: str, fn: Callable[..., torch.Tensor], repeats: int) -> None:
        fwd_bwd(fn, inputs, cot) if repeats > 1 else None  # warm-up (skipped for the slow loop)
        times, result = [], None
        for i in range(repeats):
            t, result = fwd_bwd(fn, inputs, cot)
            times.append(t)
            log.info("%s run %d/%d: %.1f ms", name, i + 1, repeats, t * 1e3)
        rows.append(
            {
                "impl": name,
                "ms_min": min(times) * 1e3,
                "ms_median": statistics.median(times) * 1e3,
                "repeats": repeats,
                "max_rel_error_vs_fp64": max_rel_error(result, truth),
            }
        )

    measure("loop (per-timestep)", selective_scan_sequential, args.loop_repeats)
    for chunk in args.chunks:
        name = f"chunked (chunk={chunk})" + (" [default]" if chunk == CHUNK else "")
        measure(name, lambda *a, c=chunk: selective_scan_reference(*a, chunk=c), args.repeats)
    loop_ms = rows[0]["ms_min"]
    for row in rows:
        row["speedup_vs_loop"] = loop_ms / row["ms_min"]

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"selective scan fwd+bwd, float32 CPU, batch {args.batch} x d_inner {args.d_inner} x length {args.length}"
        f" x d_state {args.d_state}"
    )
    print(
        f"machine: {machine['processor']}, {machine['cpu_count']} cores, {machine['torch_threads']} torch threads,"
        f" load avg before {machine['load_avg_before']} after {machine['load_avg_after']}"
    )
    print(f"{'implementation':<28}{'min ms':>10}{'median ms':>11}{'speedup':>9}{'max rel err':>13}")
    for row in rows:
        print(
            f"{row['impl']:<28}{row['ms_min']:>10.1f}{row['ms_median']:>11.1f}"
            f"{row['speedup_vs_loop']:>8.1f}x{row['max_rel_error_vs_fp64']:>13.2e}"
        )
    default = next((r for r in rows if r["impl"].endswith("[default]")), None)
    result = {
        "benchmark": "cpu_scan",
        "dtype": "float32",
        "shape": shape,
        "default_chunk": CHUNK,
        "machine": machine,
        "rows": rows,
        "speedup_default_vs_loop": default["speedup_vs_loop"] if default else None,
        "goal_speedup": 10.0,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
