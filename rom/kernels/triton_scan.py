"""Mamba-1 selective scan in Triton: forward and backward kernels behind one autograd.Function.

Semantics are those of ``rom.kernels.scan_reference`` (docs/interfaces.md, "Kernels"):

    delta' = softplus(delta + delta_bias)           (bias / softplus optional)
    h_t    = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t       (state (d_inner, N), fp32)
    y_t    = C_t . h_t + D * u_t ;   y_t *= silu(z_t) if z is given

Two implementations (docs/gpu_kernels.md has the design, the measurements and why):

- ``v2`` (default): one program per (batch, block of channels); channels on the lanes, the N states of a
  channel in registers (of one lane forward, of four in the backward at N=16, where the chunk's 8 states must
  fit too); a sequential loop over time in chunks of 8 steps, whose u / delta / z tiles are loaded
  (one 16-byte vector per lane) while the previous chunk computes. The forward stores the fp32 state at every
  chunk start; the backward walks the chunks in reverse, recomputes the chunk's 8 states from the checkpoint
  into registers and runs the adjoint recurrence backwards (q_t = exp(delta'_t A) g_t, g_t = C_t dy_t + q_{t+1}).
  dA / dD / d delta_bias are reduced over time in registers, dB / dC over the program's channels in registers;
  two small kernels then sum the partials over batch and segments, or over channel blocks, and cast them to the
  inputs' dtypes (deterministic, no atomics). When a layer has too few
  channels to fill the GPU, the sequence is split into segments scanned in parallel (``plan_segments``): each
  segment starts from a carry composed of per-sub-segment summaries (the end state and sum of delta' forward,
  the adjoint handed left backward) that two small kernels compute first.
- ``v1``: chunked ``tl.associative_scan`` over (CHUNK, BLOCK_D, N) tiles; kept for comparison and as a second,
  independently written implementation (slower: see docs/gpu_kernels.md).

Triton is optional: importing this module without triton works, and the kernels raise a clear ImportError.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from rom.kernels.triton_support import HAS_TRITON, cdiv, check_launchable, interpreting, tl, triton


# v1 block shapes per state size: (CHUNK, BLOCK_D, num_warps) for the forward and backward kernels;
# overridable per call (v1 is not the default; see V2_* below for the tuned v2 shapes).
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

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) is applied first, then (a2, b2):  h -> a2 * (a1 * h + b1) + b2
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _softplus(x):
        # log(1 + exp(x)) with the overflow guard mamba-ssm uses (identity above 20)
        return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _program_channels(n_channels, N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
        # grid (batch, channel blocks, ...): this program's batch row, channels and their mask, and the state and
        # time offsets (T: the chunk length)
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < n_channels
        return pid_b, pid_d, offs_d, mask_d, tl.arange(0, N), tl.arange(0, T)

    @triton.jit
    def _channel_vector(ptr, offs_d, mask_d):
        # a per-channel fp32 vector (D, delta_bias) for this program's channels
        return tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

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
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_k = _program_channels(n_channels, N, BLOCK_D, CHUNK)

        # exp(dt * A) computed as exp2(dt * A * log2 e)
        A2 = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n,
                     mask=mask_d[:, None], other=0.0).to(tl.float32) * 1.4426950408889634
        if HAS_D:
            Dv = _channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)

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
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_k = _program_channels(n_channels, N, BLOCK_D, CHUNK)

        A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n,
                    mask=mask_d[:, None], other=0.0).to(tl.float32)
        A2 = A * 1.4426950408889634
        if HAS_D:
            Dv = _channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)

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

    # ------------------------------------------------------------------------------------------------
    # v2: one thread (or a few) per channel, the d_state axis inside the thread, a plain sequential loop
    # over time. Tiles are (N, BLOCK_D): Triton's default layout puts BLOCK_D on the lanes and N in
    # registers, so the per-step work is ~5 instructions per state element and sums over N stay in-thread.
    # ------------------------------------------------------------------------------------------------

    @triton.jit
    def _ex2(x, FAST: tl.constexpr):
        if FAST:  # MUFU.EX2 without the denormal fix-up ptxas adds around the non-ftz form
            r = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = tl.exp2(x)
        return r

    @triton.jit
    def _lg2(x, FAST: tl.constexpr):
        if FAST:
            r = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = tl.log2(x)
        return r

    @triton.jit
    def _rcp(x, FAST: tl.constexpr):
        if FAST:
            r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = 1.0 / x
        return r

    @triton.jit
    def _sigmoid_fast(x, FAST: tl.constexpr):
        return _rcp(1.0 + _ex2(-x * 1.4426950408889634, FAST), FAST)

    @triton.jit
    def _softplus_fast(x, FAST: tl.constexpr):
        # log(1 + e^x): identity above 20; a 3-term series of log1p below -4 (where 1 + e^x loses digits)
        e = _ex2(x * 1.4426950408889634, FAST)
        series = e * (1.0 - e * (0.5 - e * 0.3333333333333333))
        logp = _lg2(1.0 + e, FAST) * 0.6931471805599453
        return tl.where(x > 20.0, x, tl.where(x < -4.0, series, logp))

    @triton.jit
    def _pick(tile, sel):
        # column i of a (T, BLOCK_D) tile, or row i of a (T, N) tile: T sits in registers, so this folds
        return tl.sum(tl.where(sel, tile, 0.0), axis=0)

    @triton.jit
    def _load_chunk(ptr_rows, s_l, tt, m_tile):
        # (T, BLOCK_D) tile of one chunk: each lane reads its channel's T consecutive steps (one sector)
        return tl.load(ptr_rows[None, :] + tt[:, None] * s_l, mask=m_tile, other=0.0).to(tl.float32)

    @triton.jit
    def _step_row(base, t, offs_n, seq_len, N: tl.constexpr):
        # one step's N values of a (L, N) fp32 array (B_t or C_t); zeros outside [0, seq_len)
        return tl.load(base + t * N + offs_n, mask=(offs_n < N) & (t >= 0) & (t < seq_len), other=0.0)

    @triton.jit
    def _v2_program(A_ptr, s_A_n, s_A_d, n_channels, N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
        # the v2 kernels' common start: this program's channels, A^T's (N, BLOCK_D) tile in fp32, and A2 = A log2 e
        # (exp(dt A) is computed as exp2(dt A2))
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t = _program_channels(n_channels, N, BLOCK_D, T)
        A = tl.load(A_ptr + offs_n[:, None] * s_A_n + offs_d[None, :] * s_A_d,
                    mask=mask_d[None, :], other=0.0).to(tl.float32)
        return pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A * 1.4426950408889634

    @triton.jit
    def _chunk_range(s, span, n_chunks):
        # chunks [s * span, min((s + 1) * span, n_chunks)) of segment or sub-segment s
        c_lo = s * span
        return c_lo, tl.minimum(c_lo + span, n_chunks)

    @triton.jit
    def _compose_segments(sum_h_ptr, sum_dt_ptr, pid_b, n_sub, k_first, n_steps, k_step, n_channels,
                          offs_n, offs_d, mask_d, A2, FAST: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr):
        # Carry into a segment from the summaries (x_k, sum_dt_k) of sub-segments k_first, k_first + k_step, ...
        # (n_steps of them, in the order the recurrence meets them): x = exp(A * sum_dt_k) * x + x_k.
        # The forward composes end states left to right, the backward the adjoints right to left.
        x = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        for j in range(0, n_steps):
            row = pid_b * n_sub + k_first + j * k_step
            sdt = tl.load(sum_dt_ptr + row * n_channels + offs_d, mask=mask_d, other=0.0)
            xk = tl.load(sum_h_ptr + (row * N + offs_n[:, None]) * n_channels + offs_d[None, :],
                         mask=mask_d[None, :], other=0.0)
            x = _ex2(sdt[None, :] * A2, FAST) * x + xk
        return x

    @triton.jit
    def _scan_fwd_summary_kernel_v2(
        u_ptr, dt_ptr, A_ptr, Bt_ptr, bias_ptr, sum_h_ptr, sum_dt_ptr,
        n_channels, seq_len, n_chunks, span, n_sub,
        s_u_b, s_u_d, s_u_l,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr,
        N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
    ):
        # Sub-segment k = program_id(2) (chunks [k * span, (k + 1) * span)), scanned from a zero state without
        # outputs: its end state and its sum of delta' (steps past seq_len count as delta' = 0, the identity).
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = _v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        k = tl.program_id(2)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)
        u_rows = u_ptr + pid_b * s_u_b + offs_d * s_u_d
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        Bt_base = Bt_ptr + pid_b * seq_len * N
        c_lo, c_hi = _chunk_range(k, span, n_chunks)
        h = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        sdt = tl.zeros((BLOCK_D,), dtype=tl.float32)
        tt_n = c_lo * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        U_next = _load_chunk(u_rows, s_u_l, tt_n, m_n)
        DT_next = _load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        Bq0 = _step_row(Bt_base, c_lo * T, offs_n, seq_len, N)   # B_t two steps ahead, as in the forward
        Bq1 = _step_row(Bt_base, c_lo * T + 1, offs_n, seq_len, N)
        for c in range(c_lo, c_hi):
            t0 = c * T
            m_tile = (t0 + offs_t < seq_len)[:, None] & mask_d[None, :]
            U = U_next
            DT = DT_next
            m_n = (t0 + T + offs_t < seq_len)[:, None] & mask_d[None, :]
            U_next = _load_chunk(u_rows, s_u_l, t0 + T + offs_t, m_n)
            DT_next = _load_chunk(dt_rows, s_dt_l, t0 + T + offs_t, m_n)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = _softplus_fast(DT, FAST)
            DT = tl.where(m_tile, DT, 0.0)
            sdt += tl.sum(DT, axis=0)
            DTU = DT * U
            for i in tl.static_range(T):
                sel = offs_t[:, None] == i
                Bv = Bq0
                Bq0 = Bq1
                Bq1 = _step_row(Bt_base, t0 + i + 2, offs_n, seq_len, N)
                h = _ex2(_pick(DT, sel)[None, :] * A2, FAST) * h + Bv[:, None] * _pick(DTU, sel)[None, :]
        row = pid_b * n_sub + k
        tl.store(sum_h_ptr + (row * N + offs_n[:, None]) * n_channels + offs_d[None, :], h, mask=mask_d[None, :])
        tl.store(sum_dt_ptr + row * n_channels + offs_d, sdt, mask=mask_d)

    @triton.jit
    def _scan_fwd_kernel_v2(
        u_ptr, dt_ptr, A_ptr, Bt_ptr, Ct_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr, sum_h_ptr, sum_dt_ptr,
        n_channels, seq_len, n_chunks, span, n_sub, sub_per_prog,
        s_u_b, s_u_d, s_u_l,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        s_z_b, s_z_d, s_z_l,
        s_o_b, s_o_d, s_o_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_CKPT: tl.constexpr, FAST: tl.constexpr,
        N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr, PREFETCH: tl.constexpr,
    ):
        # Bt, Ct: fp32 contiguous (batch, L, N). ckpt: fp32 (batch, n_chunks, N, d_inner), state before chunk c.
        # Grid (batch, channel blocks, segments): program s scans chunks [s * span, (s + 1) * span), starting
        # from the state composed from the segment summaries of sub-segments 0 .. s * sub_per_prog - 1
        # (sum_h: fp32 (batch, n_sub, N, d), the sub-segment's end state from zero; sum_dt: fp32 (batch, n_sub, d),
        # its sum of delta', so its decay is exp(A * sum_dt)); with one segment that loop is empty.
        # PREFETCH (1 or 2): how many steps ahead B_t and C_t are loaded. Each SM's first read of a row is an
        # L2 hit (~250 cycles), while one step of the recurrence is ~130 cycles of exponentials for the one
        # warp a scheduler has: loaded when needed, that latency was 56% of the forward's cycles (ncu).
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = _v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        pid_s = tl.program_id(2)
        if HAS_D:
            Dv = _channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)
        u_rows = u_ptr + pid_b * s_u_b + offs_d * s_u_d
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        z_rows = z_ptr + pid_b * s_z_b + offs_d * s_z_d
        o_rows = out_ptr + pid_b * s_o_b + offs_d * s_o_d
        Bt_base = Bt_ptr + pid_b * seq_len * N
        Ct_base = Ct_ptr + pid_b * seq_len * N
        ck_base = ckpt_ptr + pid_b * n_chunks * N * n_channels + offs_n[:, None] * n_channels + offs_d[None, :]

        h = _compose_segments(sum_h_ptr, sum_dt_ptr, pid_b, n_sub, 0, pid_s * sub_per_prog, 1, n_channels,
                              offs_n, offs_d, mask_d, A2, FAST, N, BLOCK_D)
        c_lo, c_hi = _chunk_range(pid_s, span, n_chunks)
        # software pipelining by hand: the next chunk's tiles are in flight while this chunk computes
        tt_first = c_lo * T + offs_t
        m_next = (tt_first < seq_len)[:, None] & mask_d[None, :]
        U_next = _load_chunk(u_rows, s_u_l, tt_first, m_next)
        DT_next = _load_chunk(dt_rows, s_dt_l, tt_first, m_next)
        if HAS_Z:
            Z_next = _load_chunk(z_rows, s_z_l, tt_first, m_next)
        t_first = c_lo * T
        m0 = (offs_n < N) & (t_first < seq_len)
        Bq0 = tl.load(Bt_base + t_first * N + offs_n, mask=m0, other=0.0)
        Cq0 = tl.load(Ct_base + t_first * N + offs_n, mask=m0, other=0.0)
        if PREFETCH == 2:
            m1 = (offs_n < N) & (t_first + 1 < seq_len)
            Bq1 = tl.load(Bt_base + (t_first + 1) * N + offs_n, mask=m1, other=0.0)
            Cq1 = tl.load(Ct_base + (t_first + 1) * N + offs_n, mask=m1, other=0.0)
        for c in range(c_lo, c_hi):
            t0 = c * T
            tt = t0 + offs_t
            m_tile = (tt < seq_len)[:, None] & mask_d[None, :]
            if STORE_CKPT:
                tl.store(ck_base + c * N * n_channels, h, mask=mask_d[None, :])
            U = U_next
            DT = DT_next
            if HAS_Z:
                Z = Z_next
            m_next = (tt + T < seq_len)[:, None] & mask_d[None, :]
            U_next = _load_chunk(u_rows, s_u_l, tt + T, m_next)
            DT_next = _load_chunk(dt_rows, s_dt_l, tt + T, m_next)
            if HAS_Z:
                Z_next = _load_chunk(z_rows, s_z_l, tt + T, m_next)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = _softplus_fast(DT, FAST)
            DTU = DT * U
            ybuf = tl.zeros((T, BLOCK_D), dtype=tl.float32)
            for i in tl.static_range(T):
                t = t0 + i
                sel = offs_t[:, None] == i
                Bv = Bq0
                Cv = Cq0
                if PREFETCH == 2:
                    Bq0 = Bq1
                    Cq0 = Cq1
                    mq = (offs_n < N) & (t + 2 < seq_len)
                    Bq1 = tl.load(Bt_base + (t + 2) * N + offs_n, mask=mq, other=0.0)
                    Cq1 = tl.load(Ct_base + (t + 2) * N + offs_n, mask=mq, other=0.0)
                else:
                    mq = (offs_n < N) & (t + 1 < seq_len)
                    Bq0 = tl.load(Bt_base + (t + 1) * N + offs_n, mask=mq, other=0.0)
                    Cq0 = tl.load(Ct_base + (t + 1) * N + offs_n, mask=mq, other=0.0)
                dt = _pick(DT, sel)
                dtu = _pick(DTU, sel)
                h = _ex2(dt[None, :] * A2, FAST) * h + Bv[:, None] * dtu[None, :]
                ybuf = tl.where(sel, tl.sum(h * Cv[:, None], axis=0)[None, :], ybuf)
            if HAS_D:
                ybuf += U * Dv[None, :]
            if HAS_Z:
                ybuf = ybuf * Z * _sigmoid_fast(Z, FAST)
            tl.store(o_rows[None, :] + tt[:, None] * s_o_l, ybuf.to(out_ptr.dtype.element_ty), mask=m_tile)

    @triton.jit
    def _recompute_step(h, i: tl.constexpr, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len,
                        FAST: tl.constexpr, N: tl.constexpr):
        t = t0 + i
        sel = offs_t[:, None] == i
        Bv = tl.load(Bt_base + t * N + offs_n, mask=(offs_n < N) & (t < seq_len), other=0.0)
        return _ex2(_pick(DT, sel)[None, :] * A2, FAST) * h + Bv[:, None] * _pick(DTU, sel)[None, :]

    @triton.jit
    def _bwd_step(q, h_prev, h_cur, i: tl.constexpr, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                  db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len,
                  HAS_Z: tl.constexpr, FAST: tl.constexpr, N: tl.constexpr):
        # q carries a_{t+1} * g_{t+1}; returns a_t * g_t. g_t = C_t dy_t + q is the adjoint of h_t.
        t = t0 + i
        sel = offs_t[:, None] == i
        mn = (offs_n < N) & (t < seq_len)
        Bv = tl.load(Bt_base + t * N + offs_n, mask=mn, other=0.0)
        Cv = tl.load(Ct_base + t * N + offs_n, mask=mn, other=0.0)
        dt = _pick(DT, sel)
        dy = _pick(DY, sel)
        if HAS_Z:  # y_t before gating, for dz (finished on the tile after the chunk)
            y_buf = tl.where(sel, tl.sum(h_cur * Cv[:, None], axis=0)[None, :], y_buf)
        g = dy[None, :] * Cv[:, None] + q
        # the decay again, rounded differently from the recompute's exp2(dt * A2) on purpose: with the identical
        # expression the compiler keeps the chunk's 8 decay tiles alive from the recompute to here, which spilled
        # (one more exponential per state is cheaper: 2.78 -> 2.56 ms at the anchor shape)
        q = _ex2((dt[None, :] * A) * 1.4426950408889634, FAST) * g
        gh = q * h_prev                                     # g_t * a_t * h_{t-1}
        gb_buf = tl.where(sel, tl.sum(g * Bv[:, None], axis=0)[None, :], gb_buf)
        ga_buf = tl.where(sel, tl.sum(gh * A, axis=0)[None, :], ga_buf)
        dA_acc += gh * dt[None, :]
        # dB_t, dC_t (sums over the program's channels) go to (N, T) tiles stored once per chunk: a store per
        # step costs a shared-memory round trip and a barrier to de-replicate the reduced vector
        sel_n = offs_t[None, :] == i
        db_buf = tl.where(sel_n, tl.sum(g * _pick(DTU, sel)[None, :], axis=1)[:, None], db_buf)
        dc_buf = tl.where(sel_n, tl.sum(h_cur * dy[None, :], axis=1)[:, None], dc_buf)
        return q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf

    @triton.jit
    def _scan_bwd_kernel_v2(
        u_ptr, dt_ptr, A_ptr, Bt_ptr, Ct_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr,
        du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, sum_q_ptr, sum_dt_ptr,
        n_channels, seq_len, n_chunks, span, n_sub, sub_per_prog,
        s_u_b, s_u_d, s_u_l,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        s_z_b, s_z_d, s_z_l,
        s_do_b, s_do_d, s_do_l,
        s_dz_b,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        FAST: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
    ):
        # du, ddt: contiguous (batch, d, L); dz: (batch, d, L) with batch stride s_dz_b, e.g. a half of a wider
        # gradient buffer (rom.kernels.inner_path); its offsets are du's plus a per-program scalar (a pointer
        # vector of its own cost the backward 3.6%). dA: fp32 (batch, n_seg, N, d) partials (summed outside).
        # dB, dC: fp32 (batch, n_dblocks, L, N) partials (summed over channel blocks outside: no atomics).
        # dD, dbias: fp32 (batch, n_seg, d) partials. T must be 8: the chunk's states are 8 named register tiles.
        # Grid (batch, channel blocks, segments): program s walks chunks [s * span, (s + 1) * span) backwards,
        # with the adjoint entering from the right composed from the summaries (sum_q, sum_dt) of the
        # sub-segments after it, right to left (see _scan_bwd_summary_kernel_v2).
        tl.static_assert(T == 8)
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = _v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        pid_s = tl.program_id(2)
        n_dblk = tl.num_programs(1)
        n_seg = tl.num_programs(2)
        if HAS_D:
            Dv = _channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)
        u_rows = u_ptr + pid_b * s_u_b + offs_d * s_u_d
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        z_rows = z_ptr + pid_b * s_z_b + offs_d * s_z_d
        do_rows = dout_ptr + pid_b * s_do_b + offs_d * s_do_d
        Bt_base = Bt_ptr + pid_b * seq_len * N
        Ct_base = Ct_ptr + pid_b * seq_len * N
        dB_base = dB_ptr + (pid_b * n_dblk + pid_d) * seq_len * N
        dC_base = dC_ptr + (pid_b * n_dblk + pid_d) * seq_len * N
        ck_base = ckpt_ptr + pid_b * n_chunks * N * n_channels + offs_n[:, None] * n_channels + offs_d[None, :]
        g_rows = (pid_b * n_channels + offs_d) * seq_len                   # contiguous (b, d, L) grads

        c_lo, c_hi = _chunk_range(pid_s, span, n_chunks)
        k_last = n_sub - 1
        q = _compose_segments(sum_q_ptr, sum_dt_ptr, pid_b, n_sub, k_last, n_sub - (pid_s + 1) * sub_per_prog, -1,
                              n_channels, offs_n, offs_d, mask_d, A2, FAST, N, BLOCK_D)
        dA_acc = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        dD_acc = tl.zeros((T, BLOCK_D), dtype=tl.float32)
        dbias_acc = tl.zeros((T, BLOCK_D), dtype=tl.float32)
        # the previous chunk's tiles and checkpoint are loaded while this chunk computes
        tt_n = (c_hi - 1) * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        h0_next = tl.load(ck_base + (c_hi - 1) * N * n_channels, mask=mask_d[None, :], other=0.0)
        U_next = _load_chunk(u_rows, s_u_l, tt_n, m_n)
        DT_next = _load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        DOUT_next = _load_chunk(do_rows, s_do_l, tt_n, m_n)
        if HAS_Z:
            Z_next = _load_chunk(z_rows, s_z_l, tt_n, m_n)
        for j in range(0, c_hi - c_lo):
            c = c_hi - 1 - j
            t0 = c * T
            tt = t0 + offs_t
            m_tile = (tt < seq_len)[:, None] & mask_d[None, :]
            h0 = h0_next
            U = U_next
            DT = DT_next
            DOUT = DOUT_next
            if HAS_Z:
                Z = Z_next
            c_n = tl.maximum(c - 1, c_lo)   # at c == c_lo this reloads chunk c_lo (unused)
            tt_n = c_n * T + offs_t
            m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
            h0_next = tl.load(ck_base + c_n * N * n_channels, mask=mask_d[None, :], other=0.0)
            U_next = _load_chunk(u_rows, s_u_l, tt_n, m_n)
            DT_next = _load_chunk(dt_rows, s_dt_l, tt_n, m_n)
            DOUT_next = _load_chunk(do_rows, s_do_l, tt_n, m_n)
            if HAS_Z:
                Z_next = _load_chunk(z_rows, s_z_l, tt_n, m_n)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                SIG = _sigmoid_fast(DT, FAST)   # d softplus / dx, from the raw (biased) delta
                DT = _softplus_fast(DT, FAST)
            DTU = DT * U
            if HAS_Z:
                ZS = _sigmoid_fast(Z, FAST)
                DY = DOUT * Z * ZS
            else:
                DY = DOUT
            gb_buf = tl.zeros((T, BLOCK_D), dtype=tl.float32)
            ga_buf = tl.zeros((T, BLOCK_D), dtype=tl.float32)
            y_buf = tl.zeros((T, BLOCK_D), dtype=tl.float32)
            db_buf = tl.zeros((N, T), dtype=tl.float32)
            dc_buf = tl.zeros((N, T), dtype=tl.float32)
            h1 = _recompute_step(h0, 0, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h2 = _recompute_step(h1, 1, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h3 = _recompute_step(h2, 2, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h4 = _recompute_step(h3, 3, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h5 = _recompute_step(h4, 4, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h6 = _recompute_step(h5, 5, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h7 = _recompute_step(h6, 6, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            h8 = _recompute_step(h7, 7, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h7, h8, 7, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h6, h7, 6, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h5, h6, 5, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h4, h5, 4, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h3, h4, 3, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h2, h3, 2, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h1, h2, 1, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            q, dA_acc, gb_buf, ga_buf, y_buf, db_buf, dc_buf = _bwd_step(
                q, h0, h1, 0, t0, offs_t, DT, DTU, DY, dA_acc, gb_buf, ga_buf, y_buf,
                db_buf, dc_buf, Bt_base, Ct_base, offs_n, A, A2, seq_len, HAS_Z, FAST, N)
            bc_off = tt[None, :] * N + offs_n[:, None]
            m_bc = (tt < seq_len)[None, :] & (offs_n < N)[:, None]
            tl.store(dB_base + bc_off, db_buf, mask=m_bc)
            tl.store(dC_base + bc_off, dc_buf, mask=m_bc)
            # finish the chunk on (T, BLOCK_D) tiles: one pass per element, stores along time
            DU = DT * gb_buf
            DDT = U * gb_buf + ga_buf
            if HAS_D:
                DU += DY * Dv[None, :]
                dD_acc += DY * U
            if SOFTPLUS:
                DDT = DDT * SIG
            if HAS_BIAS:
                dbias_acc += tl.where(m_tile, DDT, 0.0)
            out_off = g_rows[None, :] + tt[:, None]
            tl.store(du_ptr + out_off, DU.to(du_ptr.dtype.element_ty), mask=m_tile)
            tl.store(ddt_ptr + out_off, DDT.to(ddt_ptr.dtype.element_ty), mask=m_tile)
            if HAS_Z:
                if HAS_D:
                    y_buf += U * Dv[None, :]
                DZ = DOUT * y_buf * ZS * (1.0 + Z * (1.0 - ZS))
                tl.store(dz_ptr + pid_b * (s_dz_b - n_channels * seq_len) + out_off, DZ.to(dz_ptr.dtype.element_ty),
                         mask=m_tile)

        row = pid_b * n_seg + pid_s
        tl.store(dA_ptr + row * N * n_channels + offs_n[:, None] * n_channels + offs_d[None, :], dA_acc,
                 mask=mask_d[None, :])
        if HAS_D:
            tl.store(dD_ptr + row * n_channels + offs_d, tl.sum(dD_acc, axis=0), mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + row * n_channels + offs_d, tl.sum(dbias_acc, axis=0), mask=mask_d)

    @triton.jit
    def _scan_bwd_summary_kernel_v2(
        dt_ptr, A_ptr, Ct_ptr, z_ptr, bias_ptr, dout_ptr, sum_q_ptr, sum_dt_ptr,
        n_channels, seq_len, n_chunks, span, n_sub, k_first,
        s_dt_b, s_dt_d, s_dt_l,
        s_A_d, s_A_n,
        s_z_b, s_z_d, s_z_l,
        s_do_b, s_do_d, s_do_l,
        HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr,
        N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
    ):
        # Sub-segment k = k_first + program_id(2), walked backwards from a zero adjoint: the q = a_t g_t it hands
        # to the step before it (g_t = C_t dy_t + q_{t+1}, which needs no state), and its sum of delta'.
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = _v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        k = k_first + tl.program_id(2)
        if HAS_BIAS:
            bias = _channel_vector(bias_ptr, offs_d, mask_d)
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        z_rows = z_ptr + pid_b * s_z_b + offs_d * s_z_d
        do_rows = dout_ptr + pid_b * s_do_b + offs_d * s_do_d
        Ct_base = Ct_ptr + pid_b * seq_len * N
        c_lo, c_hi = _chunk_range(k, span, n_chunks)
        q = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        sdt = tl.zeros((BLOCK_D,), dtype=tl.float32)
        # the previous chunk's tiles, and C_t two steps ahead (backwards in time), load while this chunk computes
        tt_n = (c_hi - 1) * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        DT_next = _load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        DY_next = _load_chunk(do_rows, s_do_l, tt_n, m_n)
        if HAS_Z:
            Z_next = _load_chunk(z_rows, s_z_l, tt_n, m_n)
        Cq0 = _step_row(Ct_base, c_hi * T - 1, offs_n, seq_len, N)
        Cq1 = _step_row(Ct_base, c_hi * T - 2, offs_n, seq_len, N)
        for j in range(0, c_hi - c_lo):
            t0 = (c_hi - 1 - j) * T
            m_tile = (t0 + offs_t < seq_len)[:, None] & mask_d[None, :]
            DT = DT_next
            DY = DY_next
            if HAS_Z:
                Z = Z_next
            tt_n = tl.maximum(t0 - T, c_lo * T) + offs_t   # at the first chunk this reloads it (unused)
            m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
            DT_next = _load_chunk(dt_rows, s_dt_l, tt_n, m_n)
            DY_next = _load_chunk(do_rows, s_do_l, tt_n, m_n)
            if HAS_Z:
                Z_next = _load_chunk(z_rows, s_z_l, tt_n, m_n)
                DY = DY * Z * _sigmoid_fast(Z, FAST)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = _softplus_fast(DT, FAST)
            DT = tl.where(m_tile, DT, 0.0)
            sdt += tl.sum(DT, axis=0)
            for i in tl.static_range(T):
                sel = offs_t[:, None] == T - 1 - i
                Cv = Cq0
                Cq0 = Cq1
                Cq1 = _step_row(Ct_base, t0 + T - 3 - i, offs_n, seq_len, N)
                g = _pick(DY, sel)[None, :] * Cv[:, None] + q
                q = _ex2(_pick(DT, sel)[None, :] * A2, FAST) * g
        row = pid_b * n_sub + k
        tl.store(sum_q_ptr + (row * N + offs_n[:, None]) * n_channels + offs_d[None, :], q, mask=mask_d[None, :])
        tl.store(sum_dt_ptr + row * n_channels + offs_d, sdt, mask=mask_d)


    @triton.jit
    def _scan_bwd_reduce_channels_kernel(
        dA_part_ptr, dD_part_ptr, dbias_part_ptr, dA_ptr, dD_ptr, dbias_ptr,
        n_rows, n_channels, s_dA_d, s_dA_n,
        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        # dA (d, N), dD, d delta_bias (d,) in their parameters' dtypes: sums of the backward kernel's fp32
        # per-(batch, segment) partials, rows (n_rows, N, d) and (n_rows, d). Grid: channel blocks.
        offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < n_channels
        offs_n = tl.arange(0, N)
        tile = offs_n[:, None] * n_channels + offs_d[None, :]
        dA = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for r in range(0, n_rows):
            dA += tl.load(dA_part_ptr + r * N * n_channels + tile, mask=mask_d[None, :], other=0.0)
            if HAS_D:
                dD += tl.load(dD_part_ptr + r * n_channels + offs_d, mask=mask_d, other=0.0)
            if HAS_BIAS:
                dbias += tl.load(dbias_part_ptr + r * n_channels + offs_d, mask=mask_d, other=0.0)
        tl.store(dA_ptr + offs_d[None, :] * s_dA_d + offs_n[:, None] * s_dA_n, dA.to(dA_ptr.dtype.element_ty),
                 mask=mask_d[None, :])
        if HAS_D:
            tl.store(dD_ptr + offs_d, dD.to(dD_ptr.dtype.element_ty), mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + offs_d, dbias.to(dbias_ptr.dtype.element_ty), mask=mask_d)

    @triton.jit
    def _scan_bwd_reduce_time_kernel(
        dB_part_ptr, dC_part_ptr, dB_ptr, dC_ptr, n_dblk, seq_len,
        N: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        # dB, dC (batch, N, L) contiguous, in B's / C's dtype: sums over channel blocks of the backward kernel's
        # fp32 partials (batch, n_dblk, L, N). Grid (batch, time blocks, 2): axis 2 picks dB or dC.
        pid_b = tl.program_id(0)
        offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
        offs_n = tl.arange(0, N)
        if tl.program_id(2) == 0:
            part_ptr, out_ptr = dB_part_ptr, dB_ptr
        else:
            part_ptr, out_ptr = dC_part_ptr, dC_ptr
        mask = (offs_l < seq_len)[:, None]
        tile = offs_l[:, None] * N + offs_n[None, :]
        acc = tl.zeros((BLOCK_L, N), dtype=tl.float32)
        for j in range(0, n_dblk):
            acc += tl.load(part_ptr + (pid_b * n_dblk + j) * seq_len * N + tile, mask=mask, other=0.0)
        tl.store(out_ptr + pid_b * N * seq_len + offs_n[None, :] * seq_len + offs_l[:, None],
                 acc.to(out_ptr.dtype.element_ty), mask=mask)


def _check_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None) -> None:
    check_launchable(u, "selective_scan_triton")
    if u.dim() != 3:
        raise ValueError(f"selective_scan_triton: u must be (batch, d_inner, L), got shape {tuple(u.shape)}")
    batch, d_inner, seq_len = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan_triton: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != d_inner:
        raise ValueError(f"selective_scan_triton: A must be (d_inner={d_inner}, N), got {tuple(A.shape)}")
    n_state = A.shape[1]
    if n_state & (n_state - 1) or n_state > 256:
        raise ValueError(f"selective_scan_triton: d_state must be a power of two <= 256, got {n_state}")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, n_state, seq_len):
            raise ValueError(f"selective_scan_triton: {name} must be (batch={batch}, N={n_state}, L={seq_len}),"
                             f" got {tuple(t.shape)} (grouped / time-invariant B, C are not supported)")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan_triton: z shape {tuple(z.shape)} != u shape {tuple(u.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d_inner,):
            raise ValueError(f"selective_scan_triton: {name} must be (d_inner={d_inner},), got {tuple(t.shape)}")


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, store_ckpt: bool,
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


def _scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, ckpt, chunk: int,
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


V2_CHUNK = 8  # steps per checkpoint in v2 (the backward keeps the chunk's 8 states in registers)
# steps of lookahead for the forward's B_t / C_t loads (1 or 2; see the kernel); None: 2 when no checkpoints are
# written, 1 when they are (H200, benchmarks/results/gpu_scan_occupancy.json: 2 steps made the checkpointing
# forward 10% slower and the plain one 3% faster)
V2_FWD_PREFETCH: int | None = None
DEFAULT_IMPL = "v2"
# v2 block shapes per d_state: (BLOCK_D, num_warps) for forward and backward; from benchmarks/gpu_scan.py --sweep
V2_FWD_CONFIGS: dict[int, tuple[int, int]] = {}
V2_BWD_CONFIGS: dict[int, tuple[int, int]] = {}
# Segments along time. The v2 time loop is latency-bound per warp and its occupancy register-bound: one-warp
# programs resident per SM (H200, d_state 16: 168 registers forward, 255 backward, 96 / 127 for the summary
# kernels). Per program a step costs about the same from one resident warp to a full SM, so a kernel's time is
# about (waves of programs) x (steps per program); the summaries' cost per chunk-step relative to the main
# kernel's was measured with benchmarks/gpu_scan_occupancy.py (segments vs fold rows). The shortest segment,
# in chunks; sub-segments per summary pass. The backward's 1.2 is for its 4-lane (8-channel) programs, whose
# chunk-step is 3.4x cheaper than the 2-lane (16-channel) ones the earlier 0.36 was relative to (H200, 2026-12-02:
# at 8 x 1536 x 2048, 1.56 ms unsplit, 1.32 at 2 segments, 1.38 at 4).
V2_RESIDENT_PER_SM = {"fwd": 12, "bwd": 8, "fwd_summary": 21, "bwd_summary": 16}
V2_SUMMARY_COST = {"fwd": 1.3, "bwd": 1.2}
V2_MIN_SEGMENT_CHUNKS = 16
V2_SUMMARY_SUBSEGMENTS = 8


@dataclass(frozen=True)
class SegmentPlan:
    """How the v2 kernels split the sequence: ``n_seg`` segments of ``span`` chunks scanned in parallel.

    Each segment starts from the carry composed of the summaries of the ``n_sub`` sub-segments
    (``sub_span`` chunks each, ``sub_per_seg`` per segment) on its left (forward) or right (backward).
    """

    n_seg: int
    span: int
    n_sub: int
    sub_span: int
    sub_per_seg: int

    def summaries(self, backward: bool) -> int:
        """Sub-segments summarised: those before the last segment (forward) or after the first (backward)."""
        return self.n_sub - self.sub_per_seg if backward else (self.n_seg - 1) * self.sub_per_seg


@dataclass(frozen=True)
class ScanOccupancy:
    """What the segment plan needs to know about one kernel (main + summary) at one shape on one GPU."""

    programs: int           # main-kernel programs per segment (batch x channel blocks)
    slots: int              # main-kernel programs resident at once
    summary_programs: int   # summary programs per sub-segment
    summary_slots: int
    summary_cost: float     # summary time per chunk-step over the main kernel's
    backward: bool


def _split(n_seg: int, n_chunks: int) -> SegmentPlan:
    if n_seg == 1:
        return SegmentPlan(1, n_chunks, 1, n_chunks, 1)
    n_sub = n_seg   # finer summaries give the summary pass more parallel work (sub-segments of >= 4 chunks)
    while n_sub < V2_SUMMARY_SUBSEGMENTS and n_chunks >= 8 * n_sub:
        n_sub *= 2
    sub_span = cdiv(n_chunks, n_sub)
    sub_per_seg = n_sub // n_seg
    span = sub_span * sub_per_seg
    return SegmentPlan(cdiv(n_chunks, span), span, cdiv(n_chunks, sub_span), sub_span, sub_per_seg)


def plan_cost(plan: SegmentPlan, occ: ScanOccupancy) -> float:
    """Modelled time in main-kernel chunk-steps: waves x span, plus the summary pass's waves x sub_span."""
    cost = cdiv(occ.programs * plan.n_seg, occ.slots) * plan.span
    n_sum = plan.summaries(occ.backward)
    if n_sum:
        cost += cdiv(occ.summary_programs * n_sum, occ.summary_slots) * plan.sub_span * occ.summary_cost
    return cost


