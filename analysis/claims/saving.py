"""Claim (b), training-FLOPs saving at matched loss (paper: 23% for hybrids).

C_dense = L_dense^-1(L_r) from the dense counterpart's L(C) fit; saving = 1 - C_r / C_dense. Hybrids (RoM
hybrid against the Mamba hybrid) when a usable pair exists, else pure RoM against dense Mamba, with a note.
Verdict: ``RULE_INTERVAL`` with null 0 and the paper's 0.23, and a CI no wider than +-0.08 in saving. The
headline is the pooled L(C) fit of the headline pair when it converged; views: the per-family read-off, the
exponent per family, FLOPs without the LM head, the measured wall-clock saving; the prediction at 1.3e9
active parameters where the pair's pooled fit is usable.

The paper's 23% compares a RoM hybrid with widening the Mamba layers of the same hybrid densely. Where the
study has such a **Mamba-width series** (``analysis.series``: dense hybrids equal to the RoM hybrid but for
``mamba.expand``, or the width field of another architecture, at least 3 widths), the headline reads the RoM
hybrid (its scaling run, at the mean loss of it and its seeds with their noise, ``common._seed_aware``; its
seeds are points of the pooled fit) against that series alone: the series pooled with the RoM hybrid's runs
(``pooled:flops:<dense>+<rom>@mamba-width:<run>``) when it converged, else the series' own L(C) fit
(``flops:<dense>@mamba-width:<run>``), with the same rule and width; the prediction comes from the series'
pooled fit. Views: the series and its runs, the whole-hybrid series (d_model scaled) read the same way, and
every dense hybrid of the family in one fit (the claim as it reads without a width series). Details: every
read-off, each with the ``series`` it was read against. Without a width series the claim reads as above.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pandas as pd

from analysis.claims.common import (Claim, ClaimInputs, ReportSection, WidthRule, dense_fit, interval_claim,
                                    readoff_section, rom_runs, with_pooled)
from analysis.collect import runs_at_train_length
from analysis.families import Family
from analysis.fit import FitKind, fit_key, power_law_inverse
from analysis.pooled import PooledX
from analysis.series import HybridSeries, series_view, whole_series, width_series

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
    claim = with_pooled(per_family, inputs, families, PooledX.FLOPS, 0.0, PAPER_SAVING, WIDTH)
    width = width_series(inputs.df)
    if width is None:
        return claim
    return width_claim(claim_id, inputs, width, claim, c_of)


def series_claim(claim_id: str, inputs: ClaimInputs, series: HybridSeries, c_of: Callable[[pd.Series], float]
                 ) -> Claim:
    """Claim (b) read for ``series``'s RoM runs against that dense series alone (its pooled fit as headline
    when it converged, else its own L(C) fit), every detail tagged with the series id."""
    sub = series.subset(inputs.df)
    fit = inputs.fits.get(series.fit_key)
    fits = {} if fit is None else {fit_key(FitKind.FLOPS, series.dense_family): fit, fit.key: fit}
    sin = replace(inputs, df=sub, runs=runs_at_train_length(sub), fits=fits)
    family = inputs.families[series.rom_family]
    per = interval_claim(claim_id, TITLE, PAPER_TEXT, PAPER_SAVING, 0.0, FitKind.FLOPS, [family], sin, c_of,
                         "saving", width=WIDTH)
    claim = with_pooled(per, sin, [family], PooledX.FLOPS, 0.0, PAPER_SAVING, WIDTH, series=series.id)
    views = [{**v, "what": f"read-off of the largest RoM run against the {series.kind} series' own L(C) fit"}
             if v["fit_key"] == series.fit_key else v for v in claim.views]
    tag = {"series": series.id, "series_runs": list(series.dense_runs + series.seed_runs)}
    return replace(claim, details=[{**d, **tag} for d in claim.details], views=views)


def _as_view(claim: Claim, what: str, series: HybridSeries | None) -> dict[str, Any]:
    return {"what": what, "fit_key": claim.headline_fit, "value": claim.ours,
            "interval": None if claim.ci is None else list(claim.ci), "at": None, "method": claim.ci_label,
            "status": claim.verdict.value, "note": f"{claim.headline}: {claim.reason}",
            **({"series": series.to_dict()} if series is not None else {})}


def width_claim(claim_id: str, inputs: ClaimInputs, width: HybridSeries, family_claim: Claim,
                c_of: Callable[[pd.Series], float]) -> Claim:
    """The headline against the Mamba-width series; the whole-hybrid series and the family-level reading as
    views; details from all three (see the module docstring)."""
    head = series_claim(claim_id, inputs, width, c_of)
    views = [series_view(width)] + head.views
    details = list(head.details)
    whole = whole_series(inputs.df, width.rom_run)
    if whole is not None:
        w = series_claim(claim_id, inputs, whole, c_of)
        views.append(_as_view(w, f"the whole-hybrid series (d_model scaled: {', '.join(whole.names)}) as the dense "
                                 "baseline", whole))
        details += [{**d, "headline": False} for d in w.details]
    views.append(_as_view(family_claim, "every dense hybrid of the family in one fit (width and whole-hybrid "
                                        "series together; the reading without a width series)", None))
    details += [{**d, "headline": False, "series": "family fit"} for d in family_claim.details]
    names = ", ".join(width.names)
    reason = (f"read against the Mamba-width series ({names}: {width.dense_family} with "
              f"{width.width_field.removeprefix('model.')} {', '.join(f'{e:g}' for e in width.expand)}, "
              f"otherwise as {width.rom_name}); "
              + head.reason)
    return replace(head, reason=reason, headline=f"{width.kind} series: {head.headline}", details=details,
                   views=views)


def report_sections(claim: Claim) -> list[ReportSection]:
    return readoff_section(claim)
