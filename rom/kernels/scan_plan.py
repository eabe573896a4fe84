"""The v2 scan's segment planner: block shapes and how many segments along time each kernel launch uses.

Pure Python (no triton), so it is tested on CPU (tests/test_scan_segments.py). The launchers in
rom.kernels.triton_scan_fwd / triton_scan_bwd call ``v2_launch`` on every call; it is memoised per shape.

The v2 time loop is latency-bound per warp and its occupancy register-bound, so a kernel's time is about
(waves of programs) x (steps per program). When a layer has too few channels to fill the GPU, the sequence is
split into segments scanned in parallel: each segment starts from a carry composed of per-sub-segment
summaries (the end state and sum of delta' forward, the adjoint handed left backward) that two small kernels
compute first. ``plan_segments`` picks the segment count of least modelled time (docs/gpu_kernels.md,
"Segments along time", has the measurements behind the constants below).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)   # rom.kernels.triton_support.cdiv, without importing triton


V2_CHUNK = 8  # steps per checkpoint in v2 (the backward keeps the chunk's 8 states in registers)
# v2 block shapes per d_state: (BLOCK_D, num_warps) for forward and backward; from benchmarks/gpu_scan.py --sweep
V2_FWD_CONFIGS: dict[int, tuple[int, int]] = {}
V2_BWD_CONFIGS: dict[int, tuple[int, int]] = {}
# Segments along time. The v2 time loop is latency-bound per warp and its occupancy register-bound. Per program a
# step costs about the same from one resident warp to a full SM, so a kernel's time is about (waves of programs)
# x (steps per program). V2_RESIDENT_PER_SM: one-warp programs resident per SM at d_state 16 (set by their
# register counts); V2_SUMMARY_COST: a summary kernel's time per chunk-step over its main kernel's (measured
# with benchmarks/gpu_scan_occupancy.py; docs/gpu_kernels.md); V2_MIN_SEGMENT_CHUNKS: the shortest segment, in
# chunks; V2_SUMMARY_SUBSEGMENTS: sub-segments per summary pass.
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


def split_segments(n_seg: int, n_chunks: int) -> SegmentPlan:
    if n_seg == 1:
        return SegmentPlan(1, n_chunks, 1, n_chunks, 1)
    n_sub = n_seg   # finer summaries give the summary pass more parallel work (sub-segments of >= 4 chunks)
    while n_sub < V2_SUMMARY_SUBSEGMENTS and n_chunks >= 8 * n_sub:
        n_sub *= 2
    sub_span = _cdiv(n_chunks, n_sub)
    sub_per_seg = n_sub // n_seg
    span = sub_span * sub_per_seg
    return SegmentPlan(_cdiv(n_chunks, span), span, _cdiv(n_chunks, sub_span), sub_span, sub_per_seg)


def plan_cost(plan: SegmentPlan, occ: ScanOccupancy) -> float:
    """Modelled time in main-kernel chunk-steps: waves x span, plus the summary pass's waves x sub_span."""
    cost = _cdiv(occ.programs * plan.n_seg, occ.slots) * plan.span
    n_sum = plan.summaries(occ.backward)
    if n_sum:
        cost += _cdiv(occ.summary_programs * n_sum, occ.summary_slots) * plan.sub_span * occ.summary_cost
    return cost


def plan_segments(n_chunks: int, occ: ScanOccupancy, requested: int | None = None) -> SegmentPlan:
    """The segment count (1, 2, 4 or 8) of least modelled time; ``requested`` forces one (tests, benchmarks).

    A split must save at least 5% of the modelled time: every segment boundary costs summaries, and the
    model ignores that a full SM runs each warp a little slower than a lone one.
    """
    if requested is not None:
        return split_segments(max(1, min(int(requested), n_chunks)), n_chunks)
    best = split_segments(1, n_chunks)
    best_cost = plan_cost(best, occ)
    n_seg = 2
    while n_seg <= 8 and n_chunks >= n_seg * V2_MIN_SEGMENT_CHUNKS:
        plan = split_segments(n_seg, n_chunks)
        cost = plan_cost(plan, occ)
        if cost < 0.95 * best_cost:
            best, best_cost = plan, cost
        n_seg *= 2
    return best


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_sms(device: torch.device) -> int:
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 132   # the Triton interpreter runs on the CPU


def v2_launch(n_state: int, backward: bool, batch: int, d_inner: int, n_chunks: int, device: torch.device,
              config: tuple[int, ...] | None) -> tuple[int, int, SegmentPlan]:
    """(BLOCK_D, num_warps, segments) for a v2 kernel; ``config`` = (BLOCK_D, num_warps[, segments]) overrides.

    Memoised per shape and SM count: planning is pure Python on the host's critical path of every call.
    """
    return v2_plan(n_state, backward, batch, d_inner, n_chunks, device_sms(device),
                   tuple(config) if config is not None else None)


@functools.lru_cache(maxsize=1024)
def v2_plan(n_state: int, backward: bool, batch: int, d_inner: int, n_chunks: int, sms: int,
            config: tuple[int, ...] | None) -> tuple[int, int, SegmentPlan]:
    """v2_launch for a device of ``sms`` SMs.

    Forward: one lane per channel at N=16 (16 states in registers), 4 lanes at N=64. Backward keeps the chunk's
    8 states per lane: 4 lanes per channel at N=16 (4 states each), 8 at N=64 (255 registers). Too few channels
    are made up for by segments; when the sequence is too short for that too, the state axis is spread over
    more lanes (more warps, more shuffles).
    """
    kind = "bwd" if backward else "fwd"

    def occupancy(block: int) -> ScanOccupancy:
        return ScanOccupancy(batch * _cdiv(d_inner, block), sms * V2_RESIDENT_PER_SM[kind],
                             batch * _cdiv(d_inner, summary_block(n_state)),
                             sms * V2_RESIDENT_PER_SM[kind + "_summary"], V2_SUMMARY_COST[kind], backward)

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


def summary_block(n_state: int) -> int:
    return 32 if n_state <= 16 else 8   # the summaries hold one state set per lane (no chunk buffer)


__all__ = ["V2_BWD_CONFIGS", "V2_CHUNK", "V2_FWD_CONFIGS", "V2_MIN_SEGMENT_CHUNKS", "V2_RESIDENT_PER_SM",
           "V2_SUMMARY_COST", "V2_SUMMARY_SUBSEGMENTS", "ScanOccupancy", "SegmentPlan", "device_sms", "plan_cost",
           "plan_segments", "split_segments", "summary_block", "v2_launch", "v2_plan"]
