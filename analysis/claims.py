"""The paper's claims, computed from the collected table and the fits, each with a verdict by a stated rule.

(a) Active-parameter equivalence (paper: RoM matches a dense Mamba with > 2.3x its active parameters):
    N_eq = L_dense^-1(L_r) from the dense family's L(N) fit; ratio = N_eq / N_r, per RoM run.
(b) FLOPs saving at matched loss (paper: 23% for hybrids): C_dense = L_dense^-1(L_r) from the dense
    family's L(C) fit; saving = 1 - C_r / C_dense. Hybrids (hybrid-rom vs hybrid-mamba) when present, else
    pure RoM vs dense Mamba.
(c) Length extrapolation (paper, Figure 3: consistent perplexity across context lengths): per run,
    ppl(m*T) / ppl(T) for m = 2 and 4, T the training length; RoM vs the dense counterpart per T.
(d) Downstream accuracy (paper: tables not available to us; direction: RoM >= dense at equal active
    parameters): the table in the paper's column order, RoM runs against the dense run nearest in active
    parameters.

The dense counterpart of a RoM family replaces "rom" by "mamba" (rom -> mamba, hybrid-rom -> hybrid-mamba,
"+moe" kept). Read-offs use each run's loss at its training length. CIs of (a) and (b) come from the dense
fit's bootstrap replicates (the RoM run's own loss is one measurement); where a replicate's asymptote E lies
at or above L_r there is no inverse: that replicate counts as ratio = inf / saving = 1 (no dense model on that
curve reaches the loss) and the percentile bounds use the conservative order statistic (no interpolation).
The headline of (a) and (b) is the RoM run with the most active parameters of the preferred family (the
paper's claims are at its largest scale); every run's read-off is listed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis._io import AnalysisError, as_float, restore_floats
from analysis.collect import runs_at_train_length
from analysis.fit import (FIT_ROLES, FitKind, FitResult, FitStatus, FlopConvention, ParamConvention, fit_key,
                          inverse, power_law_inverse)

PAPER_EQUIVALENCE = 2.3
PAPER_SAVING = 0.23
CONTEXT_TOLERANCE = 0.05  # (c): a ppl ratio within 5% of 1 counts as consistent
DOWNSTREAM_MARGIN = 0.01  # (d): RoM worse than dense by more than 1 point (absolute accuracy) is "not supported"

# (task, metric, column title) in the paper's column order.
DOWNSTREAM_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lambada_openai", "acc", "LAMBADA acc"),
    ("hellaswag", "acc_norm", "HellaSwag acc_norm"),
    ("piqa", "acc", "PIQA acc"),
    ("arc_easy", "acc", "ARC-E acc"),
    ("arc_challenge", "acc_norm", "ARC-C acc_norm"),
    ("winogrande", "acc", "WinoGrande acc"),
)

EQUIVALENCE_FAMILIES = ("rom", "hybrid-rom", "rom+moe", "hybrid-rom+moe")  # preference order for (a)
SAVING_FAMILIES = ("hybrid-rom", "hybrid-rom+moe", "rom", "rom+moe")  # preference order for (b)


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
RULE_CONTEXT = (
    "Per run, r_m = ppl(m*T)/ppl(T) for m in {{2, 4}}. Supported if every RoM run's r_m <= 1 + {tol} "
    "(consistent within {pct}%); not supported if some RoM run's r_m exceeds 1 + {tol} and, at that training "
    "length T, the RoM mean r_m also exceeds the dense counterpart's mean r_m (RoM degrades, and more than "
    "dense); otherwise inconclusive at this scale (including no RoM runs evaluated beyond T). The interval "
    "shown is the range over runs, not a CI."
)
RULE_DOWNSTREAM = (
    "Each RoM run is paired with the dense-counterpart run nearest in active parameters (log distance). "
    "Supported if every pair's average accuracy difference RoM - dense >= 0; not supported if some pair's "
    "difference is below -{margin} (more than {pts} point worse); otherwise inconclusive at this scale "
    "(including no downstream scores). Averages use the six columns; a run missing one is averaged over what "
    "it has and marked partial."
)


def dense_counterpart(family: str) -> str:
    base, moe = (family[:-4], "+moe") if family.endswith("+moe") else (family, "")
    return base.replace("rom", "mamba") + moe


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
    id: str  # "a" | "b" | "c" | "d"
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


# ----------------------------------------------------------------------------------- arithmetic


def equivalence_ratio(params: dict[str, float], n_run: float, loss: float) -> float:
    """N_eq / N_r with N_eq = (A / (L_r - E))^(1/alpha); inf when L_r <= E (no inverse)."""
    return power_law_inverse(loss, params["E"], params["A"], params["alpha"]) / n_run


def flops_saving(params: dict[str, float], c_run: float, loss: float) -> float:
    """1 - C_r / C_dense(L_r) with C_dense = (B / (L_r - E))^(1/beta); 1.0 when L_r <= E (no inverse)."""
    c_dense = power_law_inverse(loss, params["E"], params["B"], params["beta"])
    return 1.0 - c_run / c_dense  # c_run / inf == 0 -> saving 1


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


# ----------------------------------------------------------------------------------- (a) and (b)


def _rom_runs(runs: pd.DataFrame, family: str) -> pd.DataFrame:
    sel = runs[(runs["family"] == family) & runs["role"].isin(FIT_ROLES) & ~runs["diverged"]]
    return sel[np.isfinite(sel["loss_nats"])]


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


def _interval_claim(
    claim_id: str,
    title: str,
    paper_text: str,
    paper: float,
    null: float,
    kind: FitKind,
    families: Sequence[str],
    runs: pd.DataFrame,
    fits: dict[str, FitResult],
    x_of: Any,
    value_kind: str,
    fallback_note: str = "",
) -> Claim:
    level = next((f.ci_level for f in fits.values()), 0.95)
    rule = RULE_INTERVAL.format(level=f"{100 * level:.0f}%", null=null, paper=paper)
    readoffs: list[ReadOff] = []
    skipped: list[str] = []
    for family in families:
        rom = _rom_runs(runs, family)
        if rom.empty:
            continue
        dense_key = fit_key(kind, dense_counterpart(family))
        fit = fits.get(dense_key)
        if fit is None or not fit.ok:
            why = "absent" if fit is None else f"{fit.status.value}: {fit.message}"
            skipped.append(f"{family}: dense fit {dense_key} not usable ({why})")
            continue
        for _, r in rom.sort_values(["params_active_nonembedding", "loss_nats"]).iterrows():
            readoffs.append(_read_off(fit, r["run_id"], family, float(x_of(r)), float(r["loss_nats"]), value_kind))
    details = [asdict(r) for r in readoffs]
    if not readoffs:
        reason = "no RoM run with a usable dense fit to read off" + (f" ({'; '.join(skipped)})" if skipped else "")
        return Claim(claim_id, title, paper_text, paper, None, None, "", Verdict.INCONCLUSIVE, reason, rule,
                     False, "", details)
    fam = next(f for f in families if any(r.family == f for r in readoffs))
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


def claim_equivalence(runs: pd.DataFrame, fits: dict[str, FitResult], params: ParamConvention) -> Claim:
    return _interval_claim(
        "a", "Active-parameter equivalence ratio N_eq / N_r", "> 2.3x (1.3B active, 16K training length)",
        PAPER_EQUIVALENCE, 1.0, FitKind.PARAMS, EQUIVALENCE_FAMILIES, runs, fits,
        lambda r: r[params.column], "ratio")


def claim_saving(runs: pd.DataFrame, fits: dict[str, FitResult], params: ParamConvention,
                 flops: FlopConvention) -> Claim:
    def c_of(r: pd.Series) -> float:
        return float(flops.values(r.to_frame().T, params)[0])

    has_hybrid = any(not _rom_runs(runs, f).empty and fits.get(fit_key(FitKind.FLOPS, dense_counterpart(f)))
                     is not None and fits[fit_key(FitKind.FLOPS, dense_counterpart(f))].ok for f in SAVING_FAMILIES[:2])
    note = "" if has_hybrid else "no usable hybrid pair: fell back to pure RoM vs dense Mamba"
    return _interval_claim(
        "b", "Training-FLOPs saving at matched loss 1 - C_r / C_dense(L_r)", "0.23 (23% saving, hybrids)",
        PAPER_SAVING, 0.0, FitKind.FLOPS, SAVING_FAMILIES, runs, fits, c_of, "saving", note)


# ----------------------------------------------------------------------------------- (c)


def context_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Per run with an eval at T: ppl(m*T)/ppl(T) for every evaluated multiple m (rows: run, m)."""
    rows = []
    for run_id, g in df[df["role"] != "ablation"].groupby("run_id", sort=True):
        base = g[g["at_train_length"]]
        if base.empty or bool(g["diverged"].iloc[0]):
            continue
        ppl_t = float(base["ppl"].iloc[0])
        for _, r in g.iterrows():
            m = float(r["context_multiple"])
            if m > 1:
                rows.append({"run_id": run_id, "family": r["family"], "train_seq_len": int(r["train_seq_len"]),
                             "multiple": m, "context_length": int(r["context_length"]),
                             "ppl_ratio": float(r["ppl"]) / ppl_t})
    return pd.DataFrame(rows, columns=["run_id", "family", "train_seq_len", "multiple", "context_length",
                                       "ppl_ratio"])


