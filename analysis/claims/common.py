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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from rom.io import as_float, restore_floats
from analysis.collect import runs_at_train_length
from analysis.families import Family, families_in
from analysis.fit import (FIT_ROLES, FitKind, FitResult, FitStatus, FlopConvention, ParamConvention, fit_key,
                          Profile, inverse, power_law_inverse, profile_E, profile_exponent)
from analysis.noise import estimate_noise, seed_groups
from analysis.pooled import PooledFit, PooledX, pooled_key
from analysis.prediction import choose_prediction


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
    "converge, a 'supported' or 'not supported' verdict becomes inconclusive at this scale, with the reason. "
    "A verdict also needs an interval narrow enough to decide: {width_rule}; a wider interval is inconclusive "
    "at this scale. When the dense fit's only bound is its asymptote E and the read-off is interpolated, the "
    "interval joins the bootstrap CI with the read-offs over every E a likelihood-ratio profile accepts "
    "(instead of an automatic inconclusive). The headline uses the pooled fit (dense and RoM together, E and the "
    "exponent shared) when it converged and its read-off is interpolated; the per-family read-off is then listed "
    "as a view."
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
    # Issue 24: the read-off carried to the paper's scale (analysis.prediction.Prediction.to_dict()) or None;
    # the fit the headline uses ("pooled:..." or "params:..."/"flops:..."); other views of the same claim
    # (per-family read-off, exponent per family with its slope, FLOPs without the LM head, wall-clock, the
    # paper's parameter convention), each {what, value, interval, method, status, note}.
    prediction: dict[str, Any] | None = None
    headline_fit: str = ""
    views: list[dict[str, Any]] = field(default_factory=list)

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
            prediction=None if d.get("prediction") is None else restore_floats(dict(d["prediction"])),
            headline_fit=d.get("headline_fit", ""),
            views=restore_floats(list(d.get("views", []))),
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
    pooled: dict[str, PooledFit] = field(default_factory=dict)  # pooled fits by key (fits.json "pooled")

    def routed(self) -> list[Family]:
        """The routed (RoM) families of the table, sorted by name."""
        return sorted((f for f in self.families.values() if f.routed), key=lambda f: f.name)


def claim_inputs(df: pd.DataFrame, fits: dict[str, FitResult], context_tolerance: float = 0.05,
                 downstream_margin: float = 0.01, pooled: dict[str, PooledFit] | None = None) -> ClaimInputs:
    conventions = {(f.param_convention, f.flop_convention) for f in fits.values()}
    if len(conventions) > 1:
        raise AnalysisError(f"fits mix conventions {sorted(conventions)}; fit them in one run")
    pc, fc = next(iter(conventions)) if conventions else ("active_nonembedding", "train_total")
    return ClaimInputs(df=df, runs=runs_at_train_length(df), fits=fits, params=ParamConvention(pc),
                       flops=FlopConvention(fc), families=families_in(df), context_tolerance=context_tolerance,
                       downstream_margin=downstream_margin, pooled=dict(pooled or {}))


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


@dataclass(frozen=True)
class WidthRule:
    """The widest interval that can carry a verdict: half-width of ln(value) (``log``) or of the value."""

    max_half_width: float
    log: bool

    def half_width(self, ci: tuple[float, float]) -> float:
        lo, hi = ci
        if self.log:
            return (math.log(hi) - math.log(lo)) / 2 if lo > 0 and math.isfinite(hi) else math.inf
        return (hi - lo) / 2 if math.isfinite(hi - lo) else math.inf

    def text(self) -> str:
        what = "ln(value)" if self.log else "the value"
        return f"the CI's half-width on {what} at most {self.max_half_width:g}"


def width_verdict(ci: tuple[float, float] | None, null: float, paper: float,
                  width: WidthRule | None) -> tuple[Verdict, str]:
    """``interval_verdict``, then inconclusive when the CI is wider than ``width`` allows."""
    verdict, why = interval_verdict(ci, null, paper)
    if width is None or ci is None or verdict == Verdict.INCONCLUSIVE:
        return verdict, why
    hw = width.half_width(ci)
    if hw > width.max_half_width:
        return Verdict.INCONCLUSIVE, (f"would be {verdict.value} ({why}), but the CI is too wide to decide: "
                                      f"half-width {hw:.3g} > {width.max_half_width:g}"
                                      + (" on ln(value)" if width.log else ""))
    return verdict, why + f"; half-width {hw:.3g} <= {width.max_half_width:g}" + (" on ln(value)" if width.log else "")


