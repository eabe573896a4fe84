"""Causal depthwise conv + SiLU on one GPU: our Triton kernel vs cuDNN ``F.conv1d`` (+ SiLU), bf16.

Decides which one ``backend='auto'`` should use on CUDA. Prints a table, writes benchmarks/results/gpu_conv.json.

    python benchmarks/gpu_conv.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, device_facts, measure_copy_bandwidth, print_table, write_result  # noqa: E402

from rom.kernels.triton_conv import causal_conv1d_triton  # noqa: E402


def cudnn_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = w.shape[1]
    return F.silu(F.conv1d(F.pad(x, (width - 1, 0)), w.unsqueeze(1), b, groups=x.shape[1]))


def cudnn_conv_padded(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = w.shape[1]
    return F.silu(F.conv1d(x, w.unsqueeze(1), b, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    facts = device_facts()
    bw = measure_copy_bandwidth()
    rows = []
    for batch, d, seq_len, layout in [(8, 2048, 2048, "contiguous"), (8, 2048, 2048, "transposed"),
                                      (8, 1536, 2048, "transposed"), (16, 4096, 1024, "transposed")]:
        xs = []
        for seed in range(2):
            torch.manual_seed(seed)
            if layout == "transposed":  # as the Mamba layer passes it: a (b, L, 2d) projection's slice, transposed
                x = torch.randn(batch, seq_len, 2 * d, device="cuda", dtype=torch.bfloat16)[..., :d].transpose(1, 2)
            else:
                x = torch.randn(batch, d, seq_len, device="cuda", dtype=torch.bfloat16)
            xs.append(x.detach().requires_grad_(True))
        w = torch.randn(d, 4, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(batch, d, seq_len, device="cuda", dtype=torch.bfloat16)
        n_bytes = 2 * batch * d * seq_len * 2  # read x, write y (bf16)
        for name, fn in [("triton", lambda x: causal_conv1d_triton(x, w, b, "silu")),
                         ("cudnn conv1d(pad)+silu", lambda x: cudnn_conv(x, w, b)),
                         ("cudnn conv1d(padding=)+slice+silu", lambda x: cudnn_conv_padded(x, w, b))]:
            i = [0]

            def fwd():
                i[0] += 1
                with torch.no_grad():
                    fn(xs[i[0] % 2])

            def fwd_bwd():
                i[0] += 1
                x = xs[i[0] % 2]
                torch.autograd.grad(fn(x), [x, w, b], dy)

            ref = cudnn_conv(xs[0].detach().float(), w.detach().float(), b.detach().float())
            with torch.no_grad():
                err = ((fn(xs[0]).float() - ref).norm() / ref.norm()).item()
            t_f, t_fb = bench_ms(fwd), bench_ms(fwd_bwd)
            rows.append({"shape": f"{batch}x{d}x{seq_len}", "layout": layout, "impl": name, "fwd_ms": t_f,
                         "fwd_bwd_ms": t_fb, "fwd_GBps": n_bytes / t_f / 1e6, "rel_err_vs_fp32": err})
            print(rows[-1], flush=True)
    floors = {"copy_bandwidth_TBps": bw / 1e12}
    payload = {"benchmark": "causal_conv1d_silu", "device": facts, "floors": floors, "results": rows,
               "note": "width 4, bf16 activations and weights, bias; fwd_GBps counts x read + y written"}
    path = write_result("gpu_conv", payload, args.out_dir)
    print(f"\nwrote {path}; copy bandwidth {bw/1e12:.2f} TB/s; {facts['gpu']} torch {facts['torch']}")
    print_table(rows, ["shape", "layout", "impl", "fwd_ms", "fwd_bwd_ms", "fwd_GBps", "rel_err_vs_fp32"])


if __name__ == "__main__":
    main()