def claim_context(df: pd.DataFrame, tol: float = CONTEXT_TOLERANCE) -> Claim:
    rule = RULE_CONTEXT.format(tol=tol, pct=f"{100 * tol:g}")
    ratios = context_ratios(df)
    rom = ratios[ratios["family"].str.contains("rom") & ratios["multiple"].isin([2.0, 4.0])]
    details: list[dict[str, Any]] = []
    for (fam, T, m), g in ratios[ratios["multiple"].isin([2.0, 4.0])].groupby(["family", "train_seq_len", "multiple"]):
        details.append({"family": fam, "train_seq_len": int(T), "multiple": float(m), "n_runs": len(g),
                        "mean_ppl_ratio": float(g["ppl_ratio"].mean()), "min": float(g["ppl_ratio"].min()),
                        "max": float(g["ppl_ratio"].max())})
    title = "Perplexity at 2x and 4x the training length relative to 1x (RoM vs dense)"
    paper_text = "consistent (flat) perplexity across context lengths (Figure 3)"
    if rom.empty:
        return Claim("c", title, paper_text, None, None, None, "", Verdict.INCONCLUSIVE,
                     "no RoM run evaluated at 2x or 4x its training length", rule, False, "", details)
    worst_m = rom["multiple"].max()
    at = rom[rom["multiple"] == worst_m]
    ours = float(at["ppl_ratio"].max())
    spread = (float(at["ppl_ratio"].min()), float(at["ppl_ratio"].max()))
    mean = {(d["family"], d["train_seq_len"], d["multiple"]): d["mean_ppl_ratio"] for d in details}
    over = rom[rom["ppl_ratio"] > 1 + tol]
    if over.empty:
        verdict, why = Verdict.SUPPORTED, f"every RoM ratio <= {1 + tol:g} (worst {rom['ppl_ratio'].max():.4f})"
    else:
        worse = []
        for _, r in over.iterrows():
            key_r = (r["family"], r["train_seq_len"], r["multiple"])
            key_d = (dense_counterpart(r["family"]), r["train_seq_len"], r["multiple"])
            if key_d in mean and mean[key_r] > mean[key_d]:
                worse.append(f"{r['family']} T={r['train_seq_len']} {r['multiple']:g}x: mean {mean[key_r]:.4f} "
                             f"> dense {mean[key_d]:.4f}")
        if worse:
            verdict, why = Verdict.NOT_SUPPORTED, "RoM degrades beyond tolerance and more than dense: " + \
                "; ".join(sorted(set(worse)))
        else:
            verdict, why = Verdict.INCONCLUSIVE, (
                f"{len(over)} RoM ratio(s) exceed {1 + tol:g} but not more than the dense counterpart "
                "(or no dense run at that length)")
    return Claim("c", title, paper_text, None, ours, spread, "range over runs", verdict, why, rule, False,
                 f"worst RoM ppl ratio at {worst_m:g}x the training length", details)