# ------------------------------------------------------------------- read-offs against a dense fit


def rom_runs(runs: pd.DataFrame, family: Family) -> pd.DataFrame:
    """The runs of ``family`` that a read-off uses: fitted roles, not diverged, finite loss, at the study's main
    token budget (the one-budget dense fits' budget)."""
    from analysis.collect import main_budget

    sel = runs[(runs["family"] == family.name) & runs["role"].isin(FIT_ROLES) & ~runs["diverged"]]
    budget = main_budget(runs)
    if budget is not None:
        sel = sel[sel["train_tokens"].astype(int) == budget]
    return sel[np.isfinite(sel["loss_nats"])]


def dense_fit(inputs: ClaimInputs, kind: FitKind, family: Family) -> FitResult | None:
    """The fit of ``family``'s dense counterpart, when it exists."""
    return inputs.fits.get(fit_key(kind, family.dense_counterpart().name))


LOSS_NOISE_SEED = 0  # the draws that add a read-off loss's own seed noise to its bootstrap (fixed: reproducible)


def _value_of(x_dense: float, x_run: float, kind: str) -> float:
    """A read-off's value from the dense x that reaches its loss: the ratio x_dense / x_run, or the saving
    1 - x_run / x_dense."""
    return x_dense / x_run if kind == "ratio" else 1.0 - x_run / x_dense


def _read_off(fit: FitResult, run_id: str, family: str, x_run: float, loss: float, kind: str,
              loss_sd: float = 0.0) -> ReadOff:
    """``loss_sd``: the standard deviation of ``loss`` itself (its seed noise); each bootstrap replicate of the
    dense fit is then read at ``loss`` plus one normal draw of it, so the interval carries both."""
    x_dense = inverse(fit, loss)
    lo, hi = fit.x_range[fit.x_names[0]]
    if math.isinf(x_dense):
        value, extrapolated = None, True
        note = (f"loss {loss:.4f} is at or below the dense fit's asymptote E={fit.params['E']:.4f}: no inverse "
                f"(no dense model on this curve reaches it)")
    else:
        value, extrapolated = _value_of(x_dense, x_run, kind), not (lo <= x_dense <= hi)
        note = f"read-off {x_dense:.4g} outside the fitted range [{lo:.4g}, {hi:.4g}]" if extrapolated else ""
    ci, n_inf = None, 0
    if fit.ci is not None and fit.bootstrap.samples:
        samples = fit.sample_params()
        shifts = loss_sd * np.random.default_rng(LOSS_NOISE_SEED).standard_normal(len(samples))
        xs = [inverse(fit, loss + float(dl), p) for p, dl in zip(samples, shifts)]
        n_inf = sum(math.isinf(x) for x in xs)
        ci = percentile_ci([_value_of(x, x_run, kind) for x in xs], fit.ci_level)
    return ReadOff(run_id, family, fit.key, float(x_run), float(loss), float(x_dense), value, ci, n_inf,
                   extrapolated, note)


def _seed_aware(head: ReadOff, fit: FitResult, inputs: ClaimInputs, value_kind: str) -> ReadOff:
    """The headline read at the mean loss of its run and that run's seed replicates (same family and config but
    the seed), its interval the dense fit's bootstrap with the mean's own seed noise, sigma / sqrt(k), added
    (sigma: the family's seed noise, ``analysis.noise``). A single run's loss is one draw: read alone, one seed's
    spread (about 0.011 nats in the miniature hybrids) moves a FLOPs saving by about 0.06, which an interval
    from the dense fit alone leaves out. Unchanged where no seed noise is known."""
    groups = seed_groups(inputs.df)
    mates = next((g for gs in groups.values() for g in gs if head.run_id in set(g["run_id"].astype(str))), None)
    losses = [head.loss] if mates is None else [float(v) for v in mates["loss_nats"]]
    noise = estimate_noise(inputs.df, [head.family], groups).get(head.family)
    sigma = noise.sigma_nats if noise is not None and noise.dof > 0 and math.isfinite(noise.sigma_nats) else None
    if sigma is None:
        return head
    k = len(losses)
    sd = sigma / math.sqrt(k)
    new = _read_off(fit, head.run_id, head.family, head.x_run, float(np.mean(losses)), value_kind, loss_sd=sd)
    runs = "" if mates is None else f" ({', '.join(sorted(mates['run_id'].astype(str)))})"
    note = (f"read at the mean loss of {k} seed replicate{'s' if k > 1 else ''}{runs}; the interval adds that "
            f"mean's seed noise, {sigma:.4g}/sqrt({k}) = {sd:.3g} nats ({noise.source})")
    return replace(new, note="; ".join(n for n in (new.note, note) if n))


