"""What every claim shares: the Claim and ReadOff records, the verdicts, the inputs a claim reads, interval
helpers, and the read-off machinery of the interval claims (a) and (b).

A claim lives in one module of this package (see ``analysis.outputs.CLAIMS`` for the list): its title, the
paper's value, its verdict rule, how ours is read off, its details and its report section. Read-offs use each
run's loss at its training length. CIs of the interval claims come from the dense fit's bootstrap replicates
(the RoM run's own loss is one measurement); where a replicate's asymptote E lies at or above L_r there is no
inverse: that replicate counts as ratio = inf / saving = 1 (no dense model on that curve reaches the loss) and
the percentile bounds use the conservative order statistic (no interpolation). The headline of an interval
claim is the RoM run with the most active parameters of the preferred family (the paper's claims are at its
largest scale); every run's read-off is listed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from rom.io import as_float, restore_floats
from analysis.collect import runs_at_train_length
from analysis.families import Family, families_in
from analysis.fit import (FIT_ROLES, FitKind, FitResult, FitStatus, FlopConvention, ParamConvention, fit_key,
                          inverse, power_law_inverse)


class Verdict(str, enum.Enum):
    SUPPORTED = "supported"
    NOT_SUPPORTED = "not supported"
    INCONCLUSIVE = "inconclusive at this scale"


RULE_INTERVAL = (
    "With the {level} bootstrap CI [lo, hi] of the headline value, the null value {null} (no advantage) and "
    "the paper's value {paper}: supported if lo > {null} and hi >= {paper} (an advantage exists and our CI "
    "contains or exceeds the paper's value); not supported if hi < {paper} (the CI excludes the paper's value "
    "from below, which includes showing no advantage); otherwise inconclusive at this scale (the CI contains "
    "both {null} and {paper}), as it is when there is no usable fit, no CI, or no inverse at the point "
    "estimate. A verdict may only rest on measured ground: when the headline read-off lies outside the dense "
    "fit's measured range ('extrapolated'), when a CI bound is infinite, or when the dense fit did not "
    "converge, a 'supported' or 'not supported' verdict becomes inconclusive at this scale, with the reason."
)


@dataclass(frozen=True)
class ReadOff:
    """One RoM run read off against a dense fit (claim a: N; claim b: C)."""

    run_id: str
    family: str
    fit_key: str
    x_run: float  # N_r (parameters) or C_r (FLOPs)
    loss: float  # L_r, nats/token at the training length
    x_dense: float  # N_eq or C_dense(L_r); inf when L_r <= E (no inverse)
    value: float | None  # ratio N_eq/N_r or saving 1 - C_r/C_dense; None when there is no inverse
    ci: tuple[float, float] | None
    replicates_without_inverse: int
    extrapolated: bool
    note: str


@dataclass(frozen=True)
class Claim:
    id: str  # a key of analysis.outputs.CLAIMS
    title: str
    paper_text: str
    paper_value: float | None
    ours: float | None
    ci: tuple[float, float] | None
    ci_label: str
    verdict: Verdict
    reason: str
    rule: str
    extrapolated: bool
    headline: str  # what "ours" is (which run / family / length)
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Claim":
        return Claim(
            id=d["id"], title=d["title"], paper_text=d["paper_text"], paper_value=as_float(d["paper_value"]),
            ours=as_float(d["ours"]), ci=None if d["ci"] is None else (as_float(d["ci"][0]), as_float(d["ci"][1])),
            ci_label=d["ci_label"], verdict=Verdict(d["verdict"]), reason=d["reason"], rule=d["rule"],
            extrapolated=bool(d["extrapolated"]), headline=d["headline"],
            details=restore_floats(list(d["details"])),  # numeric details only: inf/nan were written as strings
        )


@dataclass(frozen=True, eq=False)
class ClaimInputs:
    """What a claim reads: the collected table, the fits and the settings of the claims step."""

    df: pd.DataFrame  # the collected table (one row per run and evaluation length)
    runs: pd.DataFrame  # one row per run: its evaluation at the training length
    fits: dict[str, FitResult]
    params: ParamConvention  # N of the fits
    flops: FlopConvention  # C of the fits
    families: dict[str, Family]  # family name -> its typed family, from the table's columns
    context_tolerance: float
    downstream_margin: float

    def routed(self) -> list[Family]:
        """The routed (RoM) families of the table, sorted by name."""
        return sorted((f for f in self.families.values() if f.routed), key=lambda f: f.name)


def claim_inputs(df: pd.DataFrame, fits: dict[str, FitResult], context_tolerance: float = 0.05,
                 downstream_margin: float = 0.01) -> ClaimInputs:
    conventions = {(f.param_convention, f.flop_convention) for f in fits.values()}
    if len(conventions) > 1:
        raise AnalysisError(f"fits mix conventions {sorted(conventions)}; fit them in one run")
    pc, fc = next(iter(conventions)) if conventions else ("active_nonembedding", "train_total")
    return ClaimInputs(df=df, runs=runs_at_train_length(df), fits=fits, params=ParamConvention(pc),
                       flops=FlopConvention(fc), families=families_in(df), context_tolerance=context_tolerance,
                       downstream_margin=downstream_margin)


@dataclass(frozen=True)
class ReportSection:
    """A table a claim adds to the report below the claims table."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


