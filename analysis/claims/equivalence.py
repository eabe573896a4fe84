"""Claim (a), active-parameter equivalence (paper: RoM matches a dense Mamba with > 2.3x its active
parameters, at 1.3B active and 16K training length).

For each RoM run, N_eq = L_dense^-1(L_r) from the dense counterpart's L(N) fit; ratio = N_eq / N_r. The
headline is the largest run of the first routed family in the order: pure, hybrid, pure +moe, hybrid +moe.
Verdict: ``RULE_INTERVAL`` with null 1 and the paper's 2.3, and a CI no wider than +-0.2 on ln(ratio). The
headline is the pooled fit (dense and RoM together, one ratio) when it converged; the per-family read-off is
a view; the prediction at 1.3e9 active parameters comes from the pooled fits (``analysis.prediction``).
"""

from __future__ import annotations

from analysis.claims.common import (Claim, ClaimInputs, ReportSection, WidthRule, interval_claim, readoff_section,
                                    with_pooled)
from analysis.families import Family
from analysis.fit import FitKind, power_law_inverse
from analysis.pooled import PooledX

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
    return with_pooled(per_family, inputs, families, PooledX.PARAMS, 1.0, PAPER_EQUIVALENCE, WIDTH)


def report_sections(claim: Claim) -> list[ReportSection]:
    return readoff_section(claim)
