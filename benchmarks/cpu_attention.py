"""Sliding-window attention beyond the window on CPU: full (L, L) mask vs the blocked band, side by side.

Prints a table and writes benchmarks/results/cpu_attention.json (median of 3 after one warm-up; same inputs).

    python benchmarks/cpu_attention.py [--heads 4] [--head-dim 64] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rom.layers.attention import banded_attention, sliding_window_mask  # noqa: E402

CASES = [(2048, 256), (4096, 512), (8192, 1024)]


def _median_ms(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cpu_attention.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for L, W in CASES:
        q, k, v = (torch.randn(1, args.heads, L, args.head_dim) for _ in range(3))
        full = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(L, W, q.device))  # noqa: E731
        band = lambda: banded_attention(q, k, v, W)  # noqa: E731
        row = {"seq_len": L, "window": W, "full_mask_ms": _median_ms(full), "banded_ms": _median_ms(band),
               "max_abs_diff": (full() - band()).abs().max().item()}
        row["speedup"] = row["full_mask_ms"] / row["banded_ms"]
        rows.append(row)
        print(f"L {L:6d} window {W:5d}  full mask {row['full_mask_ms']:8.1f} ms  banded {row['banded_ms']:7.1f} ms  "
              f"x{row['speedup']:.2f}  max |diff| {row['max_abs_diff']:.1e}", flush=True)
    payload = {"benchmark": "cpu_attention", "machine": {"cpu": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
               "heads": args.heads, "head_dim": args.head_dim, "results": rows}
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out)  # never a torn file
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
