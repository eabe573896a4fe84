"""The v2 scan's segment plan (pure Python, no GPU): segments tile the sequence, summaries align with them."""

from __future__ import annotations

import pytest

from rom.kernels.triton_scan import SegmentPlan, plan_segments


def _chunk_ranges(plan: SegmentPlan, n_chunks: int) -> tuple[list[range], list[range]]:
    segs = [range(s * plan.span, min((s + 1) * plan.span, n_chunks)) for s in range(plan.n_seg)]
    subs = [range(k * plan.sub_span, min((k + 1) * plan.sub_span, n_chunks)) for k in range(plan.n_sub)]
    return segs, subs


@pytest.mark.parametrize("programs", [1, 4, 64, 256, 512, 1024, 5000])
@pytest.mark.parametrize("n_chunks", [1, 5, 31, 32, 64, 257, 1024])
@pytest.mark.parametrize("requested", [None, 2, 3, 8])
def test_segments_tile_the_sequence_and_sub_segments_align(programs, n_chunks, requested):
    plan = plan_segments(programs, n_chunks, slots=1584, requested=requested)
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


def test_no_split_once_the_channels_fill_half_the_gpu():
    assert plan_segments(programs=1024, n_chunks=256, slots=1056).n_seg == 1     # anchor backward
    assert plan_segments(programs=512, n_chunks=256, slots=1584).n_seg == 2      # anchor forward
    assert plan_segments(programs=256, n_chunks=256, slots=1584).n_seg == 4      # 15M model forward
    assert plan_segments(programs=4, n_chunks=256, slots=1584).n_seg == 8        # at most 8
    # too short to split: segments are at least V2_MIN_SEGMENT_CHUNKS chunks
    assert plan_segments(programs=4, n_chunks=31, slots=1584).n_seg == 1
    assert plan_segments(programs=4, n_chunks=32, slots=1584).n_seg == 2
