"""The v1 Triton selective scan: chunked ``tl.associative_scan`` over (CHUNK, BLOCK_D, N) tiles.

Kept for comparison (``selective_scan_triton(..., impl="v1")``) and as a second, independently written
implementation; the default is v2 (rom.kernels.triton_scan_fwd / triton_scan_bwd; docs/gpu_kernels.md,
"Version 1", says why). Forward: per chunk the recurrence's (decay, input) pairs are combined by an associative
scan and the chunk-start state is stored; backward: per chunk, in reverse, the states are recomputed from the
checkpoint and the adjoint runs as a reverse associative scan. dB / dC are accumulated atomically.
"""

from __future__ import annotations

import torch

from rom.kernels.triton_scan_common import HAS_TRITON
from rom.kernels.triton_support import cdiv, tl, triton

# v1 block shapes per state size: (CHUNK, BLOCK_D, num_warps) for the forward and backward kernels;
# overridable per call (v1 is not the default; rom.kernels.scan_plan has the tuned v2 shapes).
FWD_CONFIGS: dict[int, tuple[int, int, int]] = {}
BWD_CONFIGS: dict[int, tuple[int, int, int]] = {}


def _default_config(n_state: int, backward: bool) -> tuple[int, int, int]:
    table = BWD_CONFIGS if backward else FWD_CONFIGS
    if n_state in table:
        return table[n_state]
    # keep the (CHUNK, BLOCK_D, N) tile near 2048 fp32 elements: 16 per thread at 4 warps
    chunk = 16
    block_d = max(1, min(64, 2048 // (chunk * n_state)))
    return chunk, block_d, 4


if HAS_TRITON:
    from rom.kernels.triton_scan_common import (  # the jit helpers (defined only with triton)
        channel_vector,
        program_channels,
    )

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) is applied first, then (a2, b2):  h -> a2 * (a1 * h + b1) + b2
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _softplus(x):
        # log(1 + exp(x)) with the overflow guard mamba-ssm uses (identity above 20)
        return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr,
        n_channels, seq_len, n_chunks,
        s_u_b, s_u_d, s_u_l,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        s_B_b, s_B_n, s_B_l,
        s_C_b, s_C_n, s_C_l,
        s_z_b, s_z_d, s_z_l,
        s_o_b, s_o_d, s_o_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_CKPT: tl.constexpr,
        N: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    ):
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_k = program_channels(n_channels, N, BLOCK_D, CHUNK)

        # exp(dt * A) computed as exp2(dt * A * log2 e)
        A2 = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n,
                     mask=mask_d[:, None], other=0.0).to(tl.float32) * 1.4426950408889634
        if HAS_D:
            Dv = channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)

        u_base = u_ptr + pid_b * s_u_b + offs_d[None, :] * s_u_d
        dt_base = dt_ptr + pid_b * s_dt_b + offs_d[None, :] * s_dt_d
        z_base = z_ptr + pid_b * s_z_b + offs_d[None, :] * s_z_d
        o_base = out_ptr + pid_b * s_o_b + offs_d[None, :] * s_o_d
        B_base = B_ptr + pid_b * s_B_b + offs_n[None, :] * s_B_n
        C_base = C_ptr + pid_b * s_C_b + offs_n[None, :] * s_C_n
        ck_base = ckpt_ptr + ((pid_b * n_channels + offs_d[:, None]) * n_chunks) * N + offs_n[None, :]

        h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
        for c in range(0, n_chunks):
            t = c * CHUNK + offs_k
            mask_t = t < seq_len
            m2 = mask_t[:, None] & mask_d[None, :]
            u = tl.load(u_base + t[:, None] * s_u_l, mask=m2, other=0.0).to(tl.float32)
            dt = tl.load(dt_base + t[:, None] * s_dt_l, mask=m2, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt = dt + bias[None, :]
            if SOFTPLUS:
                dt = _softplus(dt)
            Bm = tl.load(B_base + t[:, None] * s_B_l, mask=mask_t[:, None], other=0.0).to(tl.float32)
            Cm = tl.load(C_base + t[:, None] * s_C_l, mask=mask_t[:, None], other=0.0).to(tl.float32)
            if STORE_CKPT:
                tl.store(ck_base + c * N, h, mask=mask_d[:, None])

            a = tl.exp2(dt[:, :, None] * A2[None, :, :])                  # (CHUNK, BLOCK_D, N)
            bx = (dt * u)[:, :, None] * Bm[:, None, :]
            acum, hpart = tl.associative_scan((a, bx), axis=0, combine_fn=_combine)
            hs = acum * h[None, :, :] + hpart
            y = tl.sum(hs * Cm[:, None, :], axis=2)                        # (CHUNK, BLOCK_D)
            if HAS_D:
                y += u * Dv[None, :]
            if HAS_Z:
                z = tl.load(z_base + t[:, None] * s_z_l, mask=m2, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(o_base + t[:, None] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=m2)
            # state after the chunk's last step (only read when another chunk follows)
            h = tl.sum(tl.where((offs_k == CHUNK - 1)[:, None, None], hs, 0.0), axis=0)

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr,
        du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        n_channels, seq_len, n_chunks,
        s_u_b, s_u_d, s_u_l,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        s_B_b, s_B_n, s_B_l,
        s_C_b, s_C_n, s_C_l,
        s_z_b, s_z_d, s_z_l,
        s_do_b, s_do_d, s_do_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        N: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    ):
        # Output buffers du, ddt, dz are contiguous (batch, d, L); dA is (batch, d, N) fp32 partials,
        # dD / dbias (batch, d) fp32 partials; dB / dC contiguous fp32 (batch, N, L), accumulated atomically.
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_k = program_channels(n_channels, N, BLOCK_D, CHUNK)

        A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n,
                    mask=mask_d[:, None], other=0.0).to(tl.float32)
        A2 = A * 1.4426950408889634
        if HAS_D:
            Dv = channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)

        u_base = u_ptr + pid_b * s_u_b + offs_d[None, :] * s_u_d
        dt_base = dt_ptr + pid_b * s_dt_b + offs_d[None, :] * s_dt_d
        z_base = z_ptr + pid_b * s_z_b + offs_d[None, :] * s_z_d
        do_base = dout_ptr + pid_b * s_do_b + offs_d[None, :] * s_do_d
        B_base = B_ptr + pid_b * s_B_b + offs_n[None, :] * s_B_n
        C_base = C_ptr + pid_b * s_C_b + offs_n[None, :] * s_C_n
        ck_base = ckpt_ptr + ((pid_b * n_channels + offs_d[:, None]) * n_chunks) * N + offs_n[None, :]
        g_out = (pid_b * n_channels + offs_d[None, :]) * seq_len          # contiguous (b, d, L) grads
        gBC = pid_b * N * seq_len + offs_n[None, :] * seq_len              # contiguous (b, N, L) grads

        g_carry = tl.zeros((BLOCK_D, N), dtype=tl.float32)   # adjoint at the first step of the next chunk
        dA_acc = tl.zeros((BLOCK_D, N), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for i in range(0, n_chunks):
            c = n_chunks - 1 - i
            t = c * CHUNK + offs_k
            mask_t = t < seq_len
            m2 = mask_t[:, None] & mask_d[None, :]
            t1 = t + 1
            m2n = (t1 < seq_len)[:, None] & mask_d[None, :]

            u = tl.load(u_base + t[:, None] * s_u_l, mask=m2, other=0.0).to(tl.float32)
            dt = tl.load(dt_base + t[:, None] * s_dt_l, mask=m2, other=0.0).to(tl.float32)
            dtn = tl.load(dt_base + t1[:, None] * s_dt_l, mask=m2n, other=0.0).to(tl.float32)
            dout = tl.load(do_base + t[:, None] * s_do_l, mask=m2, other=0.0).to(tl.float32)
            Bm = tl.load(B_base + t[:, None] * s_B_l, mask=mask_t[:, None], other=0.0).to(tl.float32)
            Cm = tl.load(C_base + t[:, None] * s_C_l, mask=mask_t[:, None], other=0.0).to(tl.float32)
            h_in = tl.load(ck_base + c * N, mask=mask_d[:, None], other=0.0)
            if HAS_BIAS:
                dt = dt + bias[None, :]
                dtn = dtn + bias[None, :]
            if SOFTPLUS:
                dt_sig = tl.sigmoid(dt)
                dt = _softplus(dt)
                dtn = _softplus(dtn)

            # recompute the chunk's states from its checkpoint
            a = tl.exp2(dt[:, :, None] * A2[None, :, :])
            dtu = dt * u
            bx = dtu[:, :, None] * Bm[:, None, :]
            acum, hpart = tl.associative_scan((a, bx), axis=0, combine_fn=_combine)
            hs = acum * h_in[None, :, :] + hpart

            if HAS_Z:
                z = tl.load(z_base + t[:, None] * s_z_l, mask=m2, other=0.0).to(tl.float32)
                y = tl.sum(hs * Cm[:, None, :], axis=2)
                if HAS_D:
                    y += u * Dv[None, :]
                z_sig = tl.sigmoid(z)
                dy = dout * z * z_sig
                dz = dout * y * z_sig * (1.0 + z * (1.0 - z_sig))
                tl.store(dz_ptr + g_out + t[:, None], dz.to(dz_ptr.dtype.element_ty), mask=m2)
            else:
                dy = dout
            if HAS_D:
                dD_acc += tl.sum(dy * u, axis=0)

            # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}, a reverse scan seeded with the next chunk's g
            an = tl.exp2(dtn[:, :, None] * A2[None, :, :])
            an = tl.where(m2n[:, :, None], an, 0.0)
            cc = dy[:, :, None] * Cm[:, None, :]
            pprod, gpart = tl.associative_scan((an, cc), axis=0, combine_fn=_combine, reverse=True)
            g = gpart + pprod * g_carry[None, :, :]
            g_carry = tl.sum(tl.where((offs_k == 0)[:, None, None], g, 0.0), axis=0)

            gB = tl.sum(g * Bm[:, None, :], axis=2)                  # (CHUNK, BLOCK_D)
            gh = g * (hs - bx)                                         # g_t * a_t * h_{t-1}
            ddt = u * gB + tl.sum(gh * A[None, :, :], axis=2)
            du = dt * gB
            if HAS_D:
                du += dy * Dv[None, :]
            dA_acc += tl.sum(gh * dt[:, :, None], axis=0)
            if SOFTPLUS:
                ddt = ddt * dt_sig
            if HAS_BIAS:
                dbias_acc += tl.sum(tl.where(m2, ddt, 0.0), axis=0)
            tl.store(du_ptr + g_out + t[:, None], du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddt_ptr + g_out + t[:, None], ddt.to(ddt_ptr.dtype.element_ty), mask=m2)

            dBc = tl.sum(g * dtu[:, :, None], axis=1)                 # (CHUNK, N), summed over channels
            dCc = tl.sum(hs * dy[:, :, None], axis=1)
            tl.atomic_add(dB_ptr + gBC + t[:, None], dBc, mask=mask_t[:, None])
            tl.atomic_add(dC_ptr + gBC + t[:, None], dCc, mask=mask_t[:, None])

        dA_off = (pid_b * n_channels + offs_d[:, None]) * N + offs_n[None, :]
        tl.store(dA_ptr + dA_off, dA_acc, mask=mask_d[:, None])
        if HAS_D:
            tl.store(dD_ptr + pid_b * n_channels + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + pid_b * n_channels + offs_d, dbias_acc, mask=mask_d)


def scan_forward_v1(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, store_ckpt: bool,
                    config: tuple[int, int, int] | None = None):
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    chunk, block_d, num_warps = config or _default_config(n_state, backward=False)
    n_chunks = cdiv(seq_len, chunk)
    out = torch.empty((batch, d_inner, seq_len), device=u.device, dtype=u.dtype)
    if store_ckpt:
        ckpt = torch.empty((batch, d_inner, n_chunks, n_state), device=u.device, dtype=torch.float32)
    else:
        ckpt = out  # never written (STORE_CKPT=False)
    zz = z if z is not None else u
    grid = (batch, cdiv(d_inner, block_d))
    _scan_fwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else u, zz, delta_bias if delta_bias is not None else u, out, ckpt,
        d_inner, seq_len, n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        STORE_CKPT=store_ckpt, N=n_state, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
    )
    return out, (ckpt if store_ckpt else None), chunk


