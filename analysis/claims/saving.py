"""Claim (b), training-FLOPs saving at matched loss (paper: 23% for hybrids).

C_dense = L_dense^-1(L_r) from the dense counterpart's L(C) fit; saving = 1 - C_r / C_dense. Hybrids (RoM
hybrid against the Mamba hybrid) when a usable pair exists, else pure RoM against dense Mamba, with a note.
Verdict: ``RULE_INTERVAL`` with null 0 and the paper's 0.23, and a CI no wider than +-0.08 in saving. The
headline is the pooled L(C) fit of the headline pair when it converged; views: the per-family read-off, the
exponent per family, FLOPs without the LM head, the measured wall-clock saving; the prediction at 1.3e9
active parameters where the pair's pooled fit is usable.
"""

from __future__ import annotations

import pandas as pd

from analysis.claims.common import (Claim, ClaimInputs, ReportSection, WidthRule, dense_fit, interval_claim,
                                    readoff_section, rom_runs, with_pooled)
from analysis.families import Family
from analysis.fit import FitKind, power_law_inverse
from analysis.pooled import PooledX

PAPER_SAVING = 0.23
TITLE = "Training-FLOPs saving at matched loss 1 - C_r / C_dense(L_r)"
PAPER_TEXT = "0.23 (23% saving, hybrids)"
FALLBACK_NOTE = "no usable hybrid pair: fell back to pure RoM vs dense Mamba"
WIDTH = WidthRule(0.08, log=False)  # issue 23: a CI no wider than +-0.08 in saving to decide


def flops_saving(params: dict[str, float], c_run: float, loss: float) -> float:
    """1 - C_r / C_dense(L_r) with C_dense = (B / (L_r - E))^(1/beta); 1.0 when L_r <= E (no inverse)."""
    c_dense = power_law_inverse(loss, params["E"], params["B"], params["beta"])
    return 1.0 - c_run / c_dense  # c_run / inf == 0 -> saving 1


def preference(family: Family) -> tuple:
    """Headline order: hybrids first (the paper's claim), then without FFN-MoE before with."""
    return (not family.hybrid, family.moe, family.ssm)


def compute(claim_id: str, inputs: ClaimInputs) -> Claim:
    families = sorted(inputs.routed(), key=preference)

    def c_of(r: pd.Series) -> float:
        return float(inputs.flops.values(r.to_frame().T, inputs.params)[0])

    def usable(f: Family) -> bool:
        fit = dense_fit(inputs, FitKind.FLOPS, f)
        return not rom_runs(inputs.runs, f).empty and fit is not None and fit.ok

    has_hybrid = any(usable(f) for f in families if f.hybrid)
    per_family = interval_claim(claim_id, TITLE, PAPER_TEXT, PAPER_SAVING, 0.0, FitKind.FLOPS, families, inputs,
                                c_of, "saving", "" if has_hybrid else FALLBACK_NOTE, width=WIDTH)
    return with_pooled(per_family, inputs, families, PooledX.FLOPS, 0.0, PAPER_SAVING, WIDTH)


def report_sections(claim: Claim) -> list[ReportSection]:
    return readoff_section(claim)
