"""The v2 Triton selective scan, forward: the segment-summary kernel and the main forward kernel.

One program per (batch, block of channels, segment); channels on the lanes, the N states of a channel in
registers; a sequential loop over time in chunks of V2_CHUNK steps whose u / delta / z tiles are loaded while
the previous chunk computes. With checkpoints on (training), the fp32 state at every chunk start is stored for
the backward (rom.kernels.triton_scan_bwd). Segments along time: rom.kernels.scan_plan.
"""

from __future__ import annotations

import torch

from rom.kernels.scan_plan import V2_CHUNK, summary_block, v2_launch
from rom.kernels.triton_scan_common import HAS_TRITON, fast_math, fp32_contiguous, summary_buffers
from rom.kernels.triton_support import cdiv, tl, triton

# steps of lookahead for the forward's B_t / C_t loads (1 or 2; see the kernel); None: 2 when no checkpoints are
# written, 1 when they are (the faster of the two for each; docs/gpu_kernels.md)
V2_FWD_PREFETCH: int | None = None


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
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        k = tl.program_id(2)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)
        u_rows = u_ptr + pid_b * s_u_b + offs_d * s_u_d
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        Bt_base = Bt_ptr + pid_b * seq_len * N
        c_lo, c_hi = chunk_range(k, span, n_chunks)
        h = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        sdt = tl.zeros((BLOCK_D,), dtype=tl.float32)
        tt_n = c_lo * T + offs_t
        m_n = (tt_n < seq_len)[:, None] & mask_d[None, :]
        U_next = load_chunk(u_rows, s_u_l, tt_n, m_n)
        DT_next = load_chunk(dt_rows, s_dt_l, tt_n, m_n)
        Bq0 = step_row(Bt_base, c_lo * T, offs_n, seq_len, N)   # B_t two steps ahead, as in the forward
        Bq1 = step_row(Bt_base, c_lo * T + 1, offs_n, seq_len, N)
        for c in range(c_lo, c_hi):
            t0 = c * T
            m_tile = (t0 + offs_t < seq_len)[:, None] & mask_d[None, :]
            U = U_next
            DT = DT_next
            m_n = (t0 + T + offs_t < seq_len)[:, None] & mask_d[None, :]
            U_next = load_chunk(u_rows, s_u_l, t0 + T + offs_t, m_n)
            DT_next = load_chunk(dt_rows, s_dt_l, t0 + T + offs_t, m_n)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = softplus_fast(DT, FAST)
            DT = tl.where(m_tile, DT, 0.0)
            sdt += tl.sum(DT, axis=0)
            DTU = DT * U
            for i in tl.static_range(T):
                sel = offs_t[:, None] == i
                Bv = Bq0
                Bq0 = Bq1
                Bq1 = step_row(Bt_base, t0 + i + 2, offs_n, seq_len, N)
                h = ex2(pick(DT, sel)[None, :] * A2, FAST) * h + Bv[:, None] * pick(DTU, sel)[None, :]
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
        # L2 hit that takes longer than one step of the recurrence for the one warp a scheduler has, so loaded
        # when needed its latency would dominate the forward (docs/gpu_kernels.md).
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A2 = v2_program(
            A_ptr, s_A_n, s_A_d, n_channels, N, BLOCK_D, T)
        pid_s = tl.program_id(2)
        if HAS_D:
            Dv = channel_vector(D_ptr, offs_d, mask_d)
        if HAS_BIAS:
            bias = channel_vector(bias_ptr, offs_d, mask_d)
        u_rows = u_ptr + pid_b * s_u_b + offs_d * s_u_d
        dt_rows = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
        z_rows = z_ptr + pid_b * s_z_b + offs_d * s_z_d
        o_rows = out_ptr + pid_b * s_o_b + offs_d * s_o_d
        Bt_base = Bt_ptr + pid_b * seq_len * N
        Ct_base = Ct_ptr + pid_b * seq_len * N
        ck_base = ckpt_ptr + pid_b * n_chunks * N * n_channels + offs_n[:, None] * n_channels + offs_d[None, :]

        h = compose_segments(sum_h_ptr, sum_dt_ptr, pid_b, n_sub, 0, pid_s * sub_per_prog, 1, n_channels,
                             offs_n, offs_d, mask_d, A2, FAST, N, BLOCK_D)
        c_lo, c_hi = chunk_range(pid_s, span, n_chunks)
        # software pipelining by hand: the next chunk's tiles are in flight while this chunk computes
        tt_first = c_lo * T + offs_t
        m_next = (tt_first < seq_len)[:, None] & mask_d[None, :]
        U_next = load_chunk(u_rows, s_u_l, tt_first, m_next)
        DT_next = load_chunk(dt_rows, s_dt_l, tt_first, m_next)
        if HAS_Z:
            Z_next = load_chunk(z_rows, s_z_l, tt_first, m_next)
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
            U_next = load_chunk(u_rows, s_u_l, tt + T, m_next)
            DT_next = load_chunk(dt_rows, s_dt_l, tt + T, m_next)
            if HAS_Z:
                Z_next = load_chunk(z_rows, s_z_l, tt + T, m_next)
            if HAS_BIAS:
                DT += bias[None, :]
            if SOFTPLUS:
                DT = softplus_fast(DT, FAST)
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
                dt = pick(DT, sel)
                dtu = pick(DTU, sel)
                h = ex2(dt[None, :] * A2, FAST) * h + Bv[:, None] * dtu[None, :]
                ybuf = tl.where(sel, tl.sum(h * Cv[:, None], axis=0)[None, :], ybuf)
            if HAS_D:
                ybuf += U * Dv[None, :]
            if HAS_Z:
                ybuf = ybuf * Z * sigmoid_fast(Z, FAST)
            tl.store(o_rows[None, :] + tt[:, None] * s_o_l, ybuf.to(out_ptr.dtype.element_ty), mask=m_tile)


