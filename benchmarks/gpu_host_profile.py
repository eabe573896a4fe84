"""Where the host time of a layer's forward + backward goes (the RoM layer is host-bound at the layer shape).

Runs the dense and the RoM mixer at the layer benchmark's shape (gpu_layers.py) under cProfile, and reports
the Python functions with the most own time (tottime) and how many CUDA kernels one forward + backward
launches (torch.profiler). Host time, not GPU time: a function's figure is what it costs to issue the work.
Each profiled iteration is followed by a synchronisation (excluded from the table), so that no launch waits
on a full queue inside the profile. Also the host time of one selective scan forward + backward alone at the
layer's scan shape, for our Triton scan and, when installed, mamba-ssm's. Prints tables and writes
benchmarks/results/gpu_host_profile.json.

    python benchmarks/gpu_host_profile.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, print_table, write_result  # noqa: E402

from rom.config import MambaConfig, RoMConfig  # noqa: E402
from rom.layers.mamba import MambaMixer  # noqa: E402
from rom.layers.rom import RoMMixer  # noqa: E402

ITERS = 20   # cProfile iterations
HOST_ITERS = 4   # few enough that the launch queue never fills (then the host would wait on the GPU)


def _step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = layer(x)
    y = out[0] if isinstance(out, tuple) else out
    y.float().sum().backward()


def _host_ms(fn: Callable[[], None], calls: int = HOST_ITERS, reps: int = 5) -> float:
    """Host time (ms) to issue one fn() from an idle GPU: after 3 warm-up calls, the best of ``reps`` runs of
    ``calls`` back-to-back calls, few enough that launches never wait on a full queue."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e3)
    torch.cuda.synchronize()
    return best


def _kernel_launches(layer: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _step(layer, x)
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)


def _top_functions(fn: Callable[[], None], n: int = 25) -> list[dict[str, Any]]:
    pr = cProfile.Profile()
    torch.cuda.synchronize()
    for _ in range(ITERS):
        pr.enable()
        fn()
        pr.disable()
        torch.cuda.synchronize()   # outside the profile: the next iteration starts on an empty queue
    stats = pstats.Stats(pr).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    rows = []
    for (path, line, name), (_, ncalls, tottime, cumtime, _) in stats.items():
        short = f"{Path(path).name}:{line}({name})" if path != "~" else name
        rows.append({"function": short[:90], "calls_per_step": ncalls / ITERS,
                     "own_us_per_step": tottime / ITERS * 1e6, "cum_us_per_step": cumtime / ITERS * 1e6})
    rows.sort(key=lambda r: -r["own_us_per_step"])
    return rows[:n]


def _scan_call(backend: str, batch: int, d_inner: int, seq_len: int, d_state: int) -> Callable[[], None]:
    """One selective scan forward + backward as the layer calls it (z, D, bias, softplus)."""
    from rom import kernels

    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device="cuda", generator=g).to(dtype).requires_grad_(True)

    u, delta, z = rnd(batch, d_inner, seq_len), rnd(batch, d_inner, seq_len), rnd(batch, d_inner, seq_len)
    B, C = rnd(batch, d_state, seq_len), rnd(batch, d_state, seq_len)
    A = (-torch.rand(d_inner, d_state, device="cuda", generator=g) - 0.5).requires_grad_(True)
    D, bias = rnd(d_inner, dtype=torch.float32), rnd(d_inner, dtype=torch.float32)

    def call() -> None:
        y = kernels.selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                   backend=backend)
        y.backward(torch.ones_like(y))

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    dm = args.d_model
    mcfg = MambaConfig(d_state=16)
    dt_rank = math.ceil(dm / 16)
    x = torch.randn(args.batch, args.seq_len, dm, device="cuda", requires_grad=True)
    layers = {
        "dense": MambaMixer(dm, mcfg, dt_rank, backend="auto").cuda(),
        "rom e8 top-1": RoMMixer(dm, mcfg, RoMConfig(num_experts=8, top_k=1), dt_rank, backend="auto").cuda(),
    }
    summary, tops = [], {}
    for name, layer in layers.items():
        summary.append({"layer": name, "host_ms_per_fwd_bwd": _host_ms(lambda: _step(layer, x)),
                        "kernels_per_fwd_bwd": _kernel_launches(layer, x)})
        tops[name] = _top_functions(lambda: _step(layer, x))
        print(summary[-1], flush=True)
    d_inner = 2 * dm
    scan_rows = []
    for backend in ("triton", "mamba_ssm"):
        try:
            call = _scan_call(backend, args.batch, d_inner, args.seq_len, mcfg.d_state)
            ms = _host_ms(call, calls=1, reps=10)
        except Exception as err:  # noqa: BLE001 - mamba-ssm is optional
            print(f"scan backend {backend}: not measured ({err})")
            continue
        scan_rows.append({"scan_backend": backend, "host_ms_per_fwd_bwd": ms})
        tops[f"scan alone ({backend})"] = _top_functions(call, n=40)
        print(scan_rows[-1], flush=True)
    for name, rows in tops.items():
        print(f"\n{name}: functions by own host time per forward + backward")
        print_table(rows, ["function", "calls_per_step", "own_us_per_step", "cum_us_per_step"])
    print()
    print_table(summary, ["layer", "host_ms_per_fwd_bwd", "kernels_per_fwd_bwd"])
    print_table(scan_rows, ["scan_backend", "host_ms_per_fwd_bwd"])
    shape = {k: v for k, v in vars(args).items() if k != "out_dir"}
    write_result("gpu_host_profile", {"device": device_facts(), "shape": shape, "summary": summary,
                                      "scan_host": scan_rows, "top_functions": tops},
                 Path(args.out_dir) if args.out_dir else None)


if __name__ == "__main__":
    main()
