"""Where a layer's GPU time goes, kernel by kernel: the dense Mamba mixer and the RoM mixer side by side.

One eager forward+backward of each layer (bf16 autocast, fp32 parameters, gradients set to None first, as a
training step's zero_grad does) under torch.profiler. For every kernel: the torch op that launched it and its
device time, in launch order; then totals per launching op for both layers, so the RoM layer's extra work
(routing, dispatch, gathers, casts, grouped GEMMs) reads off directly. The kernel count matters as well as the
time: under a CUDA graph each small kernel still costs its own few microseconds.

    python benchmarks/gpu_layer_kernels.py [--batch 8] [--seq-len 2048] [--d-model 1024] [--experts 8]
        [--master-weights] [--out-dir DIR]

--master-weights traces both mixers as ``train.master_weights`` runs them (bf16 projection weights, no casts)
and writes gpu_layer_kernels_master_weights.json.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, layer_shape_parser, write_result  # noqa: E402

from rom.config import MambaConfig, RoMConfig  # noqa: E402
from rom.layers.mamba import MambaMixer  # noqa: E402
from rom.layers.rom import RoMMixer  # noqa: E402
from rom.train.master_weights import to_working_weights  # noqa: E402


def kernel_trace(layer: torch.nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Kernels of one fwd+bwd in launch order: [{op, kernel, us}], op = the innermost torch op launching it."""
    from torch.profiler import ProfilerActivity, profile

    grad = torch.randn_like(x)

    def step() -> None:
        for p in layer.parameters():
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)[0]
        out.backward(grad.to(out.dtype))

    for _ in range(3):  # compile, autotune, allocator
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], acc_events=True) as prof:
        step()
        torch.cuda.synchronize()
    # every kernel on the device, in time order; the op that launched it, where there is one (Triton kernels
    # called from Python directly have none)
    events = list(prof.events())
    device = sorted((ev for ev in events if ev.device_type.name == "CUDA"), key=lambda ev: ev.time_range.start)
    launched = sorted(((ev.time_range.start, i, ev.name, k.name) for ev in events
                       if ev.device_type.name == "CPU" for i, k in enumerate(ev.kernels)))
    rows, j = [], 0
    for ev in device:
        op = "(python launch)"
        if j < len(launched) and launched[j][3] == ev.name:
            op, j = launched[j][2], j + 1
        rows.append({"op": op, "kernel": ev.name[:100], "us": ev.time_range.elapsed_us()})
    return rows


def main() -> None:
    ap = layer_shape_parser(__doc__)
    ap.add_argument("--master-weights", action="store_true")
    args = ap.parse_args()
    b, L, dm = args.batch, args.seq_len, args.d_model
    dt_rank = math.ceil(dm / 16)
    mcfg = MambaConfig(d_state=16)
    torch.manual_seed(0)
    x = torch.randn(b, L, dm, device="cuda", requires_grad=True)
    layers = {
        "dense": MambaMixer(dm, mcfg, dt_rank, backend="auto").cuda(),
        "rom": RoMMixer(dm, mcfg, RoMConfig(num_experts=args.experts, top_k=1), dt_rank, backend="auto").cuda(),
    }
    if args.master_weights:
        for layer in layers.values():
            to_working_weights(layer)
    traces = {name: kernel_trace(layer, x) for name, layer in layers.items()}

    per_op: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"dense": [0.0, 0], "rom": [0.0, 0]})
    for name, trace in traces.items():
        for r in trace:
            per_op[r["op"]][name][0] += r["us"]
            per_op[r["op"]][name][1] += 1
    table = sorted(per_op.items(), key=lambda kv: kv[1]["rom"][0] - kv[1]["dense"][0], reverse=True)
    summary = {name: {"kernels": len(t), "device_ms": sum(r["us"] for r in t) / 1e3} for name, t in traces.items()}
    payload = {"benchmark": "layer_kernels", "shape": {"batch": b, "seq_len": L, "d_model": dm,
               "experts": args.experts, "top_k": 1, "autocast": "bf16",
               "params": "bf16 working weights" if args.master_weights else "fp32"},
               "device": device_facts(), "summary": summary,
               "per_op_us": {op: v for op, v in table}, "traces": traces}
    name = "gpu_layer_kernels_master_weights" if args.master_weights else "gpu_layer_kernels"
    path = write_result(name, payload, args.out_dir)
    print(f"{'op':48s} {'dense us':>9s} {'n':>3s} {'rom us':>9s} {'n':>3s} {'extra us':>9s}")
    for op, v in table:
        d, r = v["dense"], v["rom"]
        print(f"{op[:48]:48s} {d[0]:9.1f} {d[1]:3d} {r[0]:9.1f} {r[1]:3d} {r[0] - d[0]:9.1f}")
    print("summary:", summary)
    print("rom launch order:")
    for r in traces["rom"]:
        print(f"  {r['us']:8.1f} {r['op'][:40]:40s} {r['kernel'][:70]}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
