"""A Triton grouped GEMM (measured, not used) against torch's grouped GEMM at the RoM layer's six shapes.

Why it exists: a grouped GEMM of our own could fold the RoM layer's layout passes, the expert weights' casts
and the weight gradients' fp32 accumulation into its prologue and epilogue, but only if it matched the speed
of CUTLASS's kernel behind ``torch._grouped_mm``. This prototype is the plain Triton formulation (pointer
loads, ``tl.dot``, one program per output tile, tiles over all experts' row blocks found through a table of
per-expert first tiles; the weight-gradient kernel loops over each expert's rows and adds into an fp32
gradient), swept over block shapes, plus a variant that reads fp32 weights and converts them in the kernel.
On the H200 (2026-12-02) it reached 0.74-0.87x CUTLASS's time for the forward and input-gradient shapes and
was slower for the weight gradients even counting the fp32 accumulation pass it saves; the fp32-weight
variant ran at 0.45x. So the expert path keeps ``torch._grouped_mm`` (docs/gpu_kernels.md).

T = 16384 token rows, 8 experts (random routing), bf16:
    in fwd (K 1024, N 4096), out fwd (K 2048, N 1024), in / out dgrad (the weight transposed), in / out wgrad.

    python benchmarks/gpu_grouped_gemm_triton.py [--out-dir DIR]   ->  triton_grouped_gemm_prototype.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, write_result  # noqa: E402

from rom.kernels.triton_cast import upcast_add_triton  # noqa: E402

@triton.jit
def _gmm_kernel(a_ptr, b_ptr, c_ptr, offs_ptr, tstart_ptr, K, N, s_am, s_ak, s_be, s_bk, s_bn, s_cm,
                E: tl.constexpr, E_P2: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    n_tn = tl.cdiv(N, BN)
    t = pid // n_tn
    pid_n = pid % n_tn
    e = tl.arange(0, E_P2)
    ts = tl.load(tstart_ptr + e, mask=e < E, other=2**30)
    g = tl.sum((ts <= t).to(tl.int32), 0) - 1
    total = tl.load(tstart_ptr + E)
    if t >= total:
        return
    row_end = tl.load(offs_ptr + g)
    row_beg = tl.load(offs_ptr + g - 1, mask=g > 0, other=0)
    m0 = row_beg + (t - tl.load(tstart_ptr + g)) * BM
    rm = m0 + tl.arange(0, BM)
    mask_m = rm < row_end
    rn = pid_n * BN + tl.arange(0, BN)
    mask_n = rn < N
    rk = tl.arange(0, BK)
    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * s_am + rk[None, :] * s_ak
    b_ptrs = b_ptr + g.to(tl.int64) * s_be + rk[:, None] * s_bk + rn[None, :] * s_bn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptrs, mask=mask_m[:, None], other=0.0)
        b = tl.load(b_ptrs, mask=mask_n[None, :], other=0.0)
        acc = tl.dot(a, b.to(a.dtype), acc)
        a_ptrs += BK * s_ak
        b_ptrs += BK * s_bk
    c_ptrs = c_ptr + rm[:, None].to(tl.int64) * s_cm + rn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _gmm_wgrad_kernel(x_ptr, g_ptr, w_ptr, offs_ptr, M, N, s_xm, s_gm, s_we, s_wm,
                      ACCUM: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    e = tl.program_id(1)
    n_tn = tl.cdiv(N, BN)
    pid_m = pid // n_tn
    pid_n = pid % n_tn
    row_end = tl.load(offs_ptr + e)
    row_beg = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for r in range(row_beg, row_end, BK):
        rk = r + tl.arange(0, BK)
        mk = rk < row_end
        a = tl.load(x_ptr + rk[None, :].to(tl.int64) * s_xm + rm[:, None], mask=mk[None, :], other=0.0)
        b = tl.load(g_ptr + rk[:, None].to(tl.int64) * s_gm + rn[None, :], mask=mk[:, None], other=0.0)
        acc = tl.dot(a, b, acc)
    w_ptrs = w_ptr + e.to(tl.int64) * s_we + rm[:, None] * s_wm + rn[None, :]
    if ACCUM:
        acc += tl.load(w_ptrs)
    tl.store(w_ptrs, acc.to(w_ptr.dtype.element_ty))


def tile_starts(offsets, BM):
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1))
    tiles = (counts + BM - 1) // BM
    return torch.cat([tiles.new_zeros(1), torch.cumsum(tiles, 0)]).to(torch.int32)


def gmm(a, b, offsets, cfg, out_dtype=torch.bfloat16):
    BM, BN, BK, warps, stages = cfg
    T, K = a.shape
    E, _, N = b.shape
    ts = tile_starts(offsets, BM)
    c = torch.empty(T, N, device=a.device, dtype=out_dtype)
    grid = ((triton.cdiv(T, BM) + E) * triton.cdiv(N, BN),)
    _gmm_kernel[grid](a, b, c, offsets, ts, K, N, a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2),
                      c.stride(0), E=E, E_P2=triton.next_power_of_2(E), BM=BM, BN=BN, BK=BK, num_warps=warps,
                      num_stages=stages)
    return c


def gmm_wgrad(x, g, offsets, E, out, cfg, accum):
    BM, BN, BK, warps, stages = cfg
    M, N = x.shape[1], g.shape[1]
    grid = (triton.cdiv(M, BM) * triton.cdiv(N, BN), E)
    _gmm_wgrad_kernel[grid](x, g, out, offsets, M, N, x.stride(0), g.stride(0), out.stride(0), out.stride(1),
                            ACCUM=accum, BM=BM, BN=BN, BK=BK, num_warps=warps, num_stages=stages)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    T, E = 16384, 8
    ids = torch.randint(0, E, (T,), device=dev)
    counts = torch.bincount(ids, minlength=E)
    offsets = torch.cumsum(counts, 0).to(torch.int32)
    print("counts", counts.tolist())
    rows = []
    fwd_cfgs = [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 4, 4), (128, 128, 64, 8, 4),
                (128, 128, 64, 8, 5), (64, 256, 64, 4, 4), (256, 128, 64, 8, 3)]
    fp32b_cfgs = [(128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (128, 256, 32, 8, 3), (128, 64, 64, 4, 4)]
    wg_cfgs = [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 64, 4, 4), (256, 128, 64, 8, 3),
               (128, 256, 64, 8, 4)]
    for name, K, N in [("in fwd", 1024, 4096), ("out fwd", 2048, 1024), ("in dgrad", 4096, 1024),
                       ("out dgrad", 1024, 2048)]:
        a = torch.randn(T, K, device=dev, dtype=torch.bfloat16)
        w32 = torch.randn(E, K, N, device=dev) / K**0.5
        if "dgrad" in name:  # B = W^T of a (E, N, K) weight: strided
            w32 = (torch.randn(E, N, K, device=dev) / K**0.5).transpose(1, 2)
        wb = w32.to(torch.bfloat16)
        flops = 2 * T * K * N
        ref = torch._grouped_mm(a, wb, offs=offsets)
        t_torch = do_bench(lambda: torch._grouped_mm(a, wb, offs=offsets), warmup=25, rep=200, return_mode="median")
        t_cast = do_bench(lambda: w32.to(torch.bfloat16), warmup=25, rep=200, return_mode="median")
        rows.append(dict(shape=name, impl="torch._grouped_mm", ms=t_torch, tflops=flops / t_torch / 1e9))
        rows.append(dict(shape=name, impl="fp32->bf16 weight cast", ms=t_cast))
        for label, weight, cfgs in (("bf16", wb, fwd_cfgs), ("fp32-B", w32, fp32b_cfgs)):
            for cfg in cfgs:
                impl = f"triton {label} {cfg}"
                try:
                    out = gmm(a, weight, offsets, cfg)
                    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                    t = do_bench(lambda: gmm(a, weight, offsets, cfg), warmup=25, rep=200, return_mode="median")
                    rows.append(dict(shape=name, impl=impl, ms=t, tflops=flops / t / 1e9, err=err))
                except Exception as ex:
                    rows.append(dict(shape=name, impl=impl, note=str(ex)[:120]))
        print(*[r for r in rows if r["shape"] == name], sep="\n", flush=True)
    for name, M, N in [("in wgrad", 1024, 4096), ("out wgrad", 2048, 1024)]:
        x = torch.randn(T, M, device=dev, dtype=torch.bfloat16)
        g = torch.randn(T, N, device=dev, dtype=torch.bfloat16)
        flops = 2 * T * M * N
        grad32 = torch.randn(E, M, N, device=dev)
        ref = torch._grouped_mm(x.t(), g, offs=offsets)
        t_torch = do_bench(lambda: torch._grouped_mm(x.t(), g, offs=offsets), warmup=25, rep=200, return_mode="median")
        t_acc = do_bench(lambda: upcast_add_triton(grad32, ref), warmup=25, rep=200, return_mode="median")
        rows.append(dict(shape=name, impl="torch._grouped_mm (bf16 out)", ms=t_torch, tflops=flops / t_torch / 1e9))
        rows.append(dict(shape=name, impl="upcast_add into fp32 grad", ms=t_acc))
        for cfg in wg_cfgs:
            try:
                out = torch.zeros(E, M, N, device=dev)
                gmm_wgrad(x, g, offsets, E, out, cfg, False)
                err = ((out - ref.float()).norm() / ref.float().norm()).item()
                t = do_bench(lambda: gmm_wgrad(x, g, offsets, E, grad32, cfg, True), warmup=25, rep=200,
                             return_mode="median")
                rows.append(dict(shape=name, impl=f"triton wgrad fp32 accumulate {cfg}", ms=t, tflops=flops / t / 1e9,
                                 err=err))
            except Exception as ex:
                rows.append(dict(shape=name, impl=f"triton wgrad {cfg}", note=str(ex)[:120]))
        print(*[r for r in rows if r["shape"] == name], sep="\n", flush=True)
    path = write_result("triton_grouped_gemm_prototype", {"benchmark": "triton_grouped_gemm_prototype",
                        "device": device_facts(), "tokens": T, "experts": E, "counts": counts.tolist(),
                        "results": rows}, args.out_dir)
    print(f"wrote {path}")
    print("\n%-10s %-45s %8s %7s %8s" % ("shape", "impl", "ms", "TF/s", "err"))
    for r in rows:
        tflops = "%.0f" % r["tflops"] if "tflops" in r else ""
        err = "%.1e" % r["err"] if "err" in r else r.get("note", "")[:60]
        print("%-10s %-45s %8.4f %7s %8s" % (r["shape"], r["impl"][:45], r.get("ms", float("nan")), tflops, err))


if __name__ == "__main__":
    main()