def _only_at_bound(fit: FitResult, name: str) -> bool:
    """Whether parameter ``name`` is the only one of ``fit`` at a bound."""
    hits = [h for h in fit.message.split("; ") if "bound" in h]
    return fit.status == FitStatus.HIT_BOUND and bool(hits) and all(h.startswith(f"{name}=") for h in hits)


def _only_E_at_bound(fit: FitResult) -> bool:
    return _only_at_bound(fit, "E")


def _seed_sigma_log(inputs: ClaimInputs, family: str) -> float | None:
    """The family's measured seed noise on log loss (what the profiles' likelihood-ratio test uses), if any."""
    noise = estimate_noise(inputs.df, [family]).get(family)
    return noise.sigma_log if noise is not None and noise.dof > 0 else None


def _dense_profile(profile: Callable[..., Profile], fit: FitResult, inputs: ClaimInputs, kind: FitKind) -> Profile:
    """``profile`` (profile_E or profile_exponent) of the dense fit's family, tested against its seed noise."""
    return profile(inputs.df, fit.family, kind, inputs.params, inputs.flops, level=fit.ci_level,
                   sigma_log=_seed_sigma_log(inputs, fit.family))


def _inverses_over(prof: Profile, fit: FitResult, loss: float) -> list[float]:
    """The dense x that reaches ``loss`` under each parameter set the profile accepts."""
    return [inverse(fit, loss, p) for p in prof.accepted_params()]


def _profiled(head: ReadOff, fit: FitResult, inputs: ClaimInputs, kind: FitKind, value_kind: str) -> ReadOff:
    """The read-off's interval joined with its values over every E the profile accepts (see profile_E)."""
    prof = _dense_profile(profile_E, fit, inputs, kind)
    vals = [_value_of(x, head.x_run, value_kind) for x in _inverses_over(prof, fit, head.loss)]
    if not vals:
        return head
    pool = vals + ([head.value] if head.value is not None else []) + (list(head.ci) if head.ci else [])
    ci = (float(min(pool)), float(max(pool)))
    e_lo, e_hi = prof.accepted_range
    note = (f"E at a bound: interval = bootstrap CI joined with the read-offs over the {len(vals)} profiled E in "
            f"[{e_lo:.4g}, {e_hi:.4g}] ({prof.criterion})")
    return ReadOff(head.run_id, head.family, head.fit_key, head.x_run, head.loss, head.x_dense, head.value, ci,
                   head.replicates_without_inverse, head.extrapolated, "; ".join(n for n in (head.note, note) if n))


def _exponent_at_bound(fit: FitResult) -> str | None:
    """The exponent's name when it is a one-variable fit's only parameter at a bound, else None."""
    if fit.kind == FitKind.JOINT:
        return None
    name = fit.param_names[2]
    return name if _only_at_bound(fit, name) else None