# ----------------------------------------------------------------------------------- intervals


def percentile_ci(values: Sequence[float], level: float) -> tuple[float, float]:
    """Percentile interval that tolerates +inf (order statistics, no interpolation between them)."""
    arr = np.sort(np.asarray(values, float))
    lo = float(np.quantile(arr, (1 - level) / 2, method="lower"))
    hi = float(np.quantile(arr, (1 + level) / 2, method="higher"))
    return lo, hi


def interval_verdict(ci: tuple[float, float] | None, null: float, paper: float) -> tuple[Verdict, str]:
    if ci is None:
        return Verdict.INCONCLUSIVE, "no confidence interval"
    lo, hi = ci
    if hi < paper:
        return Verdict.NOT_SUPPORTED, f"CI upper bound {hi:.3g} < paper's {paper:g}"
    if lo > null:
        return Verdict.SUPPORTED, f"CI lower bound {lo:.3g} > {null:g} and upper bound {hi:.3g} >= {paper:g}"
    return Verdict.INCONCLUSIVE, f"CI [{lo:.3g}, {hi:.3g}] contains both {null:g} and the paper's {paper:g}"


# ------------------------------------------------------------------- read-offs against a dense fit


def rom_runs(runs: pd.DataFrame, family: Family) -> pd.DataFrame:
    """The runs of ``family`` that a read-off uses: fitted roles, not diverged, finite loss."""
    sel = runs[(runs["family"] == family.name) & runs["role"].isin(FIT_ROLES) & ~runs["diverged"]]
    return sel[np.isfinite(sel["loss_nats"])]


def dense_fit(inputs: ClaimInputs, kind: FitKind, family: Family) -> FitResult | None:
    """The fit of ``family``'s dense counterpart, when it exists."""
    return inputs.fits.get(fit_key(kind, family.dense_counterpart().name))


def _read_off(fit: FitResult, run_id: str, family: str, x_run: float, loss: float, kind: str) -> ReadOff:
    def value_of(x_dense: float) -> float:
        return x_dense / x_run if kind == "ratio" else 1.0 - x_run / x_dense

    x_dense = inverse(fit, loss)
    lo, hi = fit.x_range[fit.x_names[0]]
    if math.isinf(x_dense):
        value, extrapolated = None, True
        note = (f"loss {loss:.4f} is at or below the dense fit's asymptote E={fit.params['E']:.4f}: no inverse "
                f"(no dense model on this curve reaches it)")
    else:
        value, extrapolated = value_of(x_dense), not (lo <= x_dense <= hi)
        note = f"read-off {x_dense:.4g} outside the fitted range [{lo:.4g}, {hi:.4g}]" if extrapolated else ""
    ci, n_inf = None, 0
    if fit.ci is not None and fit.bootstrap.samples:
        xs = [inverse(fit, loss, p) for p in fit.sample_params()]
        n_inf = sum(math.isinf(x) for x in xs)
        ci = percentile_ci([value_of(x) for x in xs], fit.ci_level)
    return ReadOff(run_id, family, fit.key, float(x_run), float(loss), float(x_dense), value, ci, n_inf,
                   extrapolated, note)


