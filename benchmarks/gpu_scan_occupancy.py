"""How the v2 scan's time depends on the number of independent recurrences, and what segments buy.

The v2 kernels give each channel one lane (forward) or four (backward, d_state 16) and walk time sequentially, so the
number of warps in flight is batch x d_inner / 32. For each shape and segment count S this times:

- "fold": the sequence folded into S times more, shorter rows, (b, d, L) -> (b * S, d, L / S), scanned
  without segments: the same work with S times the parallelism and no carries, the upper bound of S segments;
- "segments": the real thing, S segments scanned in parallel with carries composed from segment summaries
  (the summary kernels included in the time);
- "auto": the plan the kernels pick by themselves.

Kernels are timed separately: forward without checkpoints, forward writing checkpoints, backward.

    python benchmarks/gpu_scan_occupancy.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, device_facts, print_table, write_result  # noqa: E402
from gpu_scan import make_inputs  # noqa: E402

from rom.kernels.scan_plan import V2_CHUNK, v2_launch  # noqa: E402
from rom.kernels.triton_scan_bwd import scan_backward_v2  # noqa: E402
from rom.kernels.triton_scan_fwd import scan_forward_v2  # noqa: E402

# (batch, d_inner, L): the anchor and the three gpu_step.py model shapes (15M, 115M, 350M)
SHAPES = [(8, 2048, 2048), (16, 512, 2048), (8, 1536, 2048), (4, 2048, 2048)]
SEGMENTS = (1, 2, 4, 8)


def _fold(x: dict, s: int) -> dict:
    """(b, d, L) -> (b * s, d, L / s): s independent rows per sequence, same number of elements."""
    def fold3(t: torch.Tensor) -> torch.Tensor:
        b, c, L = t.shape
        return t.detach().reshape(b, c, s, L // s).permute(0, 2, 1, 3).reshape(b * s, c, L // s).contiguous()
    return {k: (fold3(v) if v.dim() == 3 else v.detach()) for k, v in x.items()}


def _time_kernels(x: dict, fwd_cfg, bwd_cfg) -> dict[str, float]:
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    dout = torch.randn_like(x["u"])
    fwd = bench_ms(lambda: scan_forward_v2(*args, store_ckpt=False, config=fwd_cfg))
    fwd_ck = bench_ms(lambda: scan_forward_v2(*args, store_ckpt=True, config=fwd_cfg))
    _, ckpt, Bt, Ct = scan_forward_v2(*args, store_ckpt=True, config=fwd_cfg)
    u, delta, A, B, C, D, z, bias, sp = args
    bwd = bench_ms(lambda: scan_backward_v2(dout, u, delta, A, Bt, Ct, B, C, D, z, bias, sp, ckpt,
                                            config=bwd_cfg))
    return {"fwd_ms": fwd, "fwd_ckpt_ms": fwd_ck, "bwd_ms": bwd}


def _auto_plans(x: dict) -> str:
    b, d, L = x["u"].shape
    n_chunks = -(-L // V2_CHUNK)
    plans = [v2_launch(16, bwd, b, d, n_chunks, x["u"].device, None) for bwd in (False, True)]
    return "/".join(f"{blk}x{p.n_seg}" for blk, _, p in plans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for b, d, L in SHAPES:
            base = make_inputs(b, d, L, 16, torch.bfloat16, seed=0)
            detached = {k: v.detach() for k, v in base.items()}
            shape = f"{b}x{d}x{L}"
            cases = [("auto", None, detached, None, None)]
            for s in SEGMENTS:
                cases.append(("fold", s, _fold(base, s), (32, 1, 1), (8, 1, 1)))
                if s > 1:
                    cases.append(("segments", s, detached, (32, 1, s), (8, 1, s)))
            for kind, s, x, fwd_cfg, bwd_cfg in cases:
                row = {"shape": shape, "kind": kind, "segments": s if s else _auto_plans(x),
                       **_time_kernels(x, fwd_cfg, bwd_cfg)}
                rows.append(row)
                print(row, flush=True)
            torch.cuda.empty_cache()
    cols = ["shape", "kind", "segments", "fwd_ms", "fwd_ckpt_ms", "bwd_ms"]
    print_table(rows, cols)
    write_result("gpu_scan_occupancy", {"device": device_facts(), "rows": rows},
                 Path(args.out_dir) if args.out_dir else None)


if __name__ == "__main__":
    main()