def plan_segments(n_chunks: int, occ: ScanOccupancy, requested: int | None = None) -> SegmentPlan:
    """The segment count (1, 2, 4 or 8) of least modelled time; ``requested`` forces one (tests, benchmarks).

    A split must save at least 5% of the modelled time: every segment boundary costs summaries, and the
    model ignores that a full SM runs each warp a little slower than a lone one.
    """
    if requested is not None:
        return _split(max(1, min(int(requested), n_chunks)), n_chunks)
    best = _split(1, n_chunks)
    best_cost = plan_cost(best, occ)
    n_seg = 2
    while n_seg <= 8 and n_chunks >= n_seg * V2_MIN_SEGMENT_CHUNKS:
        plan = _split(n_seg, n_chunks)
        cost = plan_cost(plan, occ)
        if cost < 0.95 * best_cost:
            best, best_cost = plan, cost
        n_seg *= 2
    return best


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _device_sms(device: torch.device) -> int:
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 132   # the Triton interpreter runs on the CPU


def _v2_launch(n_state: int, backward: bool, batch: int, d_inner: int, n_chunks: int, device: torch.device,
               config: tuple[int, ...] | None) -> tuple[int, int, SegmentPlan]:
    """(BLOCK_D, num_warps, segments) for a v2 kernel; ``config`` = (BLOCK_D, num_warps[, segments]) overrides.

    Memoised per shape and SM count: planning is pure Python on the host's critical path of every call.
    """
    return _v2_plan(n_state, backward, batch, d_inner, n_chunks, _device_sms(device),
                    tuple(config) if config is not None else None)