def scan_forward_v2(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, store_ckpt: bool,
                    config: tuple[int, ...] | None = None):
    batch, d_inner, seq_len = u.shape
    n_state = A.shape[1]
    n_chunks = cdiv(seq_len, V2_CHUNK)
    block_d, num_warps, plan = v2_launch(n_state, False, batch, d_inner, n_chunks, u.device, config)
    # B, C as fp32 (batch, L, N): one step's N values are contiguous (vector loads), 1/d_inner of u's size
    Bt = fp32_contiguous(B.transpose(1, 2))
    Ct = fp32_contiguous(C.transpose(1, 2))
    out = torch.empty((batch, d_inner, seq_len), device=u.device, dtype=u.dtype)
    ckpt = (torch.empty((batch, n_chunks, n_state, d_inner), device=u.device, dtype=torch.float32)
            if store_ckpt else out)
    zz = z if z is not None else u
    A32 = A.float()  # read through its strides: each program loads its (N, BLOCK_D) tile once
    bias = delta_bias if delta_bias is not None else u
    n_sum = plan.summaries(backward=False)
    sum_h, sum_dt = summary_buffers(batch, n_sum, n_state, d_inner, u.device)
    if n_sum:
        sblk = summary_block(n_state)
        _scan_fwd_summary_kernel_v2[(batch, cdiv(d_inner, sblk), n_sum)](
            u, delta, A32, Bt, bias, sum_h, sum_dt,
            d_inner, seq_len, n_chunks, plan.sub_span, n_sum,
            *u.stride(), *delta.stride(), *A32.stride(),
            HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, FAST=fast_math(), N=n_state,
            BLOCK_D=sblk, T=V2_CHUNK, num_warps=1,
        )
    prefetch = V2_FWD_PREFETCH or (1 if store_ckpt else 2)
    _scan_fwd_kernel_v2[(batch, cdiv(d_inner, block_d), plan.n_seg)](
        u, delta, A32, Bt, Ct, D if D is not None else u, zz, bias, out, ckpt, sum_h, sum_dt,
        d_inner, seq_len, n_chunks, plan.span, max(n_sum, 1), plan.sub_per_seg,
        *u.stride(), *delta.stride(), *A32.stride(), *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        STORE_CKPT=store_ckpt, FAST=fast_math(), N=n_state, BLOCK_D=block_d, T=V2_CHUNK,
        PREFETCH=prefetch, num_warps=num_warps,
    )
    return out, (ckpt if store_ckpt else None), Bt, Ct


__all__ = ["HAS_TRITON", "V2_FWD_PREFETCH", "scan_forward_v2"]