def _exponent_profile_note(head: ReadOff, fit: FitResult, inputs: ClaimInputs, kind: FitKind,
                           value_kind: str) -> str:
    """How far the read-off moves over every exponent a likelihood-ratio profile accepts, the bound's far side
    included (profile_exponent). Reported beside the verdict; it changes neither the interval nor the verdict:
    a fit at a bound still leaves the claim inconclusive, and more range in x is the remedy."""
    prof = _dense_profile(profile_exponent, fit, inputs, kind)
    vals = [_value_of(x, head.x_run, value_kind) for x in _inverses_over(prof, fit, head.loss)
            if math.isfinite(x) and x > 0]
    if not vals:
        return ""
    lo, hi = prof.accepted_range
    return (f"{prof.name} at a bound, checked by a profile: with {prof.name} fixed, a likelihood-ratio test "
            f"accepts {prof.name} in [{lo:.3g}, {hi:.3g}] ({prof.criterion}), and over those the read-off "
            f"ranges over [{min(vals):.4g}, {max(vals):.4g}] (a check, not part of the interval or the verdict)")


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
    width: WidthRule | None = None,
) -> Claim:
    """A claim read off the dense counterpart's ``kind`` fit for every run of ``families`` (in preference
    order: the headline is the largest run of the first family with a read-off), with RULE_INTERVAL."""
    runs, fits = inputs.runs, inputs.fits
    level = next((f.ci_level for f in fits.values()), 0.95)
    rule = RULE_INTERVAL.format(level=f"{100 * level:.0f}%", null=null, paper=paper,
                                width_rule=width.text() if width else "no width limit")
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
    scaling = set(runs.loc[runs["role"] == "scaling", "run_id"])  # at one size: the scaling run, not its best seed
    head = max((r for r in readoffs if r.family == fam),
               key=lambda r: (sizes[r.run_id], r.run_id in scaling, -r.loss))
    head_fit = fits[head.fit_key]
    seeded = _seed_aware(head, head_fit, inputs, value_kind)
    with_seed_noise = seeded is not head
    readoffs = [seeded if r is head else r for r in readoffs]
    head = seeded
    profiled = head.value is not None and not head.extrapolated and _only_E_at_bound(head_fit)
    if profiled:
        new = _profiled(head, head_fit, inputs, kind, value_kind)
        profiled = new is not head
        readoffs = [new if r is head else r for r in readoffs]
        head = new
    verdict, why = width_verdict(head.ci, null, paper, width)
    if head.value is None:
        verdict, why = Verdict.INCONCLUSIVE, head.note
    elif head.ci is None:
        fit = fits[head.fit_key]
        why = f"no confidence interval ({fit.ci_note})"
    if head.extrapolated and head.value is not None:
        why += f"; extrapolated: {head.note}"
    if fits[head.fit_key].status != FitStatus.CONVERGED:
        why += f"; dense fit {head.fit_key} {fits[head.fit_key].status.value}: {fits[head.fit_key].message}"
    if profiled:
        why += f"; {head.note}"
    if head.value is not None and not head.extrapolated and _exponent_at_bound(fits[head.fit_key]):
        note = _exponent_profile_note(head, fits[head.fit_key], inputs, kind, value_kind)
        why += f"; {note}" if note else ""
    unmeasured = (
        head.extrapolated
        or (head.ci is not None and not all(np.isfinite(head.ci)))
        or (fits[head.fit_key].status != FitStatus.CONVERGED and not profiled)
    )
    if verdict != Verdict.INCONCLUSIVE and unmeasured:
        why = f"would be {verdict.value}, but rests on an extrapolated, unbounded or unconverged fit: {why}"
        verdict = Verdict.INCONCLUSIVE
    notes = [n for n in (fallback_note, "; ".join(skipped)) if n]
    if notes:
        why += "; " + "; ".join(notes)
    headline = f"{head.run_id} ({fam} vs fit {head.fit_key})"
    details = [{**asdict(r), "headline": r is head} for r in readoffs]
    label = (f"{100 * level:.0f}% bootstrap CI" + (" with the RoM loss's seed noise" if with_seed_noise else "")
             + (" joined with the profile over E" if profiled else "") if head.ci else "")
    return Claim(claim_id, title, paper_text, paper, head.value, head.ci, label, verdict, why, rule,
                 head.extrapolated, headline, details, headline_fit=head.fit_key)


def _pooled_view(fit: PooledFit, what: str) -> dict[str, Any]:
    d = fit.get(fit.x_kind.quantity)
    out = {"what": what, "fit_key": fit.key, "value": None if d is None else d.value,
           "interval": None if d is None or d.interval is None else [d.interval.lo, d.interval.hi],
           "at": None if d is None else d.at,
           "method": (f"{fit.form}; " + (d.interval.method if d is not None and d.interval else "no interval")),
           "status": fit.status.value, "note": fit.message}
    sl = fit.get("slope")
    if sl is not None:
        out["slope"] = sl.value
        out["slope_interval"] = None if sl.interval is None else [sl.interval.lo, sl.interval.hi]
    return out


