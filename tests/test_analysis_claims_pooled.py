"""Claims (a) and (b) with the pooled fits of issue 24: headline, width rule, prediction in claims.json."""

from __future__ import annotations

import json

import pytest

from analysis.claims import compute_claims
from analysis.claims.common import Verdict, WidthRule, width_verdict
from analysis.fit import fit_all
from analysis.pooled import pooled_all
from analysis.synthetic import pooled_study, table


def test_width_rule_blocks_a_verdict_on_a_wide_interval() -> None:
    rule = WidthRule(0.2, log=True)
    assert width_verdict((2.4, 2.9), 1.0, 2.3, rule)[0] == Verdict.SUPPORTED
    v, why = width_verdict((1.5, 4.0), 1.0, 2.3, rule)  # lo > 1, hi >= 2.3, but ln(4/1.5)/2 = 0.49
    assert v == Verdict.INCONCLUSIVE and "too wide" in why
    assert width_verdict((1.1, 1.3), 1.0, 2.3, rule)[0] == Verdict.NOT_SUPPORTED
    lin = WidthRule(0.08, log=False)
    assert width_verdict((0.05, 0.30), 0.0, 0.23, lin)[0] == Verdict.INCONCLUSIVE
    assert width_verdict((0.20, 0.30), 0.0, 0.23, lin)[0] == Verdict.SUPPORTED


@pytest.fixture(scope="module")
def claims():
    df = table(pooled_study(equivalence=3.0, noise=0.001, seed=2))
    fits = {f.key: f for f in fit_all(df, bootstrap=100, seed=0)}
    pooled = {p.key: p for p in pooled_all(df, [("mamba", "rom")], bootstrap=100, seed=0)}
    return {c.id: c for c in compute_claims(df, fits, pooled=pooled)}


def test_pooled_fit_is_the_headline_of_claim_a_with_a_prediction(claims) -> None:
    a = claims["a"]
    assert a.headline_fit == "pooled:params:mamba+rom"
    assert a.ours == pytest.approx(3.0, rel=0.02) and a.ci[0] < 3.0 < a.ci[1]
    assert a.verdict == Verdict.SUPPORTED, a.reason
    assert "per-family read-off" in a.reason
    whats = [v["what"] for v in a.views]
    assert any("per-family" in w for w in whats) and any("exponent per family" in w for w in whats)
    assert any("embeddings" in w for w in whats)
    d = json.loads(json.dumps(a.to_dict()["prediction"]))
    assert d["n_active"] == 1.3e9 and len(d["interval"]) == 2 and d["method"] and d["value"] > 1


def test_claim_b_reports_flops_views_and_prediction(claims) -> None:
    b = claims["b"]
    assert b.headline_fit == "pooled:flops:mamba+rom"
    whats = " ".join(v["what"] for v in b.views)
    assert "without the LM head" in whats and "wall-clock" in whats
    assert b.prediction is not None and b.prediction["quantity"] == "saving"