# ----------------------------------------------------------------------------------- (d)


def downstream_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with downstream scores, columns in the paper's order plus the average and a partial flag."""
    cols = [f"downstream.{t}.{m}" for t, m, _ in DOWNSTREAM_COLUMNS]
    titles = [title for _, _, title in DOWNSTREAM_COLUMNS]
    present = [c for c in cols if c in runs.columns]
    if not present:
        return pd.DataFrame(columns=["run_id", "family", "params_active_nonembedding", *titles, "Average",
                                     "partial"])
    sel = runs[runs[present].notna().any(axis=1)].copy()
    out = pd.DataFrame({"run_id": sel["run_id"], "family": sel["family"],
                        "params_active_nonembedding": sel["params_active_nonembedding"]})
    for col, title in zip(cols, titles):
        out[title] = sel[col] if col in sel.columns else np.nan
    out["Average"] = out[titles].mean(axis=1, skipna=True)
    out["partial"] = out[titles].isna().any(axis=1)
    return out.sort_values(["family", "params_active_nonembedding"]).reset_index(drop=True)


def claim_downstream(runs: pd.DataFrame, margin: float = DOWNSTREAM_MARGIN) -> Claim:
    rule = RULE_DOWNSTREAM.format(margin=margin, pts=f"{100 * margin:g}")
    table = downstream_table(runs)
    title = "Downstream accuracy (LAMBADA, HellaSwag, PIQA, ARC-E, ARC-C, WinoGrande)"
    paper_text = "RoM >= dense at equal active parameters (paper tables not available)"
    details: list[dict[str, Any]] = []
    for _, r in table[table["family"].str.contains("rom")].iterrows():
        dense = table[table["family"] == dense_counterpart(r["family"])]
        if dense.empty:
            continue
        dist = np.abs(np.log(dense["params_active_nonembedding"].astype(float)) -
                      math.log(float(r["params_active_nonembedding"])))
        d = dense.iloc[int(np.argmin(dist.to_numpy()))]
        details.append({"rom_run": r["run_id"], "dense_run": d["run_id"], "rom_average": float(r["Average"]),
                        "dense_average": float(d["Average"]), "difference": float(r["Average"] - d["Average"]),
                        "partial": bool(r["partial"] or d["partial"])})
    rows = table.to_dict(orient="records")
    if not details:
        reason = "no downstream scores in the records" if table.empty else "no RoM/dense pair with downstream scores"
        return Claim("d", title, paper_text, None, None, None, "", Verdict.INCONCLUSIVE, reason, rule, False, "",
                     [{"table": rows, "pairs": details}])
    diffs = [p["difference"] for p in details]
    if min(diffs) >= 0:
        verdict, why = Verdict.SUPPORTED, f"every RoM run >= its dense pair (smallest difference {min(diffs):+.4f})"
    elif min(diffs) < -margin:
        verdict, why = Verdict.NOT_SUPPORTED, f"a RoM run is {-min(diffs):.4f} below its dense pair (> {margin:g})"
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"smallest difference {min(diffs):+.4f} is within the margin {margin:g}"
    spread = (min(diffs), max(diffs))
    return Claim("d", title, paper_text, None, float(np.mean(diffs)), spread, "range over pairs", verdict, why,
                 rule, False, "mean average-accuracy difference RoM - dense", [{"table": rows, "pairs": details}])


