"""Shared pieces of the Triton selective scan: jit helpers of its kernels and host-side checks and buffers.

Used by the v2 kernels (rom.kernels.triton_scan_fwd / triton_scan_bwd), the v1 kernels
(rom.kernels.triton_scan_v1) and the inner path (rom.kernels.inner_path). Importable without triton: the jit
helpers are then not defined.
"""

from __future__ import annotations

import torch

from rom.kernels.triton_support import HAS_TRITON, check_launchable, interpreting, tl, triton

if HAS_TRITON:

    @triton.jit
    def program_channels(n_channels, N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
        # grid (batch, channel blocks, ...): this program's batch row, channels and their mask, and the state and
        # time offsets (T: the chunk length)
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < n_channels
        return pid_b, pid_d, offs_d, mask_d, tl.arange(0, N), tl.arange(0, T)

    @triton.jit
    def channel_vector(ptr, offs_d, mask_d):
        # a per-channel fp32 vector (D, delta_bias) for this program's channels
        return tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)


    # ------------------------------------------------------------------------------------------------
    # v2: one thread (or a few) per channel, the d_state axis inside the thread, a plain sequential loop
    # over time. Tiles are (N, BLOCK_D): Triton's default layout puts BLOCK_D on the lanes and N in
    # registers, so the per-step work is ~5 instructions per state element and sums over N stay in-thread.
    # ------------------------------------------------------------------------------------------------

    @triton.jit
    def ex2(x, FAST: tl.constexpr):
        if FAST:  # MUFU.EX2 without the denormal fix-up ptxas adds around the non-ftz form
            r = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = tl.exp2(x)
        return r

    @triton.jit
    def lg2(x, FAST: tl.constexpr):
        if FAST:
            r = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = tl.log2(x)
        return r

    @triton.jit
    def rcp(x, FAST: tl.constexpr):
        if FAST:
            r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        else:
            r = 1.0 / x
        return r

    @triton.jit
    def sigmoid_fast(x, FAST: tl.constexpr):
        return rcp(1.0 + ex2(-x * 1.4426950408889634, FAST), FAST)

    @triton.jit
    def softplus_fast(x, FAST: tl.constexpr):
        # log(1 + e^x): identity above 20; a 3-term series of log1p below -4 (where 1 + e^x loses digits)
        e = ex2(x * 1.4426950408889634, FAST)
        series = e * (1.0 - e * (0.5 - e * 0.3333333333333333))
        logp = lg2(1.0 + e, FAST) * 0.6931471805599453
        return tl.where(x > 20.0, x, tl.where(x < -4.0, series, logp))

    @triton.jit
    def pick(tile, sel):
        # column i of a (T, BLOCK_D) tile, or row i of a (T, N) tile: T sits in registers, so this folds
        return tl.sum(tl.where(sel, tile, 0.0), axis=0)

    @triton.jit
    def load_chunk(ptr_rows, s_l, tt, m_tile):
        # (T, BLOCK_D) tile of one chunk: each lane reads its channel's T consecutive steps (one sector)
        return tl.load(ptr_rows[None, :] + tt[:, None] * s_l, mask=m_tile, other=0.0).to(tl.float32)

    @triton.jit
    def step_row(base, t, offs_n, seq_len, N: tl.constexpr):
        # one step's N values of a (L, N) fp32 array (B_t or C_t); zeros outside [0, seq_len)
        return tl.load(base + t * N + offs_n, mask=(offs_n < N) & (t >= 0) & (t < seq_len), other=0.0)

    @triton.jit
    def v2_program(A_ptr, s_A_n, s_A_d, n_channels, N: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
        # the v2 kernels' common start: this program's channels, A^T's (N, BLOCK_D) tile in fp32, and A2 = A log2 e
        # (exp(dt A) is computed as exp2(dt A2))
        pid_b, pid_d, offs_d, mask_d, offs_n, offs_t = program_channels(n_channels, N, BLOCK_D, T)
        A = tl.load(A_ptr + offs_n[:, None] * s_A_n + offs_d[None, :] * s_A_d,
                    mask=mask_d[None, :], other=0.0).to(tl.float32)
        return pid_b, pid_d, offs_d, mask_d, offs_n, offs_t, A, A * 1.4426950408889634

    @triton.jit
    def chunk_range(s, span, n_chunks):
        # chunks [s * span, min((s + 1) * span, n_chunks)) of segment or sub-segment s
        c_lo = s * span
        return c_lo, tl.minimum(c_lo + span, n_chunks)

    @triton.jit
    def compose_segments(sum_h_ptr, sum_dt_ptr, pid_b, n_sub, k_first, n_steps, k_step, n_channels,
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
            x = ex2(sdt[None, :] * A2, FAST) * x + xk
        return x


def check_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
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


def fast_math() -> bool:
    # inline PTX (approximate ex2 / lg2 / rcp) cannot run in the Triton interpreter
    return not interpreting()


def summary_buffers(batch: int, rows: int, n_state: int, d_inner: int, device: torch.device):
    """Segment summaries, fp32: states or adjoints (batch, rows, N, d) and sums of delta' (batch, rows, d).

    One-element placeholders when there is nothing to summarise: the kernels then never read them.
    """
    if rows == 0:
        placeholder = torch.empty(1, device=device, dtype=torch.float32)
        return placeholder, placeholder
    return (torch.empty((batch, rows, n_state, d_inner), device=device, dtype=torch.float32),
            torch.empty((batch, rows, d_inner), device=device, dtype=torch.float32))


def fp32_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t as contiguous fp32 in at most one copy. ``t.to(float32).contiguous()`` copies twice when t is a
    non-contiguous view of another dtype (the cast keeps the view's strides, then contiguous() copies again),
    and ``t.to(float32, memory_format=contiguous_format)`` returns a non-contiguous fp32 t unchanged."""
    if t.dtype == torch.float32 or t.is_contiguous():
        return t.to(torch.float32).contiguous()
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


__all__ = ["HAS_TRITON", "check_inputs", "fast_math", "fp32_contiguous", "summary_buffers"]