@functools.lru_cache(maxsize=1024)
def _v2_plan(n_state: int, backward: bool, batch: int, d_inner: int, n_chunks: int, sms: int,
             config: tuple[int, ...] | None) -> tuple[int, int, SegmentPlan]:
    """_v2_launch for a device of ``sms`` SMs.

    Forward: one lane per channel at N=16 (16 states in registers), 4 lanes at N=64. Backward keeps the chunk's
    8 states per lane: 4 lanes per channel at N=16 (4 states each), 8 at N=64 (255 registers). Too few channels
    are made up for by segments; when the sequence is too short for that too, the state axis is spread over
    more lanes (more warps, more shuffles).
    """
    kind = "bwd" if backward else "fwd"

    def occupancy(block: int) -> ScanOccupancy:
        return ScanOccupancy(batch * cdiv(d_inner, block), sms * V2_RESIDENT_PER_SM[kind],
                             batch * cdiv(d_inner, _summary_block(n_state)), sms * V2_RESIDENT_PER_SM[kind + "_summary"],
                             V2_SUMMARY_COST[kind], backward)

    if config is not None:
        block_d, num_warps = config[0], config[1]
        requested = config[2] if len(config) > 2 else None
        return block_d, num_warps, plan_segments(n_chunks, occupancy(block_d), requested)
    table = V2_BWD_CONFIGS if backward else V2_FWD_CONFIGS
    if n_state in table:
        block_d, num_warps = table[n_state]
    else:
        block_d, num_warps = (8 if n_state <= 16 else 4) if backward else (32 if n_state <= 16 else 8), 1
    occ = occupancy(block_d)
    plan = plan_segments(n_chunks, occ)
    while block_d > 4 and 4 * occ.programs * plan.n_seg < occ.slots:
        block_d //= 2
        occ = occupancy(block_d)
        plan = plan_segments(n_chunks, occ)
    return block_d, num_warps, plan


