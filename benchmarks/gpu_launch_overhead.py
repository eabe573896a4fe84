"""Host cost of one kernel launch on this machine: a torch op, a Triton launch through ``kernel[grid](...)``,
and the same compiled Triton kernel launched directly (``CompiledKernel.run``, skipping the argument binding
and cache lookup of ``JITFunction.run``), for a kernel with few and with many (scan-like) arguments.

Eager training steps here are bound by the host (docs/gpu_kernels.md): this says how much of a Triton launch
is Triton's Python and how much the driver. Every kernel does almost nothing (one program, a few loads), so
the GPU never becomes the bottleneck; the launch queue is drained every ``--sync-every`` calls so that it
never fills. Host microseconds per call, best of ``--reps`` repetitions. Prints a table and writes
benchmarks/results/gpu_launch_overhead.json.

    python benchmarks/gpu_launch_overhead.py [--calls 2000] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, print_table, write_result  # noqa: E402


@triton.jit
def _few_args_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1.0, mask=offs < n)


@triton.jit
def _many_args_kernel(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11,
                      i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11,
                      i12, i13, i14, i15, i16, i17, i18, i19, i20, i21, i22, i23,
                      F0: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr, BLOCK: tl.constexpr):
    # as many pointers, integers (sizes, strides) and flags as the selective scan's backward kernel takes
    offs = tl.arange(0, BLOCK)
    s = i0 + i1 + i2 + i3 + i4 + i5 + i6 + i7 + i8 + i9 + i10 + i11
    s += i12 + i13 + i14 + i15 + i16 + i17 + i18 + i19 + i20 + i21 + i22 + i23
    v = tl.load(p1 + offs) + tl.load(p2 + offs) + tl.load(p3 + offs) + tl.load(p4 + offs) + tl.load(p5 + offs)
    v += tl.load(p6 + offs) + tl.load(p7 + offs) + tl.load(p8 + offs) + tl.load(p9 + offs)
    v += tl.load(p10 + offs) + tl.load(p11 + offs)
    if F0 and F1 and F2:
        v += s.to(tl.float32)
    tl.store(p0 + offs, v)


def _host_us(fn: Callable[[], object], calls: int, sync_every: int, reps: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        total = 0.0
        done = 0
        while done < calls:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(sync_every):
                fn()
            total += time.perf_counter() - t0
            done += sync_every
        best = min(best, total / done * 1e6)
    torch.cuda.synchronize()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--sync-every", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    x = torch.zeros(128, device=dev)
    bufs = [torch.zeros(128, device=dev) for _ in range(12)]
    ints = [16 * (k + 1) for k in range(24)]   # multiples of 16, as strides usually are
    stream = torch.cuda.current_stream().cuda_stream

    few = _few_args_kernel[(1,)](x, 128, BLOCK=128)
    many = _many_args_kernel[(1,)](*bufs, *ints, F0=True, F1=True, F2=True, BLOCK=128)

    def direct(compiled, *call_args):
        # CompiledKernel.run takes every parameter in order (constexprs included; the launcher skips them)
        return lambda: compiled.run(1, 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None,
                                    *call_args)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("torch.empty (no kernel)", lambda: torch.empty(128, device=dev)),
        ("torch x.add_(1) (1 kernel)", lambda: x.add_(1.0)),
        ("torch x.sum(0) (1 kernel)", lambda: x.sum(0)),
        ("triton kernel[grid], 2 args", lambda: _few_args_kernel[(1,)](x, 128, BLOCK=128)),
        ("triton direct run, 2 args", direct(few, x, 128, 128)),
        ("triton kernel[grid], 36 args", lambda: _many_args_kernel[(1,)](*bufs, *ints, F0=True, F1=True, F2=True,
                                                                          BLOCK=128)),
        ("triton direct run, 36 args", direct(many, *bufs, *ints, True, True, True, 128)),
    ]
    rows = []
    for name, fn in cases:
        rows.append({"launch": name, "host_us_per_call": _host_us(fn, args.calls, args.sync_every, args.reps)})
        print(rows[-1], flush=True)
    by = {r["launch"]: r["host_us_per_call"] for r in rows}
    ratios = {
        "triton_over_direct_2_args": by["triton kernel[grid], 2 args"] / by["triton direct run, 2 args"],
        "triton_over_direct_36_args": by["triton kernel[grid], 36 args"] / by["triton direct run, 36 args"],
        "triton_36_args_over_torch_add": by["triton kernel[grid], 36 args"] / by["torch x.add_(1) (1 kernel)"],
    }
    print()
    print_table(rows, ["launch", "host_us_per_call"])
    print(ratios)
    write_result("gpu_launch_overhead", {"device": device_facts(), "calls": args.calls, "rows": rows,
                                         "ratios": ratios}, Path(args.out_dir) if args.out_dir else None)


if __name__ == "__main__":
    main()
