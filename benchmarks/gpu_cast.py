"""bf16 -> fp32 cast of the RoM expert weight gradients: torch's ``Tensor.to`` vs our Triton kernel, one run.

Shapes: the in (conv + gate) and out expert banks of the layer benchmark (8 experts, d_model 1024, expand 2).
Prints ms, achieved GB/s (bytes read + written) and the ratio; writes benchmarks/results/gpu_cast.json.

    python benchmarks/gpu_cast.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, device_facts, print_table, write_result  # noqa: E402

from rom.kernels.triton_cast import upcast_triton  # noqa: E402

SHAPES = {"in experts 8x1024x4096": (8, 1024, 4096), "out experts 8x2048x1024": (8, 2048, 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    facts = device_facts()
    rows = []
    for name, shape in SHAPES.items():
        src = torch.randn(shape, device="cuda").to(torch.bfloat16)
        assert torch.equal(upcast_triton(src, torch.float32), src.float())
        moved = src.numel() * (2 + 4)
        t_torch = bench_ms(lambda: src.to(torch.float32))
        t_ours = bench_ms(lambda: upcast_triton(src, torch.float32))
        rows.append({"shape": name, "torch_ms": t_torch, "triton_ms": t_ours,
                     "torch_GBps": moved / t_torch / 1e6, "triton_GBps": moved / t_ours / 1e6,
                     "speedup": t_torch / t_ours})
    path = write_result("gpu_cast", {"benchmark": "upcast", "device": facts, "results": rows}, args.out_dir)
    print(f"wrote {path}; {facts['gpu']} torch {facts['torch']} triton {facts['triton']}")
    print_table(rows, ["shape", "torch_ms", "triton_ms", "torch_GBps", "triton_GBps", "speedup"])


if __name__ == "__main__":
    main()
