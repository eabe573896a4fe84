"""The v2 Triton selective scan, backward: segment summaries, the main backward kernel, two reductions.

The main kernel walks each segment's chunks in reverse, recomputes the chunk's 8 states from the forward's
checkpoint into registers (4 lanes per channel at N=16) and runs the adjoint recurrence backwards
(q_t = exp(delta'_t A) g_t, g_t = C_t dy_t + q_{t+1}). dA / dD / d delta_bias are reduced over time in registers,
dB / dC over the program's channels; two small kernels then sum the partials over batch and segments, or over
channel blocks, and cast them to the inputs' dtypes (deterministic, no atomics). Segments: rom.kernels.scan_plan.
"""

from __future__ import annotations

import torch

from rom.kernels.scan_plan import V2_CHUNK, summary_block, v2_launch
from rom.kernels.triton_scan_common import HAS_TRITON, fast_math, summary_buffers
from rom.kernels.triton_support import cdiv, tl, triton

# the backward's partial-sum passes: channels per program (dA, dD, d delta_bias) and steps per program (dB, dC)
_REDUCE_BLOCK_D = 64
_REDUCE_BLOCK_L = 64


if HAS_TRITON:
    from rom.kernels.triton_scan_common import (  # the jit helpers (defined only with triton)
        channel_vector,
        chunk_range,
        compose_segments,
        ex2,
        load_chunk,
        pick,
        sigmoid_fast,
        softplus_fast,
        step_row,
        v2_program,
    )

    @triton.jit
    def _recompute_step(h, i: tl.constexpr, t0, offs_t, DT, DTU, Bt_base, offs_n, A2, seq_len,
                        FAST: tl.constexpr, N: tl.constexpr):
        t = t0 + i
        sel = offs_t[:, None] == i
        Bv = tl.load(Bt_base + t * N + offs_n, mask=(offs_n < N) & (t < seq_len), other=0.0)
        return ex2(pick(DT, sel)[None, :] * A2, FAST) * h + Bv[:, None] * pick(DTU, sel)[None, :]

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
        dt = pick(DT, sel)
        dy = pick(DY, sel)
        if HAS_Z:  # y_t before gating, for dz (finished on the tile after the chunk)
            y_buf = tl.where(sel, tl.sum(h_cur * Cv[:, None], axis=0)[None, :], y_buf)
        g = dy[None, :] * Cv[:, None] + q
        # the decay again, rounded differently from the recompute's exp2(dt * A2) on purpose: with the identical
        # expression the compiler keeps the chunk's 8 decay tiles alive from the recompute to here, which spilled
        # (one more exponential per state is cheaper; docs/gpu_kernels.md)
        q = ex2((dt[None, :] * A) * 1.4426950408889634, FAST) * g
        gh = q * h_prev                                     # g_t * a_t * h_{t-1}
        gb_buf = tl.where(sel, tl.sum(g * Bv[:, None], axis=0)[None, :], gb_buf)
        ga_buf = tl.where(sel, tl.sum(gh * A, axis=0)[None, :], ga_buf)
        dA_acc += gh * dt[None, :]
        # dB_t, dC_t (sums over the program's channels) go to (N, T) tiles stored once per chunk: a store per
        # step costs a shared-memory round trip and a barrier to de-replicate the reduced vector
        sel_n = offs_t[None, :] == i
        db_buf = tl.where(sel_n, tl.sum(g * pick(DTU, sel)[None, :], axis=1)[:, None], db_buf)
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
        # gradient buffer (rom.kernels.inner_path); its offsets are du's plus a per-program scalar (cheaper than
        # a pointer vector of its own). dA: fp32 (batch, n_seg, N, d) partials (summed outside).
        # dB, dC: fp32 (batch, n_dblocks, L, N) partials (summed over channel blocks outside: no atomics).
        # dD, dbias: fp32 (batch, n_seg, d) partials. T must be 8: the chunk's states are 8 named register tiles.
        # Grid (batch, channel blocks, segments): program s walks chunks [s * span, (s + 1) * span) backwards,
        # with the adjoint entering from the right composed from the summaries (sum_q, sum_dt) of the
        # sub-segments after it, right to left (see _scan_bwd_summary_kernel_v2).
        tl.static_assert(T == 8)
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        pid_s = tl.program_id(2)
        n_dblk = tl.num_programs(1)
        n_seg = tl.num_programs(2)
        if HAS_D:
            Dv = channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)
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

        c_lo, c_hi = chunk_range(pid_s, span, n_chunks)
        k_last = n_sub - 1
        q = compose_segments(sum_q_ptr, sum_dt_ptr, pid_b, n_sub, k_last, n_sub - (pid_s + 1) * sub_per_prog, -1,
                             n_channels, offs_n, offs_d, mask_d, A2, FAST, N, BLOCK_D)
        dA_acc = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        dD_acc = tl.zeros((T, BLOCK_D), dtype=tl.float32)
        dbias_acc = tl.zeros((T, BLOCK_D), dtype=tl.float32)
        # the previous chunk's tiles and checkpoint are loaded while this chunk computes
        tt_n = (c_hi - 1) * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        h0_next = tl.load(ck_base + (c_hi - 1) * N * n_channels, mask=mask_d[None, :], other=0.0)
        U_next = load_chunk(u_rows, s_u_l, tt_n, m_n)
        DT_next = load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        DOUT_next = load_chunk(do_rows, s_do_l, tt_n, m_n)
        if HAS_Z:
            Z_next = load_chunk(z_rows, s_z_l, tt_n, m_n)
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
            U_next = load_chunk(u_rows, s_u_l, tt_n, m_n)
            DT_next = load_chunk(dt_rows, s_dt_l, tt_n, m_n)
            DOUT_next = load_chunk(do_rows, s_do_l, tt_n, m_n)
            if HAS_Z:
                Z_next = load_chunk(z_rows, s_z_l, tt_n, m_n)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                SIG = sigmoid_fast(DT, FAST)   # d softplus / dx, from the raw (biased) delta
                DT = softplus_fast(DT, FAST)
            DTU = DT * U
            if HAS_Z:
                ZS = sigmoid_fast(Z, FAST)
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
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        k = k_first + tl.program_id(2)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        z_rows = z_ptr + pid_b * s_z_b + offs_d * s_z_d
        do_rows = dout_ptr + pid_b * s_do_b + offs_d * s_do_d
        Ct_base = Ct_ptr + pid_b * seq_len * N
        c_lo, c_hi = chunk_range(k, span, n_chunks)
        q = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        sdt = tl.zeros((BLOCK_D,), dtype=tl.float32)
        # the previous chunk's tiles, and C_t two steps ahead (backwards in time), load while this chunk computes
        tt_n = (c_hi - 1) * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        DT_next = load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        DY_next = load_chunk(do_rows, s_do_l, tt_n, m_n)
        if HAS_Z:
            Z_next = load_chunk(z_rows, s_z_l, tt_n, m_n)
        Cq0 = step_row(Ct_base, c_hi * T - 1, offs_n, seq_len, N)
        Cq1 = step_row(Ct_base, c_hi * T - 2, offs_n, seq_len, N)
        for j in range(0, c_hi - c_lo):
            t0 = (c_hi - 1 - j) * T
            m_tile = (t0 + offs_t < seq_len)[:, None] & mask_d[None, :]
            DT = DT_next
            DY = DY_next
            if HAS_Z:
                Z = Z_next
            tt_n = tl.maximum(t0 - T, c_lo * T) + offs_t   # at the first chunk this reloads it (unused)
            m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
            DT_next = load_chunk(dt_rows, s_dt_l, tt_n, m_n)
            DY_next = load_chunk(do_rows, s_do_l, tt_n, m_n)
            if HAS_Z:
                Z_next = load_chunk(z_rows, s_z_l, tt_n, m_n)
                DY = DY * Z * sigmoid_fast(Z, FAST)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = softplus_fast(DT, FAST)
            DT = tl.where(m_tile, DT, 0.0)
            sdt += tl.sum(DT, axis=0)
            for i in tl.static_range(T):
                sel = offs_t[:, None] == T - 1 - i
                Cv = Cq0
                Cq0 = Cq1
                Cq1 = step_row(Ct_base, t0 + T - 3 - i, offs_n, seq_len, N)
                g = pick(DY, sel)[None, :] * Cv[:, None] + q
                q = ex2(pick(DT, sel)[None, :] * A2, FAST) * g
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