def with_pooled(claim: Claim, inputs: ClaimInputs, families: Sequence[Family], kind: PooledX, null: float,
                paper: float, width: WidthRule | None, series: str | None = None) -> Claim:
    """Make the pooled fit of the claim's family pair the headline when it converged and its read-off is
    interpolated; keep the per-family read-off (and the other pooled fits) as views; add the prediction at
    the paper's scale. Without a usable pooled fit the per-family claim stays, with the reason why.
    ``series``: the pooled fits of that dense series (keys ending '@<series id>', ``analysis.series``)."""

    from analysis.pooled import x_ratio

    head = next((d["family"] for d in claim.details if d.get("headline")), None)
    if head is None:
        head = next((f.name for f in families if not rom_runs(inputs.runs, f).empty), None)
    if head is None:
        return claim
    dense = inputs.families[head].dense_counterpart().name
    key = pooled_key(kind, True, dense, head, series)
    fit = inputs.pooled.get(key)
    free = inputs.pooled.get(pooled_key(kind, False, dense, head, series))
    views = []
    if claim.details:
        views.append({"what": "per-family read-off of the largest RoM run (dense fit alone)",
                      "fit_key": claim.headline_fit, "value": claim.ours,
                      "interval": None if claim.ci is None else list(claim.ci), "at": None,
                      "method": claim.ci_label, "status": claim.verdict.value, "note": claim.reason})
    extra = [(free, "pooled fit, exponent per family (the ratio may change with size: slope d ln k / d ln x)")]
    if kind == PooledX.PARAMS:
        extra.append((inputs.pooled.get(pooled_key(kind, True, dense, head, "active")),
                      "pooled fit, parameters with embeddings (the paper's convention)"))
    if kind == PooledX.FLOPS:
        extra += [(inputs.pooled.get(pooled_key(PooledX.FLOPS_NO_HEAD, True, dense, head, series)),
                   "pooled fit, FLOPs without the LM head (and the FLOP-free embedding)"),
                  (inputs.pooled.get(pooled_key(PooledX.WALL, True, dense, head, series)),
                   "pooled fit, measured training wall-clock time (saving in seconds)")]
    views += [_pooled_view(f, what) for f, what in extra if f is not None]
    usable = [f for f in (fit, free) if f is not None and f.status == FitStatus.CONVERGED]
    pred = choose_prediction(usable)
    prediction = None if pred is None else pred.to_dict()
    d = fit.get(kind.quantity) if fit is not None else None
    if fit is None or fit.status != FitStatus.CONVERGED or d is None or d.value is None or d.interval is None:
        why = "absent" if fit is None else (f"{fit.status.value}: {fit.message}" if fit.status != FitStatus.CONVERGED
                                            else f"no interval ({fit.ci_note})")
        return replace(claim, reason=f"{claim.reason}; pooled fit {key} not the headline ({why})", views=views,
                       prediction=prediction)
    rom_pts = [p for p in fit.points if p.family == head]
    largest = max(rom_pts, key=lambda p: (p.n_params, p.x))
    x_dense = x_ratio(fit.params, dense, head) * largest.x
    lo, hi = fit.x_range[dense]
    extrapolated = not lo <= x_dense <= hi
    ci = (d.interval.lo, d.interval.hi)
    verdict, why = width_verdict(ci, null, paper, width)
    if verdict != Verdict.INCONCLUSIVE and (extrapolated or not all(np.isfinite(ci))):
        why = (f"would be {verdict.value}, but the read-off of the largest RoM run lies at {x_dense:.4g}, outside "
               f"the dense range [{lo:.4g}, {hi:.4g}], or the CI is unbounded: {why}")
        verdict = Verdict.INCONCLUSIVE
    notes = [f"headline: pooled fit {key} ({fit.form}, {fit.loss_fn.name}, converged)"]
    lof = fit.lack_of_fit
    if lof:
        notes.append(f"residuals against the seed noise: F = {lof['F']:.3g} on {int(lof['dof'])} and "
                     f"{int(lof['seed_dof'])} dof, p = {lof['p_value']:.2g}"
                     + (" (the form misfits: the interval's envelope with the run bootstrap carries it)"
                        if lof["p_value"] < 0.01 else ""))
    per_family = ("per-family read-off " + (f"{claim.ours:.4g}" if claim.ours is not None else "none")
                  + (f" [{claim.ci[0]:.4g}, {claim.ci[1]:.4g}]" if claim.ci else "") + f": {claim.verdict.value}")
    reason = "; ".join([why] + notes + [per_family])
    level = f"{100 * fit.ci_level:.0f}%"
    headline = (f"pooled fit {key}: {dense} and {head} together ({fit.n_points} runs), one "
                f"{kind.quantity} for every RoM size")
    return replace(claim, ours=d.value, ci=ci, ci_label=f"{level} envelope of run and noise bootstraps (pooled fit)",
                   verdict=verdict, reason=reason, extrapolated=extrapolated, headline=headline, headline_fit=key,
                   views=views, prediction=prediction)


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
