"""Claim (c), length extrapolation (paper, Figure 3: consistent perplexity across context lengths).

Per run (all roles except ablation), r_m = ppl(m*T) / ppl(T) for m = 2 and 4, T the training length; RoM
against its dense counterpart per T. Ours is the worst RoM ratio at the largest multiple; the interval is
the range over runs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.claims.common import Claim, ClaimInputs, ReportSection, Verdict

CONTEXT_TOLERANCE = 0.05  # a ppl ratio within 5% of 1 counts as consistent
TITLE = "Perplexity at 2x and 4x the training length relative to 1x (RoM vs dense)"
PAPER_TEXT = "consistent (flat) perplexity across context lengths (Figure 3)"
RULE = (
    "Per run, r_m = ppl(m*T)/ppl(T) for m in {{2, 4}}. Supported if every RoM run's r_m <= 1 + {tol} "
    "(consistent within {pct}%); not supported if some RoM run's r_m exceeds 1 + {tol} and, at that training "
    "length T, the RoM mean r_m also exceeds the dense counterpart's mean r_m (RoM degrades, and more than "
    "dense); otherwise inconclusive at this scale (including no RoM runs evaluated beyond T). The interval "
    "shown is the range over runs, not a CI."
)


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


def compute(claim_id: str, inputs: ClaimInputs) -> Claim:
    tol = inputs.context_tolerance
    rule = RULE.format(tol=tol, pct=f"{100 * tol:g}")
    ratios = context_ratios(inputs.df)
    routed = {f.name for f in inputs.routed()}
    rom = ratios[ratios["family"].isin(routed) & ratios["multiple"].isin([2.0, 4.0])]
    details: list[dict[str, Any]] = []
    for (fam, T, m), g in ratios[ratios["multiple"].isin([2.0, 4.0])].groupby(["family", "train_seq_len", "multiple"]):
        details.append({"family": fam, "train_seq_len": int(T), "multiple": float(m), "n_runs": len(g),
                        "mean_ppl_ratio": float(g["ppl_ratio"].mean()), "min": float(g["ppl_ratio"].min()),
                        "max": float(g["ppl_ratio"].max())})
    if rom.empty:
        return Claim(claim_id, TITLE, PAPER_TEXT, None, None, None, "", Verdict.INCONCLUSIVE,
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
            key_d = (inputs.families[r["family"]].dense_counterpart().name, r["train_seq_len"], r["multiple"])
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
    return Claim(claim_id, TITLE, PAPER_TEXT, None, ours, spread, "range over runs", verdict, why, rule, False,
                 f"worst RoM ppl ratio at {worst_m:g}x the training length", details)


def report_sections(claim: Claim) -> list[ReportSection]:
    if not claim.details:
        return []
    cols = ("family", "train length", "multiple", "runs", "mean ppl ratio", "min", "max")
    rows = tuple((d["family"], d["train_seq_len"], d["multiple"], d["n_runs"], d["mean_ppl_ratio"], d["min"],
                  d["max"]) for d in claim.details)
    return [ReportSection(f"Claim ({claim.id}) per training length", cols, rows)]