def _fast_math() -> bool:
    # inline PTX (approximate ex2 / lg2 / rcp) cannot run in the Triton interpreter
    return not interpreting()


def _summary_block(n_state: int) -> int:
    return 32 if n_state <= 16 else 8   # the summaries hold one state set per lane (no chunk buffer)


def _summary_buffers(batch: int, rows: int, n_state: int, d_inner: int, device: torch.device):
    """Segment summaries, fp32: states or adjoints (batch, rows, N, d) and sums of delta' (batch, rows, d).

    One-element placeholders when there is nothing to summarise: the kernels then never read them.
    """
    if rows == 0:
        placeholder = torch.empty(1, device=device, dtype=torch.float32)
        return placeholder, placeholder
    return (torch.empty((batch, rows, n_state, d_inner), device=device, dtype=torch.float32),
            torch.empty((batch, rows, d_inner), device=device, dtype=torch.float32))


def _fp32_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t as contiguous fp32 in at most one copy. ``t.to(float32).contiguous()`` copies twice when t is a
    non-contiguous view of another dtype (the cast keeps the view's strides, then contiguous() copies again),
    and ``t.to(float32, memory_format=contiguous_format)`` returns a non-contiguous fp32 t unchanged."""
    if t.dtype == torch.float32 or t.is_contiguous():
        return t.to(torch.float32).contiguous()
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


# the backward's partial-sum passes: channels per program (dA, dD, d delta_bias) and steps per program (dB, dC)
_REDUCE_BLOCK_D = 64
_REDUCE_BLOCK_L = 64


def _scan_forward_v2(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, store_ckpt: bool,
                     config: tuple[int, ...] | None = None):
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    n_chunks = cdiv(seq_len, V2_CHUNK)
    block_d, num_warps, plan = _v2_launch(n_state, False, batch, d_inner, n_chunks, u.device, config)
    # B, C as fp32 (batch, L, N): one step's N values are contiguous (vector loads), 1/d_inner of u's size
    Bt = _fp32_contiguous(B.transpose(1, 2))
    Ct = _fp32_contiguous(C.transpose(1, 2))
    out = torch.empty((batch, d_inner, seq_len), device=u.device, dtype=u.dtype)
    ckpt = (torch.empty((batch, n_chunks, n_state, d_inner), device=u.device, dtype=torch.float32)
            if store_ckpt else out)
    zz = z if z is not None else u
    A32 = A.float()  # read through its strides: each program loads its (N, BLOCK_D) tile once
    bias = delta_bias if delta_bias is not None else u
    n_sum = plan.summaries(backward=False)
    sum_h, sum_dt = _summary_buffers(batch, n_sum, n_state, d_inner, u.device)
    if n_sum:
        sblk = _summary_block(n_state)
        _scan_fwd_summary_kernel_v2[(batch, cdiv(d_inner, sblk), n_sum)](
            u, delta, A32, Bt, bias, sum_h, sum_dt,
            d_inner, seq_len, n_chunks, plan.sub_span, n_sum,
            *u.stride(), *delta.stride(), *A32.stride(),
            HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, FAST=_fast_math(), N=n_state,
            BLOCK_D=sblk, T=V2_CHUNK, num_warps=1,
        )
    prefetch = V2_FWD_PREFETCH or (1 if store_ckpt else 2)
    _scan_fwd_kernel_v2[(batch, cdiv(d_inner, block_d), plan.n_seg)](
        u, delta, A32, Bt, Ct, D if D is not None else u, zz, bias, out, ckpt, sum_h, sum_dt,
        d_inner, seq_len, n_chunks, plan.span, max(n_sum, 1), plan.sub_per_seg,
        *u.stride(), *delta.stride(), *A32.stride(), *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        STORE_CKPT=store_ckpt, FAST=_fast_math(), N=n_state, BLOCK_D=block_d, T=V2_CHUNK,
        PREFETCH=prefetch, num_warps=num_warps,
    )
    return out, (ckpt if store_ckpt else None), Bt, Ct


def _scan_backward_v2(dout, u, delta, A, Bt, Ct, B, C, D, z, delta_bias, delta_softplus: bool, ckpt,
                      config: tuple[int, ...] | None = None, dz_out: torch.Tensor | None = None):
    # dz_out: where dz goes instead of a new tensor, (batch, d, L) with strides (any, L, 1), e.g. a half of a
    # wider gradient buffer
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    n_chunks = cdiv(seq_len, V2_CHUNK)
    block_d, num_warps, plan = _v2_launch(n_state, True, batch, d_inner, n_chunks, u.device, config)
    n_dblk = cdiv(d_inner, block_d)
    dev = u.device
    f32 = torch.float32
    du = torch.empty((batch, d_inner, seq_len), device=dev, dtype=u.dtype)
    ddelta = torch.empty((batch, d_inner, seq_len), device=dev, dtype=delta.dtype)
    dz = dz_out
    if dz is None and z is not None:
        dz = torch.empty((batch, d_inner, seq_len), device=dev, dtype=z.dtype)
    if dz is not None and (dz.shape != u.shape or dz.stride()[1:] != (seq_len, 1)):
        raise ValueError(f"selective scan backward: dz_out must be {tuple(u.shape)} with strides (any, {seq_len}, 1), "
                         f"got {tuple(dz.shape)} strides {dz.stride()}")
    dA_part = torch.empty((batch, plan.n_seg, n_state, d_inner), device=dev, dtype=f32)
    dB_part = torch.empty((batch, n_dblk, seq_len, n_state), device=dev, dtype=f32)
    dC_part = torch.empty((batch, n_dblk, seq_len, n_state), device=dev, dtype=f32)
    dD_part = torch.empty((batch, plan.n_seg, d_inner), device=dev, dtype=f32) if D is not None else None
    dbias_part = (torch.empty((batch, plan.n_seg, d_inner), device=dev, dtype=f32)
                  if delta_bias is not None else None)
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else u
    A32 = A.float()
    n_sum = plan.summaries(backward=True)
    # rows for every sub-segment (the first segment's are never written), so rows are indexed by sub-segment
    sum_q, sum_dt = _summary_buffers(batch, plan.n_sub if n_sum else 0, n_state, d_inner, dev)
    if n_sum:
        sblk = _summary_block(n_state)
        _scan_bwd_summary_kernel_v2[(batch, cdiv(d_inner, sblk), n_sum)](
            delta, A32, Ct, zz, bias, dout, sum_q, sum_dt,
            d_inner, seq_len, n_chunks, plan.sub_span, plan.n_sub, plan.sub_per_seg,
            *delta.stride(), *A32.stride(), *zz.stride(), *dout.stride(),
            HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, FAST=_fast_math(),
            N=n_state, BLOCK_D=sblk, T=V2_CHUNK, num_warps=1,
        )
    _scan_bwd_kernel_v2[(batch, n_dblk, plan.n_seg)](
        u, delta, A32, Bt, Ct, D if D is not None else u, zz, bias, dout, ckpt,
        du, ddelta, dz if dz is not None else du, dA_part, dB_part, dC_part,
        dD_part if dD_part is not None else dA_part, dbias_part if dbias_part is not None else dA_part,
        sum_q, sum_dt,
        d_inner, seq_len, n_chunks, plan.span, plan.n_sub, plan.sub_per_seg,
        *u.stride(), *delta.stride(), *A32.stride(), *zz.stride(), *dout.stride(),
        dz.stride(0) if dz is not None else du.stride(0),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        FAST=_fast_math(), N=n_state, BLOCK_D=block_d, T=V2_CHUNK, num_warps=num_warps,
    )
    # the partials' sums, cast to the inputs' dtypes, in two passes (torch took seven kernels and ten ops)
    dA = torch.empty((d_inner, n_state), device=dev, dtype=A.dtype)
    dD = torch.empty((d_inner,), device=dev, dtype=D.dtype) if D is not None else None
    dbias = torch.empty((d_inner,), device=dev, dtype=delta_bias.dtype) if delta_bias is not None else None
    _scan_bwd_reduce_channels_kernel[(cdiv(d_inner, _REDUCE_BLOCK_D),)](
        dA_part, dD_part if dD_part is not None else dA_part, dbias_part if dbias_part is not None else dA_part,
        dA, dD if dD is not None else dA, dbias if dbias is not None else dA,
        batch * plan.n_seg, d_inner, *dA.stride(),
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, N=n_state, BLOCK_D=_REDUCE_BLOCK_D, num_warps=4,
    )
    dB = torch.empty((batch, n_state, seq_len), device=dev, dtype=B.dtype)
    dC = torch.empty((batch, n_state, seq_len), device=dev, dtype=C.dtype)
    _scan_bwd_reduce_time_kernel[(batch, cdiv(seq_len, _REDUCE_BLOCK_L), 2)](
        dB_part, dC_part, dB, dC, n_dblk, seq_len, N=n_state, BLOCK_L=_REDUCE_BLOCK_L, num_warps=4,
    )
    return du, ddelta, dA, dB, dC, dD, dz, dbias


class SelectiveScanTriton(torch.autograd.Function):
    """autograd wrapper: forward saves the inputs and fp32 chunk-start states, backward recomputes."""

    @staticmethod
    def forward(ctx: Any, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, needs_grad: bool,
                impl: str, fwd_config=None, bwd_config=None):
        # needs_grad is decided by the caller: grad mode is always off inside forward
        if impl == "v2":
            out, ckpt, Bt, Ct = _scan_forward_v2(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                 store_ckpt=needs_grad, config=fwd_config)
            chunk = V2_CHUNK
        else:
            out, ckpt, chunk = _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                             store_ckpt=needs_grad, config=fwd_config)
            Bt = Ct = None
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt, Bt, Ct)
            ctx.delta_softplus = delta_softplus
            ctx.chunk = chunk
            ctx.impl = impl
            ctx.bwd_config = bwd_config
        return out

    @staticmethod
    def backward(ctx: Any, dout):
        u, delta, A, B, C, D, z, delta_bias, ckpt, Bt, Ct = ctx.saved_tensors
        if ctx.impl == "v2":
            # a time-strided delta (the dense layer passes F.linear(...).transpose(1, 2)) made the backward
            # kernel 1.5x slower in the layer benchmark (3.93 vs 2.63 ms); one copy costs ~0.05 ms
            if delta.stride(-1) != 1:
                delta = delta.contiguous()
            grads = _scan_backward_v2(dout, u, delta, A, Bt, Ct, B, C, D, z, delta_bias, ctx.delta_softplus, ckpt,
                                      config=ctx.bwd_config)
        else:
            grads = _scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ckpt, ctx.chunk,
                                   config=ctx.bwd_config)
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None, None, None


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                          delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                          impl: str | None = None, fwd_config: tuple[int, ...] | None = None,
                          bwd_config: tuple[int, ...] | None = None) -> torch.Tensor:
    """Selective scan on CUDA through Triton; same contract as the reference ``selective_scan``.

    u, delta, z: (batch, d_inner, L) fp32/bf16/fp16; A: (d_inner, N) real (negative); B, C: (batch, N, L);
    D, delta_bias: (d_inner,). Returns y (batch, d_inner, L) in u's dtype. State math is fp32.
    ``impl``: "v2" (default: sequential per channel, states in registers) or "v1" (chunked associative scan,
    kept for comparison). ``fwd_config`` / ``bwd_config`` override block shapes: v2 (BLOCK_D, num_warps) or
    (BLOCK_D, num_warps, segments), the last forcing the number of segments along time that ``plan_segments``
    would otherwise choose; v1 (CHUNK, BLOCK_D, num_warps), where the backward uses the forward's CHUNK.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    impl = impl or DEFAULT_IMPL
    if impl not in ("v1", "v2"):
        raise ValueError(f"selective_scan_triton: impl must be 'v1' or 'v2', got {impl!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), needs_grad,
                                     impl, fwd_config, bwd_config)


__all__ = ["selective_scan_triton", "SelectiveScanTriton", "HAS_TRITON"]
