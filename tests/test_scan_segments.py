"""The v2 scan's segment plan (pure Python, no GPU): segments tile the sequence, summaries align with them, and
the cost model picks the splits the H200 measurements favoured (benchmarks/results/gpu_scan_occupancy_h200.json)."""

from __future__ import annotations

import pytest
import torch

from rom.kernels.scan_plan import ScanOccupancy, SegmentPlan, plan_cost, plan_segments, v2_launch


def _chunk_ranges(plan: SegmentPlan, n_chunks: int) -> tuple[list[range], list[range]]:
    segs = [range(s * plan.span, min((s + 1) * plan.span, n_chunks)) for s in range(plan.n_seg)]
    subs = [range(k * plan.sub_span, min((k + 1) * plan.sub_span, n_chunks)) for k in range(plan.n_sub)]
    return segs, subs


def _occ(programs: int, backward: bool = False) -> ScanOccupancy:
    return ScanOccupancy(programs, 1584, programs, 2772, 1.3, backward)


@pytest.mark.parametrize("programs", [1, 64, 512, 5000])
@pytest.mark.parametrize("n_chunks", [1, 5, 31, 32, 64, 257, 1024])
@pytest.mark.parametrize("requested", [None, 2, 3, 8])
def test_segments_tile_the_sequence_and_sub_segments_align(programs, n_chunks, requested):
    plan = plan_segments(n_chunks, _occ(programs), requested=requested)
    segs, subs = _chunk_ranges(plan, n_chunks)
    # every chunk in exactly one segment and one sub-segment, none empty, in order
    assert [c for r in segs for c in r] == list(range(n_chunks))
    assert [c for r in subs for c in r] == list(range(n_chunks))
    assert all(len(r) > 0 for r in segs + subs)
    # segment s is exactly sub-segments s * sub_per_seg ... (s + 1) * sub_per_seg - 1
    assert plan.span == plan.sub_span * plan.sub_per_seg
    for s, seg in enumerate(segs):
        mine = subs[s * plan.sub_per_seg:(s + 1) * plan.sub_per_seg]
        assert [c for r in mine for c in r] == list(seg)
    if requested is not None:
        assert plan.n_seg <= min(requested, n_chunks)
    # the summaries are the sub-segments a segment's carry is composed from, before / after it
    assert plan.summaries(backward=False) == (plan.n_seg - 1) * plan.sub_per_seg
    assert plan.summaries(backward=True) == plan.n_sub - plan.sub_per_seg


def test_cost_model_counts_waves_and_summaries():
    one = plan_segments(256, _occ(512), requested=1)
    two = plan_segments(256, _occ(512), requested=2)
    assert plan_cost(one, _occ(512)) == 256                       # one wave, 256 chunk-steps
    # 1024 programs still fit one wave of 1584; 4 sub-segments of 32 chunks summarised by 2048 programs
    assert plan_cost(two, _occ(512)) == pytest.approx(128 + 32 * 1.3)


@pytest.mark.parametrize("batch, d_inner, backward, segments", [
    (8, 2048, False, 2),    # anchor forward: 0.606 -> 0.479 ms at 2 segments, 0.555 at 4
    (16, 512, False, 4),    # ~15M forward: 0.570 -> 0.309 ms
    # backward, 4 lanes per channel (2026-12-02): two waves of 8-channel programs at the anchor
    (8, 2048, True, 1),     # anchor: 1.61 ms unsplit, 1.73 at 2 segments, 1.79 at 4
    (8, 1536, True, 2),     # ~115M model: 1.56 ms unsplit, 1.32 at 2, 1.38 at 4 (wave quantisation)
    (4, 2048, True, 1),     # ~350M: one full wave; 0.84 ms unsplit, 0.90 at 2, 0.93 at 4
    (16, 512, True, 1),     # ~15M: 0.84 ms unsplit, 0.91 at 2
])
def test_plan_picks_the_measured_best_split(batch, d_inner, backward, segments):
    _, _, plan = v2_launch(16, backward, batch, d_inner, 256, torch.device("cpu"), None)   # 132 SMs assumed
    assert plan.n_seg == segments


@pytest.mark.parametrize("d_state, backward, block_d", [
    (16, False, 32),   # forward: one lane per channel, 16 states in registers
    (16, True, 8),     # backward: four lanes per channel, 4 states each (2026-12-02: 1.61 vs 2.11 ms at 16)
    (64, False, 8),
    (64, True, 4),
])
def test_default_block_shapes(d_state, backward, block_d):
    got, num_warps, _ = v2_launch(d_state, backward, 8, 2048, 256, torch.device("cpu"), None)
    assert (got, num_warps) == (block_d, 1)


def test_short_sequences_are_not_split():
    assert plan_segments(31, _occ(4)).n_seg == 1      # segments are at least V2_MIN_SEGMENT_CHUNKS long
    assert plan_segments(32, _occ(4)).n_seg == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_fp32_contiguous_copies_at_most_once(dtype, transposed):
    from torch.profiler import profile

    from rom.kernels.triton_scan_common import fp32_contiguous

    base = torch.randn(2, 16, 37).to(dtype)
    t = base.transpose(1, 2) if transposed else base
    with profile() as prof:
        out = fp32_contiguous(t)
    copies = sum(e.count for e in prof.key_averages() if e.key == "aten::copy_")
    assert out.dtype == torch.float32 and out.is_contiguous() and out.shape == t.shape
    assert torch.equal(out, t.float())
    assert copies == (0 if dtype == torch.float32 and not transposed else 1)
