"""The Mamba-width series of claim (b) for hybrids of every SSM architecture: the width it scales is the
architecture's own field (model.mamba.expand, model.mamba2.expand, model.gated_deltanet.expand_v), found from
the records' typed config, never from run names."""
from __future__ import annotations

import pytest

from analysis.series import WIDTH, WIDTH_FIELDS, hybrid_series, width_series
from analysis.synthetic import synthetic_record, table

ARCHS = {  # model.ssm -> (dense hybrid family, routed hybrid family)
    "mamba": ("hybrid-mamba", "hybrid-rom"),
    "mamba2": ("hybrid-mamba2", "hybrid-rom-mamba2"),
    "gated-deltanet": ("hybrid-gated-deltanet", "hybrid-rom-gated-deltanet"),
}


def _records(ssm: str, widths=(1, 2, 4, 8), other: dict | None = None) -> list[dict]:
    section, field = WIDTH_FIELDS[ssm]
    dense, routed = ARCHS[ssm]
    recs = []
    for i, w in enumerate(widths):
        model = {"ssm": ssm, section: {field: w, **(other or {})}}
        recs.append(synthetic_record(name=f"h-w{w}", n_active_nonembedding=1e6 * (1 + 0.4 * i), loss=3.0 - 0.05 * i, family=dense,
                                     model_config=model))
    recs.append(synthetic_record(name="rom-h-w2", n_active_nonembedding=1.2e6, loss=2.93, family=routed, num_experts=8,
                                 model_config={"ssm": ssm, section: {field: 2, **(other or {})}}))
    return recs


@pytest.mark.parametrize("ssm", sorted(ARCHS))
def test_width_series_scales_the_architectures_own_width_field(ssm):
    section, field = WIDTH_FIELDS[ssm]
    w = width_series(table(_records(ssm)))
    assert w is not None and w.kind == WIDTH
    assert w.width_field == f"model.{section}.{field}"
    assert w.expand == (1, 2, 4, 8)
    assert w.dense_family == ARCHS[ssm][0] and w.rom_family == ARCHS[ssm][1]
    assert f"model.{section}.{field} 1, 2, 4, 8" in w.describe()
    assert w.to_dict()["ignored_fields"][-1] == f"model.{section}.{field}"


def test_a_hybrid_differing_in_another_field_of_the_width_section_stays_out():
    recs = _records("mamba2", other={"headdim": 64})
    recs[2]["config"]["model"]["mamba2"]["headdim"] = 32  # h-w4: not only the width differs
    w = width_series(table(recs))
    assert w.expand == (1, 2, 8)


def test_an_architecture_without_a_width_field_has_no_width_series():
    recs = _records("mamba2")
    for r in recs:  # the same records, but their width under another architecture's field
        m = r["config"]["model"]
        m["mamba"] = {"expand": m.pop("mamba2")["expand"]}
    assert not [s for s in hybrid_series(table(recs)) if s.kind == WIDTH]
