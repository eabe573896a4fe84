"""Does the expert banks' storage order change the speed of torch's grouped GEMM? Side by side on one GPU.

``torch._grouped_mm`` picks one CUTLASS kernel per operand layout (A and B row- or column-major) and one tile
shape per problem size. The expert banks are stored (E, d_in, d_out), so the forward reads its weight
N-major and the input gradient reads it K-major; stored (E, d_out, d_in), as nn.Linear stores a dense weight,
it is the other way round, and the weight gradient comes out as (E, d_out, d_in). This times the six GEMMs of
an expert projection's forward + backward (forward, input gradient, weight gradient) at the RoM layer's two
shapes under both storage orders, with the dense projections of the same total size (cuBLAS, as the dense
mixer runs them) beside them.

T = 16384 token rows, 8 experts (random routing), bf16:
    in  (K 1024 -> N 4096), out (K 2048 -> N 1024)

    python benchmarks/gpu_grouped_mm_layout.py [--out-dir DIR]   ->  gpu_grouped_mm_layout.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, device_facts, print_table, rel_err, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    T, E, dev, bf16 = args.tokens, args.experts, "cuda", torch.bfloat16
    gmm = torch._grouped_mm
    ids = torch.randint(0, E, (T,), device=dev)
    offsets = torch.cumsum(torch.bincount(ids, minlength=E), 0).to(torch.int32)
    rows: list[dict[str, Any]] = []
    for proj, K, N in (("in", 1024, 4096), ("out", 2048, 1024)):
        x = torch.randn(T, K, device=dev, dtype=bf16)
        g = torch.randn(T, N, device=dev, dtype=bf16)
        w_kn = (torch.randn(E, K, N, device=dev) / K**0.5).to(bf16)  # (E, d_in, d_out): the current storage
        w_nk = w_kn.transpose(1, 2).contiguous()  # (E, d_out, d_in): nn.Linear's order, same values
        w_dense = w_nk[0]  # (N, K)
        variants: dict[str, dict[str, Callable[[], torch.Tensor]]] = {
            "experts (E, d_in, d_out)": {
                "fwd": lambda: gmm(x, w_kn, offs=offsets),
                "dgrad": lambda: gmm(g, w_kn.transpose(1, 2), offs=offsets),
                "wgrad": lambda: gmm(x.t(), g, offs=offsets),
            },
            "experts (E, d_out, d_in)": {
                "fwd": lambda: gmm(x, w_nk.transpose(1, 2), offs=offsets),
                "dgrad": lambda: gmm(g, w_nk, offs=offsets),
                "wgrad": lambda: gmm(g.t(), x, offs=offsets),
            },
            "dense (cuBLAS, nn.Linear weight)": {
                "fwd": lambda: F.linear(x, w_dense),
                "dgrad": lambda: g @ w_dense,
                "wgrad": lambda: g.t() @ x,
            },
        }
        # the two storage orders compute the same products (the weight gradient transposed)
        checks = {
            "fwd": rel_err(variants["experts (E, d_out, d_in)"]["fwd"](), variants["experts (E, d_in, d_out)"]["fwd"]()),
            "dgrad": rel_err(variants["experts (E, d_out, d_in)"]["dgrad"](),
                              variants["experts (E, d_in, d_out)"]["dgrad"]()),
            "wgrad": rel_err(variants["experts (E, d_out, d_in)"]["wgrad"]().transpose(1, 2),
                              variants["experts (E, d_in, d_out)"]["wgrad"]()),
        }
        flops = 2 * T * K * N
        for variant, gemms in variants.items():
            for gemm, fn in gemms.items():
                ms = bench_ms(fn)
                rows.append({"proj": proj, "gemm": gemm, "variant": variant, "ms": ms,
                             "tflops": flops / ms / 1e9, "max_rel_diff_between_orders": checks[gemm]})
        for variant in variants:
            total = sum(r["ms"] for r in rows if r["proj"] == proj and r["variant"] == variant)
            rows.append({"proj": proj, "gemm": "fwd+dgrad+wgrad", "variant": variant, "ms": total,
                         "tflops": 3 * flops / total / 1e9})
    payload = {"benchmark": "grouped_mm_layout", "tokens": T, "experts": E, "dtype": "bf16",
               "tokens_per_expert": torch.diff(offsets, prepend=offsets.new_zeros(1)).tolist(),
               "device": device_facts(), "rows": rows}
    path = write_result("gpu_grouped_mm_layout", payload, Path(args.out_dir) if args.out_dir else None)
    print_table(rows, ["proj", "gemm", "variant", "ms", "tflops", "max_rel_diff_between_orders"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