def interval_claim(
    claim_id: str,
    title: str,
    paper_text: str,
    paper: float,
    null: float,
    kind: FitKind,
    families: Sequence[Family],
    inputs: ClaimInputs,
    x_of: Callable[[pd.Series], float],
    value_kind: str,
    fallback_note: str = "",
) -> Claim:
    """A claim read off the dense counterpart's ``kind`` fit for every run of ``families`` (in preference
    order: the headline is the largest run of the first family with a read-off), with RULE_INTERVAL."""
    runs, fits = inputs.runs, inputs.fits
    level = next((f.ci_level for f in fits.values()), 0.95)
    rule = RULE_INTERVAL.format(level=f"{100 * level:.0f}%", null=null, paper=paper)
    readoffs: list[ReadOff] = []
    skipped: list[str] = []
    for family in families:
        rom = rom_runs(runs, family)
        if rom.empty:
            continue
        dense_key = fit_key(kind, family.dense_counterpart().name)
        fit = fits.get(dense_key)
        if fit is None or not fit.ok:
            why = "absent" if fit is None else f"{fit.status.value}: {fit.message}"
            skipped.append(f"{family.name}: dense fit {dense_key} not usable ({why})")
            continue
        for _, r in rom.sort_values(["params_active_nonembedding", "loss_nats"]).iterrows():
            readoffs.append(_read_off(fit, r["run_id"], family.name, float(x_of(r)), float(r["loss_nats"]),
                                      value_kind))
    details = [asdict(r) for r in readoffs]
    if not readoffs:
        reason = "no RoM run with a usable dense fit to read off" + (f" ({'; '.join(skipped)})" if skipped else "")
        return Claim(claim_id, title, paper_text, paper, None, None, "", Verdict.INCONCLUSIVE, reason, rule,
                     False, "", details)
    fam = next(f.name for f in families if any(r.family == f.name for r in readoffs))
    sizes = runs.set_index("run_id")["params_active_nonembedding"]
    head = max((r for r in readoffs if r.family == fam), key=lambda r: (sizes[r.run_id], -r.loss))
    verdict, why = interval_verdict(head.ci, null, paper)
    if head.value is None:
        verdict, why = Verdict.INCONCLUSIVE, head.note
    elif head.ci is None:
        fit = fits[head.fit_key]
        why = f"no confidence interval ({fit.ci_note})"
    if head.extrapolated and head.value is not None:
        why += f"; extrapolated: {head.note}"
    if fits[head.fit_key].status != FitStatus.CONVERGED:
        why += f"; dense fit {head.fit_key} {fits[head.fit_key].status.value}: {fits[head.fit_key].message}"
    unmeasured = (
        head.extrapolated
        or (head.ci is not None and not all(np.isfinite(head.ci)))
        or fits[head.fit_key].status != FitStatus.CONVERGED
    )
    if verdict != Verdict.INCONCLUSIVE and unmeasured:
        why = f"would be {verdict.value}, but rests on an extrapolated, unbounded or unconverged fit: {why}"
        verdict = Verdict.INCONCLUSIVE
    notes = [n for n in (fallback_note, "; ".join(skipped)) if n]
    if notes:
        why += "; " + "; ".join(notes)
    headline = f"{head.run_id} ({fam} vs fit {head.fit_key})"
    details = [{**asdict(r), "headline": r is head} for r in readoffs]
    return Claim(claim_id, title, paper_text, paper, head.value, head.ci,
                 f"{100 * level:.0f}% bootstrap CI" if head.ci else "", verdict, why, rule, head.extrapolated,
                 headline, details)


def readoff_section(claim: Claim) -> list[ReportSection]:
    """The report's per-run table of an interval claim."""
    if not claim.details:
        return []
    cols = ("run", "family", "dense fit", "x run", "loss", "x dense", "value", "CI", "extrapolated", "note")
    rows = tuple((d["run_id"], d["family"], d["fit_key"], d["x_run"], d["loss"], d["x_dense"], d["value"],
                  tuple(d["ci"]) if d["ci"] else None, d["extrapolated"], d["note"]) for d in claim.details)
    return [ReportSection(f"Claim ({claim.id}) per run", cols, rows)]


# ----------------------------------------------------------------------------------- claims.json


CLAIMS_SCHEMA = "analysis.claims/1"


def claims_document(claims: Sequence[Claim], **settings: Any) -> dict[str, Any]:
    return {"schema": CLAIMS_SCHEMA, "settings": settings, "claims": [c.to_dict() for c in claims]}


def load_claims(doc: Any, source: str = "<claims>") -> list[Claim]:
    if not isinstance(doc, dict) or doc.get("schema") != CLAIMS_SCHEMA:
        raise AnalysisError(f"{source}: not a claims file of schema {CLAIMS_SCHEMA!r}")
    try:
        return [Claim.from_dict(d) for d in doc["claims"]]
    except (KeyError, TypeError, ValueError) as e:
        raise AnalysisError(f"{source}: malformed claim entry ({e!r})") from None