# ----------------------------------------------------------------------------------- all claims


CLAIMS_SCHEMA = "analysis.claims/1"


def compute_claims(df: pd.DataFrame, fits: dict[str, FitResult], tol: float = CONTEXT_TOLERANCE,
                   margin: float = DOWNSTREAM_MARGIN) -> list[Claim]:
    conventions = {(f.param_convention, f.flop_convention) for f in fits.values()}
    if len(conventions) > 1:
        raise AnalysisError(f"fits mix conventions {sorted(conventions)}; fit them in one run")
    pc, fc = next(iter(conventions)) if conventions else ("active_nonembedding", "train_total")
    params, flops = ParamConvention(pc), FlopConvention(fc)
    runs = runs_at_train_length(df)
    return [claim_equivalence(runs, fits, params), claim_saving(runs, fits, params, flops),
            claim_context(df, tol), claim_downstream(runs, margin)]


def claims_document(claims: Sequence[Claim], **settings: Any) -> dict[str, Any]:
    return {"schema": CLAIMS_SCHEMA, "settings": settings, "claims": [c.to_dict() for c in claims]}


def load_claims(doc: Any, source: str = "<claims>") -> list[Claim]:
    if not isinstance(doc, dict) or doc.get("schema") != CLAIMS_SCHEMA:
        raise AnalysisError(f"{source}: not a claims file of schema {CLAIMS_SCHEMA!r}")
    try:
        return [Claim.from_dict(d) for d in doc["claims"]]
    except (KeyError, TypeError, ValueError) as e:
        raise AnalysisError(f"{source}: malformed claim entry ({e!r})") from None
