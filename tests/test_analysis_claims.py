"""analysis.claims: the arithmetic on constructed cases with known answers, and the verdict rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.claims import (
    DOWNSTREAM_COLUMNS,
    Verdict,
    claims_document,
    compute_claims,
    downstream_table,
    equivalence_ratio,
    flops_saving,
    interval_verdict,
    load_claims,
    percentile_ci,
)
from analysis.collect import collect, runs_at_train_length
from analysis.families import Family
from analysis.fit import FitKind, FlopConvention, fit_all, fit_family, power_law
from analysis.outputs import CLAIMS, claim_id
from analysis.synthetic import dense_loss, scaling_study, synthetic_record, write_study

E, A, ALPHA = 1.8, 400.0, 0.35
SIZES = (1_000_000, 2_000_000, 4_000_000, 8_000_000, 16_000_000)


def _table(tmp_path: Path, records: list[dict]) -> pd.DataFrame:
    return collect(write_study(records, tmp_path / "raw", metrics=False))


def _claims(df: pd.DataFrame, flops: FlopConvention = FlopConvention.TRAIN_TOTAL, bootstrap: int = 20):
    fits = {f.key: f for f in fit_all(df, flop_convention=flops, bootstrap=bootstrap, seed=0)}
    return {c.id: c for c in compute_claims(df, fits)}, fits


# ------------------------------------------------------------------------------- pure arithmetic


def test_exact_2x_equivalence_arithmetic() -> None:
    params = {"E": E, "A": A, "alpha": ALPHA}
    n_r = 3_000_000
    loss = float(power_law(2 * n_r, E, A, ALPHA))
    assert equivalence_ratio(params, n_r, loss) == pytest.approx(2.0, rel=1e-12)


def test_exact_30_percent_saving_arithmetic() -> None:
    params = {"E": 2.0, "B": 1e6, "beta": 0.3}
    c_dense = 1e18
    loss = float(power_law(c_dense, 2.0, 1e6, 0.3))
    assert flops_saving(params, 0.7 * c_dense, loss) == pytest.approx(0.3, rel=1e-12)


def test_no_inverse_below_the_asymptote() -> None:
    assert math.isinf(equivalence_ratio({"E": E, "A": A, "alpha": ALPHA}, 1e6, E - 0.01))
    assert flops_saving({"E": 2.0, "B": 1e6, "beta": 0.3}, 1e18, 1.99) == 1.0


def test_interval_verdict_rule() -> None:
    assert interval_verdict((1.5, 3.0), 1.0, 2.3)[0] == Verdict.SUPPORTED
    assert interval_verdict((2.5, 3.0), 1.0, 2.3)[0] == Verdict.SUPPORTED  # exceeds the paper
    assert interval_verdict((1.2, 2.0), 1.0, 2.3)[0] == Verdict.NOT_SUPPORTED  # excludes the paper's value
    assert interval_verdict((0.5, 0.9), 1.0, 2.3)[0] == Verdict.NOT_SUPPORTED  # no advantage at all
    assert interval_verdict((0.8, 3.0), 1.0, 2.3)[0] == Verdict.INCONCLUSIVE  # contains 1 and 2.3
    assert interval_verdict(None, 1.0, 2.3)[0] == Verdict.INCONCLUSIVE


def test_percentile_ci_tolerates_inf() -> None:
    assert percentile_ci([1.0, 2.0, 3.0, math.inf], 0.5) == (1.0, math.inf)  # order statistics, no NaN
    assert percentile_ci([3.0, 1.0, 2.0, 4.0, 5.0], 0.5) == (2.0, 4.0)
    assert math.isinf(percentile_ci([1.0] + [math.inf] * 9, 0.95)[1])


def test_dense_counterpart() -> None:
    assert Family(hybrid=False, ssm="rom", moe=False).dense_counterpart().name == "mamba"
    assert Family(hybrid=True, ssm="rom", moe=False).dense_counterpart().name == "hybrid-mamba"
    assert Family(hybrid=True, ssm="rom", moe=True).dense_counterpart().name == "hybrid-mamba+moe"
    assert Family(hybrid=True, ssm="mamba", moe=True).dense_counterpart().name == "hybrid-mamba+moe"


def claim_context(df: pd.DataFrame):
    return {c.id: c for c in compute_claims(df, {})}[claim_id("context")]


def claim_downstream(runs: pd.DataFrame):
    return {c.id: c for c in compute_claims(runs, {})}[claim_id("downstream")]


def test_claims_come_in_the_order_of_the_outputs_list(tmp_path: Path) -> None:
    assert [c.id for c in compute_claims(_table(tmp_path, _study(2.0)), {})] == list(CLAIMS)


# ------------------------------------------------------------------------------- end to end on records


def _study(equivalence: float, rom_sizes=(2_000_000, 4_000_000), hybrids: bool = False) -> list[dict]:
    return scaling_study(E=E, A=A, alpha=ALPHA, sizes=SIZES, rom_sizes=rom_sizes, equivalence=equivalence,
                         noise=0.0, hybrids=hybrids, downstream=False)


def test_claim_a_exact_2x_is_not_the_papers_2_3(tmp_path: Path) -> None:
    claims, _ = _claims(_table(tmp_path, _study(2.0)))
    a = claims["a"]
    assert a.ours == pytest.approx(2.0, rel=1e-4)
    assert a.ci is not None and a.ci[0] == pytest.approx(2.0, rel=1e-3) and a.ci[1] == pytest.approx(2.0, rel=1e-3)
    assert a.verdict == Verdict.NOT_SUPPORTED
    assert a.headline.startswith("rom-4000k")  # the largest RoM run is the headline
    assert all(d["value"] == pytest.approx(2.0, rel=1e-4) for d in a.details)
    assert not a.extrapolated


def test_claim_a_3x_within_range_is_supported(tmp_path: Path) -> None:
    claims, _ = _claims(_table(tmp_path, _study(3.0, rom_sizes=(1_000_000, 4_000_000))))
    a = claims["a"]
    assert a.ours == pytest.approx(3.0, rel=1e-4) and not a.extrapolated  # 4M * 3 = 12M < 16M
    assert a.verdict == Verdict.SUPPORTED


def test_claim_a_extrapolated_readoff_is_inconclusive(tmp_path: Path) -> None:
    claims, _ = _claims(_table(tmp_path, _study(3.0, rom_sizes=(2_000_000, 8_000_000))))
    a = claims["a"]
    assert a.ours == pytest.approx(3.0, rel=1e-4)
    assert a.extrapolated  # 8M * 3 = 24M lies beyond the largest dense run (16M)
    assert a.verdict == Verdict.INCONCLUSIVE  # the CI would support it, but only through extrapolation
    assert "extrapolated" in a.reason and "would be supported" in a.reason


def test_claim_b_exact_30_percent_saving(tmp_path: Path) -> None:
    # With C = 6 N D at one token budget, L(C) is exactly a power law; a RoM run whose loss equals the dense
    # loss at N_r / 0.7 saves exactly 30% of the FLOPs.
    recs = _study(1.0, rom_sizes=())
    n_r = 3_000_000
    recs.append(synthetic_record(name="rom-3m", family="rom", num_experts=8, n_active_nonembedding=n_r,
                                 loss=dense_loss(n_r / 0.7, E, A, ALPHA)))
    claims, fits = _claims(_table(tmp_path, recs), FlopConvention.SIX_ND)
    b = claims["b"]
    assert b.ours == pytest.approx(0.3, rel=1e-4)
    assert b.verdict == Verdict.SUPPORTED  # CI ~ [0.3, 0.3]: above 0 and above the paper's 0.23
    assert "fell back to pure RoM" in b.reason
    assert fits["flops:mamba"].flop_convention == "6ND"


def test_claim_b_prefers_hybrids(tmp_path: Path) -> None:
    claims, _ = _claims(_table(tmp_path, _study(2.0, hybrids=True)), FlopConvention.SIX_ND)
    b = claims["b"]
    assert b.headline.startswith("hybrid-rom") and "fell back" not in b.reason
    assert b.ours == pytest.approx(0.5, rel=1e-3)  # 2x parameters at equal tokens = half the FLOPs


def test_no_inverse_is_reported_not_raised(tmp_path: Path) -> None:
    recs = _study(1.0, rom_sizes=())
    recs.append(synthetic_record(name="rom-magic", family="rom", num_experts=8, n_active_nonembedding=8_000_000,
                                 loss=E - 0.2))
    claims, fits = _claims(_table(tmp_path, recs))
    a = claims["a"]
    assert a.verdict == Verdict.INCONCLUSIVE and a.ours is None
    assert "asymptote" in a.reason and "no inverse" in a.reason
    assert a.details[0]["value"] is None and math.isinf(a.details[0]["x_dense"])
    # Through JSON and into the figure: the read-off says "no read-off" instead of failing.
    import json

    import matplotlib.pyplot as plt

    from analysis.figures import fig_loss_vs_params

    back = load_claims(json.loads(json.dumps(claims_document(list(claims.values())))))
    assert math.isinf(back[0].details[0]["x_dense"])
    notes: list[str] = []
    fig = fig_loss_vs_params(_table(tmp_path / "again", recs), fits, back, notes)
    assert any("no read-off" in t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)


def test_no_usable_dense_fit_is_inconclusive(tmp_path: Path) -> None:
    recs = _study(2.0)[:2] + [r for r in _study(2.0) if r["family"] == "rom"]
    claims, _ = _claims(_table(tmp_path, recs))
    assert claims["a"].verdict == Verdict.INCONCLUSIVE and "too_few_points" in claims["a"].reason
    assert claims["b"].verdict == Verdict.INCONCLUSIVE


def _context_study(rom_growth: float, dense_growth: float) -> list[dict]:
    recs = []
    for T in (128, 256):
        recs.append(synthetic_record(name=f"m{T}", n_active_nonembedding=1_000_000, loss=3.0, seq_len=T,
                                     ppl_growth=dense_growth))
        recs.append(synthetic_record(name=f"r{T}", family="rom", num_experts=8, n_active_nonembedding=1_000_000,
                                     loss=2.9, seq_len=T, ppl_growth=rom_growth))
    return recs


@pytest.mark.parametrize("rom_growth,dense_growth,verdict", [
    (0.0, 0.2, Verdict.SUPPORTED),
    (0.1, 0.05, Verdict.NOT_SUPPORTED),
    (0.1, 0.2, Verdict.INCONCLUSIVE),
])
def test_claim_c_rule(tmp_path: Path, rom_growth: float, dense_growth: float, verdict: Verdict) -> None:
    c = claim_context(_table(tmp_path, _context_study(rom_growth, dense_growth)))
    assert c.verdict == verdict, c.reason
    assert c.ours == pytest.approx(math.exp(2 * rom_growth), rel=1e-9)  # worst ratio, at 4x
    lengths = {d["train_seq_len"] for d in c.details}
    assert lengths == {128, 256}


def test_claim_c_without_long_evals(tmp_path: Path) -> None:
    recs = [synthetic_record(name="r", family="rom", num_experts=8, n_active_nonembedding=1_000_000, loss=3.0,
                             context_multipliers=(1,))]
    assert claim_context(_table(tmp_path, recs)).verdict == Verdict.INCONCLUSIVE


def _scores(avg: float) -> dict:
    return {"lambada_openai": {"acc": avg}, "hellaswag": {"acc": 0.0, "acc_norm": avg}, "piqa": {"acc": avg},
            "arc_easy": {"acc": avg}, "arc_challenge": {"acc": 0.0, "acc_norm": avg}, "winogrande": {"acc": avg}}


def test_claim_d_table_order_and_rule(tmp_path: Path) -> None:
    recs = [synthetic_record(name="m1", n_active_nonembedding=1_000_000, loss=3.0, downstream=_scores(0.40)),
            synthetic_record(name="m8", n_active_nonembedding=8_000_000, loss=2.8, downstream=_scores(0.50)),
            synthetic_record(name="r1", family="rom", num_experts=8, n_active_nonembedding=1_200_000, loss=2.9,
                             downstream=_scores(0.45)),
            synthetic_record(name="plain", n_active_nonembedding=2_000_000, loss=2.9)]
    runs = runs_at_train_length(_table(tmp_path, recs))
    table = downstream_table(runs)
    assert list(table.columns[3:9]) == [t for _, _, t in DOWNSTREAM_COLUMNS]
    assert len(table) == 3  # the run without scores is not listed
    assert table.set_index("run_id").loc[recs[2]["run_id"], "Average"] == pytest.approx(0.45)
    d = claim_downstream(runs)
    pair = d.details[0]["pairs"][0]
    assert pair["dense_run"] == recs[0]["run_id"]  # nearest in active parameters
    assert pair["difference"] == pytest.approx(0.05) and d.verdict == Verdict.SUPPORTED
    recs[2]["downstream"] = _scores(0.395)
    d2 = claim_downstream(runs_at_train_length(_table(tmp_path / "b", recs)))
    assert d2.verdict == Verdict.INCONCLUSIVE  # 0.5 point worse: within the 1-point margin
    recs[2]["downstream"] = _scores(0.30)
    d3 = claim_downstream(runs_at_train_length(_table(tmp_path / "c", recs)))
    assert d3.verdict == Verdict.NOT_SUPPORTED


def test_claim_d_without_scores(tmp_path: Path) -> None:
    runs = runs_at_train_length(_table(tmp_path, _study(2.0)))
    d = claim_downstream(runs)
    assert d.verdict == Verdict.INCONCLUSIVE and "no downstream" in d.reason


def test_claims_round_trip(tmp_path: Path) -> None:
    import json

    claims, _ = _claims(_table(tmp_path, _study(2.0)))
    doc = json.loads(json.dumps(claims_document(list(claims.values()))))
    back = {c.id: c for c in load_claims(doc)}
    assert back["a"].ours == claims["a"].ours and back["a"].verdict == claims["a"].verdict
    assert back["a"].ci == claims["a"].ci


def test_rom_fit_of_its_own(tmp_path: Path) -> None:
    # Families are fitted separately; the RoM family's own L(N) recovers the shifted law N -> 2N.
    df = _table(tmp_path, _study(2.0, rom_sizes=(1_000_000, 2_000_000, 4_000_000, 8_000_000)))
    fit = fit_family(df, "rom", FitKind.PARAMS, bootstrap=0)
    assert fit.params["alpha"] == pytest.approx(ALPHA, rel=1e-4)
    assert fit.params["A"] == pytest.approx(A * 2**-ALPHA, rel=1e-3)


def _seed_copy(record: dict, seed: int, shift: float) -> dict:
    """A seed replicate of ``record``: same config but train.seed, every loss moved by ``shift`` nats."""
    r = json.loads(json.dumps(record))
    r["name"], r["role"] = f"{record['name']}-seed{seed}", "seed"
    r["config"]["name"], r["config"]["role"] = r["name"], "seed"
    r["config"]["train"]["seed"] = seed
    r["run_id"] = f"{r['name']}-{record['run_id'].rsplit('-', 1)[1]}"
    for e in r["eval"]["results"]:
        e["loss"] += shift
        e["ppl"] = math.exp(e["loss"])
    if "training" in r:
        r["training"]["seed"] = seed
    return r


def test_the_headline_reads_the_mean_of_its_seed_replicates_with_their_noise(tmp_path: Path) -> None:
    """A single run's loss is one draw: the headline is read at the mean loss of the run and its seed replicates,
    and its interval adds that mean's seed noise (sigma / sqrt(k)) to the dense fit's bootstrap, where the
    noise-free fit alone would give a zero-width interval."""
    records = _study(2.0)
    head = next(r for r in records if r["name"] == "rom-4000k")
    records += [_seed_copy(head, 1, 0.02), _seed_copy(head, 2, -0.02)]  # mean unchanged, sigma 0.02
    claims, _ = _claims(_table(tmp_path, records), bootstrap=200)
    a = claims["a"]
    per_family = next(d for d in a.details if d.get("headline") and d["run_id"] == head["run_id"])
    assert per_family["loss"] == pytest.approx(next(e["loss"] for e in head["eval"]["results"]
                                                    if e["context_length"] == 256), abs=1e-9)
    assert per_family["value"] == pytest.approx(2.0, rel=1e-4)  # read at the mean: the 2x law holds there
    lo, hi = per_family["ci"]
    assert lo < 1.97 and hi > 2.03  # sigma/sqrt(3) = 0.0115 nats moves N_eq by several % at 95%
    assert "mean loss of 3 seed replicates" in per_family["note"] and "/sqrt(3)" in per_family["note"]

    plain, _ = _claims(_table(tmp_path / "plain", _study(2.0)), bootstrap=200)
    d = next(d for d in plain["a"].details if d.get("headline"))
    assert "seed" not in d["note"]  # no seed runs anywhere: no noise known, the read-off is as before
    assert d["ci"][1] - d["ci"][0] < 1e-3
