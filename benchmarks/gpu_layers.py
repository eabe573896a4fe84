"""Layer benchmarks on one GPU (bf16 autocast, fp32 parameters), all variants side by side in one run.

1. Dense Mamba mixer, d_model 1024, expand 2, d_state 16, 8 x 2048 tokens: ours (backend auto = Triton scan
   and conv), the torch reference path, and mamba-ssm's ``Mamba`` if it is installed and built.
2. RoM mixer (8 experts, top-1, shared routing, conv/gate/out experts) vs our dense mixer of the same active
   shape: time ratio (goal <= 1.10).
3. Both mixers as ``train.master_weights`` runs them (bf16 projection weights, no casts; the fp32 masters live
   in the optimizer, outside the timed forward + backward) and with the composed inner path.
Every layer is timed eagerly and with its forward+backward replayed as one CUDA graph (``fwd_bwd_graph_ms``,
what ``train.cuda_graphs`` does for a step): the first includes the host's launch cost, the second does not.
Prints a table and writes benchmarks/results/gpu_layers.json.

    python benchmarks/gpu_layers.py [--batch 8] [--seq-len 2048] [--d-model 1024] [--out-dir DIR]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, device_facts, layer_shape_parser, print_table, write_result  # noqa: E402
from mamba_ssm_anchor import mamba_ssm_fused_with_our_conv, mamba_ssm_layer  # noqa: E402

from rom.config import MambaConfig, RoMConfig  # noqa: E402
from rom.layers.mamba import MambaMixer  # noqa: E402
from rom.layers.rom import RoMMixer  # noqa: E402
from rom.train.cuda_graph import CapturedStep  # noqa: E402
from rom.train.master_weights import to_working_weights  # noqa: E402


def _time_layer(layer: torch.nn.Module, xs: list[torch.Tensor], unpack: bool) -> dict[str, float]:
    grad = torch.randn_like(xs[0])
    i = [0]

    def run():
        x = xs[i[0] % len(xs)]
        i[0] += 1
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)
        return out[0] if unpack else out

    def fwd():
        with torch.no_grad():
            run()

    params = [p for p in layer.parameters() if p.requires_grad]

    def fwd_bwd():
        for p in params:  # as a training step's zero_grad(set_to_none=True): grads are written, not added
            p.grad = None
        out = run()
        out.backward(grad.to(out.dtype))

    def enqueue_ms() -> float:
        """Host time to issue one forward+backward, GPU idle at the start: above the GPU time = CPU-bound."""
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            fwd_bwd()
            times.append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize()
        return sorted(times)[len(times) // 2]

    def graphed_ms() -> float | None:
        """fwd+bwd replayed as one CUDA graph (rom.train.cuda_graph, as train.cuda_graphs runs a step): the
        GPU time without the host's launch cost; gradients accumulate in place instead of being reset."""
        x = xs[0]

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = layer(x)
            out = out[0] if unpack else out
            out.backward(grad.to(out.dtype))

        try:
            captured = CapturedStep(step, params)
        except Exception as err:  # noqa: BLE001 - reported, the eager rows stand
            print(f"capture failed: {type(err).__name__}: {str(err)[:300]}")
            return None
        ms = bench_ms(captured.replay)
        del captured
        return ms

    return {"fwd_ms": bench_ms(fwd), "fwd_bwd_ms": bench_ms(fwd_bwd), "host_enqueue_fwd_bwd_ms": enqueue_ms(),
            "fwd_bwd_graph_ms": graphed_ms()}


def _profile(layer: torch.nn.Module, x: torch.Tensor, top: int = 16, backward: bool = True) -> list[dict[str, Any]]:
    """CUDA time per kernel over one fwd+bwd (or fwd alone): where the layer's time goes, top entries."""
    from torch.profiler import ProfilerActivity, profile

    def step():
        for p in layer.parameters():
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.set_grad_enabled(backward):
            out = layer(x)[0]
        if backward:
            out.backward(torch.ones_like(out))

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events) or 1.0
    return [{"kernel": e.key[:90], "ms": e.self_device_time_total / 1e3, "share": e.self_device_time_total / total,
             "calls": e.count} for e in events[:top]]


