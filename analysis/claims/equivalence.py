"""Claim (a), active-parameter equivalence (paper: RoM matches a dense Mamba with > 2.3x its active
parameters, at 1.3B active and 16K training length).

For each RoM run, N_eq = L_dense^-1(L_r) from the dense counterpart's L(N) fit; ratio = N_eq / N_r. The
headline is the largest run of the first routed family in the order: pure, hybrid, pure +moe, hybrid +moe.
Verdict: ``RULE_INTERVAL`` with null 1 and the paper's 2.3, and a CI no wider than +-0.2 on ln(ratio). The
headline is the pooled fit (dense and RoM together, one ratio) when it converged; the per-family read-off is
a view; the prediction at 1.3e9 active parameters comes from the pooled fits (``analysis.prediction``).

Token budgets (issue 23): with WSD cooldown branches the pooled L(N) fit has several budgets and a shared
B D^-beta term, so its ratio is one number for every budget. Whether RoM's advantage changes with tokens per
parameter is read from the pooled fits at each budget alone (``analysis.pooled.pooled_by_budget``): one
``BudgetRatio`` per budget and the trend between them, added to the views.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np

from analysis.collect import main_budget
from analysis.claims.common import (Claim, ClaimInputs, ReportSection, WidthRule, interval_claim, readoff_section,
                                    with_pooled)
from analysis.families import Family
from analysis.fit import FitKind, power_law_inverse
from analysis.pooled import PooledX, budget_key

PAPER_EQUIVALENCE = 2.3
TITLE = "Active-parameter equivalence ratio N_eq / N_r"
PAPER_TEXT = "> 2.3x (1.3B active, 16K training length)"
WIDTH = WidthRule(0.2, log=True)  # issue 23: a 95% CI on ln(ratio) no wider than +-0.2 to decide


def equivalence_ratio(params: dict[str, float], n_run: float, loss: float) -> float:
    """N_eq / N_r with N_eq = (A / (L_r - E))^(1/alpha); inf when L_r <= E (no inverse)."""
    return power_law_inverse(loss, params["E"], params["A"], params["alpha"]) / n_run


def preference(family: Family) -> tuple:
    """Headline order: pure before hybrid, then without FFN-MoE before with (rom, hybrid-rom, rom+moe, ...)."""
    return (family.moe, family.hybrid, family.ssm)


def compute(claim_id: str, inputs: ClaimInputs) -> Claim:
    families = sorted(inputs.routed(), key=preference)
    column = inputs.params.column
    per_family = interval_claim(claim_id, TITLE, PAPER_TEXT, PAPER_EQUIVALENCE, 1.0, FitKind.PARAMS, families,
                                inputs, lambda r: r[column], "ratio", width=WIDTH)
    claim = with_pooled(per_family, inputs, families, PooledX.PARAMS, 1.0, PAPER_EQUIVALENCE, WIDTH)
    views = budget_views(budget_ratios(inputs, claim, families))
    return replace(claim, views=list(claim.views) + views) if views else claim


@dataclass(frozen=True)
class BudgetRatio:
    """The equivalence ratio of the pooled L(N) fit at one token budget (the points of that budget alone)."""

    tokens: int  # the budget D
    fraction_of_main: float  # D / the study's main budget
    ratio: float | None
    interval: tuple[float, float] | None  # the fit's headline interval (envelope of run and noise bootstraps)
    tokens_per_param: tuple[float, float]  # D / active parameters (embeddings included) of the RoM runs, min, max
    fit_key: str
    status: str
    note: str


def budget_ratios(inputs: ClaimInputs, claim: Claim, families: Sequence[Family]) -> list[BudgetRatio]:
    """One ``BudgetRatio`` per budget of the headline pair's per-budget pooled fits (none with one budget)."""
    head = next((d["family"] for d in claim.details if d.get("headline")), None)
    if head is None:
        head = next((f.name for f in families), None)
    if head is None:
        return []
    dense = inputs.families[head].dense_counterpart().name
    main = main_budget(inputs.df)
    out = []
    for fit in inputs.pooled.values():
        if fit.x_kind != PooledX.PARAMS or (fit.dense_family, fit.rom_family) != (dense, head):
            continue
        if fit.key != budget_key(dense, head, next(iter({int(p.tokens) for p in fit.points}), 0)):
            continue
        tokens = int(fit.points[0].tokens)
        d = fit.get("ratio")
        rom = [p for p in fit.points if p.family == head]
        rom_runs = inputs.df[inputs.df["run_id"].isin([p.run_id for p in rom])].drop_duplicates("run_id")
        tpp = (tokens / rom_runs["params_active"].astype(float)).to_numpy()
        out.append(BudgetRatio(
            tokens=tokens, fraction_of_main=tokens / main if main else math.nan,
            ratio=None if d is None else d.value,
            interval=None if d is None or d.interval is None else (d.interval.lo, d.interval.hi),
            tokens_per_param=(float(tpp.min()), float(tpp.max())) if len(tpp) else (math.nan, math.nan),
            fit_key=fit.key, status=fit.status.value, note=fit.message))
    return sorted(out, key=lambda b: b.tokens)