def scan_backward_v2(dout, u, delta, A, Bt, Ct, B, C, D, z, delta_bias, delta_softplus: bool, ckpt,
                     config: tuple[int, ...] | None = None, dz_out: torch.Tensor | None = None):
    # dz_out: where dz goes instead of a new tensor, (batch, d, L) with strides (any, L, 1), e.g. a half of a
    # wider gradient buffer
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    n_chunks = cdiv(seq_len, V2_CHUNK)
    block_d, num_warps, plan = v2_launch(n_state, True, batch, d_inner, n_chunks, u.device, config)
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
    sum_q, sum_dt = summary_buffers(batch, plan.n_sub if n_sum else 0, n_state, d_inner, dev)
    if n_sum:
        sblk = summary_block(n_state)
        _scan_bwd_summary_kernel_v2[(batch, cdiv(d_inner, sblk), n_sum)](
            delta, A32, Ct, zz, bias, dout, sum_q, sum_dt,
            d_inner, seq_len, n_chunks, plan.sub_span, plan.n_sub, plan.sub_per_seg,
            *delta.stride(), *A32.stride(), *zz.stride(), *dout.stride(),
            HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, FAST=fast_math(),
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
        FAST=fast_math(), N=n_state, BLOCK_D=block_d, T=V2_CHUNK, num_warps=num_warps,
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


__all__ = ["HAS_TRITON", "scan_backward_v2"]