def _working_weights(layer: torch.nn.Module) -> torch.nn.Module:
    """The mixer as ``train.master_weights`` runs it: projection weights in bf16, used without casts."""
    to_working_weights(layer)
    return layer


def main() -> None:
    ap = layer_shape_parser(__doc__)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()
    b, L, dm = args.batch, args.seq_len, args.d_model
    tokens = b * L
    dt_rank = math.ceil(dm / 16)
    mcfg = MambaConfig(d_state=16)
    facts = device_facts()
    xs = [torch.randn(b, L, dm, device="cuda", requires_grad=True) for _ in range(2)]

    layers: dict[str, Callable[[], tuple[torch.nn.Module | None, str]]] = {
        "dense mamba, ours (auto)": lambda: (MambaMixer(dm, mcfg, dt_rank, backend="auto").cuda(), "triton"),
        # "composed inner": the mixer's inner path composed of the separate ops (the conv's and the scan's
        # gradients concatenated into d xz), beside the default (rom.kernels.inner_path: written in place)
        "dense mamba, ours, composed inner": lambda: (
            MambaMixer(dm, mcfg, dt_rank, backend="auto", fused_inner=False).cuda(), "triton"),
        "dense mamba, ours, master weights": lambda: (_working_weights(
            MambaMixer(dm, mcfg, dt_rank, backend="auto").cuda()), "triton, bf16 working weights"),
        "dense mamba, torch reference": lambda: (MambaMixer(dm, mcfg, dt_rank, backend="reference").cuda(), "torch"),
        "dense mamba, mamba-ssm Mamba": lambda: mamba_ssm_layer(dm),
        "dense mamba, mamba-ssm fused + our conv": lambda: mamba_ssm_fused_with_our_conv(dm),
        f"RoM e{args.experts} top-1, ours (auto)": lambda: (RoMMixer(dm, mcfg, RoMConfig(num_experts=args.experts,
                                                            top_k=1), dt_rank, backend="auto").cuda(), "triton"),
        f"RoM e{args.experts} top-1, ours, composed inner": lambda: (RoMMixer(
            dm, mcfg, RoMConfig(num_experts=args.experts, top_k=1), dt_rank, backend="auto",
            fused_inner=False).cuda(), "triton"),
        f"RoM e{args.experts} top-1, ours, master weights": lambda: (_working_weights(RoMMixer(
            dm, mcfg, RoMConfig(num_experts=args.experts, top_k=1), dt_rank, backend="auto").cuda()),
            "triton, bf16 working weights"),
        f"RoM e{args.experts} top-1, torch reference": lambda: (RoMMixer(dm, mcfg, RoMConfig(
            num_experts=args.experts, top_k=1), dt_rank, backend="reference").cuda(), "torch"),
    }
    rows: list[dict[str, Any]] = []
    for name, make in layers.items():
        if args.no_reference and "reference" in name:
            continue
        torch.manual_seed(0)
        try:
            layer, note = make()
        except Exception as err:  # noqa: BLE001
            layer, note = None, f"build failed: {type(err).__name__}: {err}"
        if layer is None:
            print(f"{name}: {note}")
            rows.append({"layer": name, "note": note})
            continue
        try:
            t = _time_layer(layer, xs, unpack="mamba-ssm" not in name)
        except Exception as err:  # noqa: BLE001 - keep the other rows (e.g. OOM on the reference path)
            print(f"{name}: failed: {type(err).__name__}: {err}")
            rows.append({"layer": name, "note": f"failed: {type(err).__name__}: {str(err)[:200]}"})
            layer = None  # release it before the next row (not `del`: the loop goes on using the name)
            torch.cuda.empty_cache()
            continue
        rows.append({"layer": name, **t, "Mtok_per_s_fwd_bwd": tokens / t["fwd_bwd_ms"] / 1e3,
                     "params_M": sum(p.numel() for p in layer.parameters()) / 1e6, "note": note})
        if "ours" in name:
            try:
                rows[-1]["top_kernels_fwd_bwd"] = _profile(layer, xs[0])
                rows[-1]["top_kernels_fwd"] = _profile(layer, xs[0], backward=False)
            except Exception as err:  # noqa: BLE001 - the profile is informative only
                print(f"profile failed: {err}")
        print(rows[-1], flush=True)
        del layer
        torch.cuda.empty_cache()

    by = {r["layer"]: r for r in rows if "fwd_bwd_ms" in r}
    ours_dense = by.get("dense mamba, ours (auto)")
    ours_rom = by.get(f"RoM e{args.experts} top-1, ours (auto)")
    summary: dict[str, float] = {}

    def ratio(key: str, num: dict[str, Any] | None, den: dict[str, Any] | None, field: str) -> None:
        """summary[key] = num[field] / den[field] where both rows have the field (a capture can fail)."""
        if num and den and num.get(field) and den.get(field):
            summary[key] = num[field] / den[field]

    ratio("rom_over_dense_fwd_bwd", ours_rom, ours_dense, "fwd_bwd_ms")
    ratio("rom_over_dense_fwd", ours_rom, ours_dense, "fwd_ms")
    ratio("rom_over_dense_fwd_bwd_graphs", ours_rom, ours_dense, "fwd_bwd_graph_ms")
    dense_composed = by.get("dense mamba, ours, composed inner")
    rom_composed = by.get(f"RoM e{args.experts} top-1, ours, composed inner")
    ratio("rom_over_dense_fwd_bwd_graphs_both_composed_inner", rom_composed, dense_composed, "fwd_bwd_graph_ms")
    ratio("rom_over_dense_fwd_bwd_graphs_both_master_weights",
          by.get(f"RoM e{args.experts} top-1, ours, master weights"), by.get("dense mamba, ours, master weights"),
          "fwd_bwd_graph_ms")
    ratio("dense_composed_over_fused_inner_fwd_bwd_graphs", dense_composed, ours_dense, "fwd_bwd_graph_ms")
    ratio("rom_composed_over_fused_inner_fwd_bwd_graphs", rom_composed, ours_rom, "fwd_bwd_graph_ms")
    for name, row in (("mamba_ssm", by.get("dense mamba, mamba-ssm Mamba")),
                      ("mamba_ssm_fused", by.get("dense mamba, mamba-ssm fused + our conv"))):
        ratio(f"ours_speedup_vs_{name}_fwd_bwd", row, ours_dense, "fwd_bwd_ms")
        ratio(f"ours_speedup_vs_{name}_fwd_bwd_graphs", row, ours_dense, "fwd_bwd_graph_ms")
    if ours_dense:
        summary["ours_speedup_vs_quoted_mamba_ssm_6.62ms"] = 6.62 / ours_dense["fwd_bwd_ms"]
    payload = {"benchmark": "layers", "shape": {"batch": b, "seq_len": L, "d_model": dm, "expand": 2, "d_state": 16,
               "dt_rank": dt_rank, "experts": args.experts, "autocast": "bf16", "params": "fp32"},
               "device": facts, "results": rows, "summary": summary,
               "quoted": {"mamba_ssm_Mamba_fwd_bwd_ms": 6.62, "note": "issue 6, H100 80GB, another run"}}
    path = write_result("gpu_layers", payload, args.out_dir)
    print(f"\nwrote {path}; {facts['gpu']} torch {facts['torch']} triton {facts['triton']}")
    print_table(rows, ["layer", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_graph_ms", "host_enqueue_fwd_bwd_ms",
                       "Mtok_per_s_fwd_bwd"])
    print("summary:", {k: round(v, 3) for k, v in summary.items()})
    for key in ("top_kernels_fwd_bwd", "top_kernels_fwd"):
        for r in rows:
            for k in r.get(key, [])[:10]:
                print(f"  {key[12:]:7s} {r['layer'][:24]:24s} {k['ms']:7.3f} ms {100 * k['share']:5.1f}%  x{k['calls']:<3d} "
                      f"{k['kernel'][:64]}")


if __name__ == "__main__":
    main()