def scan_backward_v1(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, ckpt, chunk: int,
                     config: tuple[int, int, int] | None = None):
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    _, block_d, num_warps = config or _default_config(n_state, backward=True)
    n_chunks = cdiv(seq_len, chunk)
    dev = u.device
    du = torch.empty((batch, d_inner, seq_len), device=dev, dtype=u.dtype)
    ddelta = torch.empty((batch, d_inner, seq_len), device=dev, dtype=delta.dtype)
    dz = torch.empty((batch, d_inner, seq_len), device=dev, dtype=z.dtype) if z is not None else None
    dA_part = torch.empty((batch, d_inner, n_state), device=dev, dtype=torch.float32)
    dB32 = torch.zeros((batch, n_state, seq_len), device=dev, dtype=torch.float32)
    dC32 = torch.zeros((batch, n_state, seq_len), device=dev, dtype=torch.float32)
    dD_part = torch.empty((batch, d_inner), device=dev, dtype=torch.float32) if D is not None else None
    dbias_part = torch.empty((batch, d_inner), device=dev, dtype=torch.float32) if delta_bias is not None else None
    zz = z if z is not None else u
    grid = (batch, cdiv(d_inner, block_d))
    _scan_bwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else u, zz, delta_bias if delta_bias is not None else u, dout, ckpt,
        du, ddelta, dz if dz is not None else du, dA_part, dB32, dC32,
        dD_part if dD_part is not None else dA_part, dbias_part if dbias_part is not None else dA_part,
        d_inner, seq_len, n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *zz.stride(), *dout.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        N=n_state, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
    )
    dA = dA_part.sum(0).to(A.dtype)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB32.to(B.dtype), dC32.to(C.dtype), dD, dz, dbias


__all__ = ["BWD_CONFIGS", "FWD_CONFIGS", "HAS_TRITON", "scan_backward_v1", "scan_forward_v1"]