def budget_trend(ratios: Sequence[BudgetRatio]) -> tuple[float | None, str]:
    """Slope d ln(ratio) / d ln D over the budgets with a ratio, and in words whether the intervals of the
    smallest and the largest budget separate (grows / shrinks) or overlap (no change resolved)."""
    ok = [b for b in ratios if b.ratio is not None and b.ratio > 0 and math.isfinite(b.ratio)]
    if len(ok) < 2:
        return None, "fewer than two budgets with a ratio: no trend"
    x = np.log([b.tokens for b in ok])
    y = np.log([b.ratio for b in ok])
    slope = float(np.polyfit(x, y, 1)[0])
    lo, hi = ok[0], ok[-1]
    if lo.interval is None or hi.interval is None:
        return slope, "no intervals at the smallest and largest budget: direction not resolved"
    if hi.interval[0] > lo.interval[1]:
        words = "grows"
    elif hi.interval[1] < lo.interval[0]:
        words = "shrinks"
    else:
        words = "no change resolved (the intervals overlap)"
    return slope, (f"RoM's advantage {words} from {lo.tokens:,} to {hi.tokens:,} tokens "
                   f"({lo.tokens_per_param[0]:.3g}-{lo.tokens_per_param[1]:.3g} to "
                   f"{hi.tokens_per_param[0]:.3g}-{hi.tokens_per_param[1]:.3g} tokens per active parameter of the "
                   f"RoM runs): ratio {lo.ratio:.3g} [{lo.interval[0]:.3g}, {lo.interval[1]:.3g}] -> {hi.ratio:.3g} "
                   f"[{hi.interval[0]:.3g}, {hi.interval[1]:.3g}]; slope d ln(ratio) / d ln D = {slope:.3g} over "
                   f"{len(ok)} budgets")


def budget_views(ratios: Sequence[BudgetRatio]) -> list[dict[str, Any]]:
    """Claim views: the ratio at each budget, then the trend (empty with fewer than two budgets)."""
    if len(ratios) < 2:
        return []
    views = [{"what": f"pooled fit at token budget {b.tokens:,} ({b.fraction_of_main:g} x the main budget) alone",
              "fit_key": b.fit_key, "value": b.ratio, "interval": None if b.interval is None else list(b.interval),
              "at": b.tokens, "method": "exponent shared, no D term; envelope of run and noise bootstraps",
              "status": b.status, "note": b.note, "budget": asdict(b)} for b in ratios]
    slope, words = budget_trend(ratios)
    views.append({"what": "does RoM's advantage change with tokens per parameter? (ratio against the budget D)",
                  "fit_key": "", "value": slope, "interval": None, "at": None,
                  "method": "least-squares slope of ln(ratio) on ln D over the per-budget pooled fits", "status": "",
                  "note": words})
    return views


def report_sections(claim: Claim) -> list[ReportSection]:
    return readoff_section(claim)
