"""Nsight Compute on the Triton scan at the anchor shape: where its cycles go (warp stall reasons, issue rate).

Launches the forward and backward kernels once to compile them, then once more for ncu to profile:

    ncu --clock-control none --kernel-name regex:_scan_(fwd|bwd)_kernel_v2 --launch-skip 2 --launch-count 2 \\
        --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \\
        --section InstructionStats python3 benchmarks/ncu_scan.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rom.kernels.triton_scan import selective_scan_triton  # noqa: E402


def main() -> None:
    b, d, L, n = 8, 2048, 2048, 16
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, d, L, device="cuda", generator=g).bfloat16().requires_grad_(True)
    delta = (torch.randn(b, d, L, device="cuda", generator=g) * 0.5).bfloat16().requires_grad_(True)
    A = -torch.exp(torch.randn(d, n, device="cuda", generator=g) * 0.5).requires_grad_(True)
    B = torch.randn(b, n, L, device="cuda", generator=g).bfloat16().requires_grad_(True)
    C = torch.randn(b, n, L, device="cuda", generator=g).bfloat16().requires_grad_(True)
    D = torch.randn(d, device="cuda", generator=g).requires_grad_(True)
    z = torch.randn(b, d, L, device="cuda", generator=g).bfloat16().requires_grad_(True)
    bias = (torch.rand(d, device="cuda", generator=g) * -3.0 - 1.0).requires_grad_(True)
    for _ in range(2):  # the first pass compiles; ncu skips it (--launch-skip 2)
        y = selective_scan_triton(u, delta, A, B, C, D, z, bias, delta_softplus=True)
        y.backward(torch.ones_like(y))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
