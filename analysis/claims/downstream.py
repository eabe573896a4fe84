"""Claim (d), downstream accuracy (paper: tables not available to us; direction: RoM >= dense at equal active
parameters): the table in the paper's column order, each RoM run against the dense-counterpart run nearest in
active parameters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.claims.common import Claim, ClaimInputs, ReportSection, Verdict

DOWNSTREAM_MARGIN = 0.01  # RoM worse than dense by more than 1 point (absolute accuracy) is "not supported"
TITLE = "Downstream accuracy (LAMBADA, HellaSwag, PIQA, ARC-E, ARC-C, WinoGrande)"
PAPER_TEXT = "RoM >= dense at equal active parameters (paper tables not available)"
RULE = (
    "Each RoM run is paired with the dense-counterpart run nearest in active parameters (log distance). "
    "Supported if every pair's average accuracy difference RoM - dense >= 0; not supported if some pair's "
    "difference is below -{margin} (more than {pts} point worse); otherwise inconclusive at this scale "
    "(including no downstream scores). Averages use the six columns; a run missing one is averaged over what "
    "it has and marked partial."
)

# (task, metric, column title) in the paper's column order.
DOWNSTREAM_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lambada_openai", "acc", "LAMBADA acc"),
    ("hellaswag", "acc_norm", "HellaSwag acc_norm"),
    ("piqa", "acc", "PIQA acc"),
    ("arc_easy", "acc", "ARC-E acc"),
    ("arc_challenge", "acc_norm", "ARC-C acc_norm"),
    ("winogrande", "acc", "WinoGrande acc"),
)
# Accuracy of guessing, per task of DOWNSTREAM_COLUMNS (LAMBADA: open-vocabulary last word, so 0; HellaSwag and
# ARC: 4 choices; PIQA and WinoGrande: 2). The tables print it beside the scores.
CHANCE_LEVELS: dict[str, float] = {"lambada_openai": 0.0, "hellaswag": 0.25, "piqa": 0.5, "arc_easy": 0.25,
                                   "arc_challenge": 0.25, "winogrande": 0.5}


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


def compute(claim_id: str, inputs: ClaimInputs) -> Claim:
    margin = inputs.downstream_margin
    rule = RULE.format(margin=margin, pts=f"{100 * margin:g}")
    table = downstream_table(inputs.runs)
    details: list[dict[str, Any]] = []
    routed = {f.name for f in inputs.routed()}
    for _, r in table[table["family"].isin(routed)].iterrows():
        dense = table[table["family"] == inputs.families[r["family"]].dense_counterpart().name]
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
        return Claim(claim_id, TITLE, PAPER_TEXT, None, None, None, "", Verdict.INCONCLUSIVE, reason, rule, False,
                     "", [{"table": rows, "pairs": details}])
    diffs = [p["difference"] for p in details]
    if min(diffs) >= 0:
        verdict, why = Verdict.SUPPORTED, f"every RoM run >= its dense pair (smallest difference {min(diffs):+.4f})"
    elif min(diffs) < -margin:
        verdict, why = Verdict.NOT_SUPPORTED, f"a RoM run is {-min(diffs):.4f} below its dense pair (> {margin:g})"
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"smallest difference {min(diffs):+.4f} is within the margin {margin:g}"
    spread = (min(diffs), max(diffs))
    return Claim(claim_id, TITLE, PAPER_TEXT, None, float(np.mean(diffs)), spread, "range over pairs", verdict, why,
                 rule, False, "mean average-accuracy difference RoM - dense", [{"table": rows, "pairs": details}])


def report_sections(claim: Claim) -> list[ReportSection]:
    return []  # the downstream table is its own table (analysis.tables "downstream")
