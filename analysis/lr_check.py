"""The learning-rate check: is the study's learning rate near the best for every family, or does it favour one?

A check run is found from typed fields, never from its name: a run (any role) whose model config equals that of
a scaling run (the *base*) at the study's main token budget, trained on a quarter of that budget
(``train_tokens`` = main budget / 4) at another learning rate (``config.train.lr``). Its 1x reference is the
base run's cooldown branch at the same token budget (a WSD branch: the same schedule at the base rate; see
``analysis.collect.BRANCH_POINT``); without that branch the 1x loss is missing. Losses are the validation loss
at the training length (nats/token).

Per base run: the losses at each rate multiplier (check lr / base lr: 0.5x, 1x, 2x in the miniature study), the
best multiplier, and whether 1x lies within ``TOLERANCE_NATS`` of the best. Per family: whether 1x is within
the tolerance at every base run checked. The chosen rate favours a family when 1x is within the tolerance for
it but not for another (the other would gain more than the tolerance at another rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from analysis.collect import BRANCH_POINT, main_budget, main_rows, points_at_train_length

TOLERANCE_NATS = 0.01  # 1x counts as near-optimal when its loss is within this of the best rate's loss
CHECK_FRACTION = 0.25  # the check runs train on this fraction of the main budget


@dataclass(frozen=True)
class LrPoint:
    multiplier: float  # lr / the base run's lr
    lr: float
    run_id: str  # the check run, or the base run's branch point for 1x
    loss: float  # nats/token at the training length (nan: diverged or missing)


@dataclass(frozen=True)
class LrCheck:
    """One base run and its learning-rate check runs at a quarter of the main budget."""

    family: str
    base_run: str
    base_name: str
    params_active_nonembedding: int
    tokens: int
    base_lr: float
    points: tuple[LrPoint, ...]  # sorted by multiplier; 1x is the base run's branch (absent if it has none)
    best_multiplier: float | None
    gap_1x_nats: float | None  # loss at 1x - the best loss (0 when 1x is the best); None without a 1x point
    within_tolerance: bool | None  # None without a 1x point
    note: str = ""


@dataclass(frozen=True)
class LrCheckResult:
    checks: tuple[LrCheck, ...]
    tolerance_nats: float
    per_family: dict[str, bool | None] = field(default_factory=dict)  # 1x within tolerance at every base run
    favours: str = ""  # in words: whether the chosen rate favours one family

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _config(config_json: str) -> dict[str, Any]:
    try:
        cfg = json.loads(config_json) if isinstance(config_json, str) and config_json else {}
    except json.JSONDecodeError:
        cfg = {}
    return cfg if isinstance(cfg, dict) else {}


def _lr(cfg: dict[str, Any]) -> float | None:
    v = (cfg.get("train") or {}).get("lr") if isinstance(cfg.get("train"), dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _loss(row: pd.Series) -> float:
    loss = float(row["loss_nats"])
    return loss if math.isfinite(loss) and not bool(row["diverged"]) else math.nan


def lr_check(df: pd.DataFrame, tolerance: float = TOLERANCE_NATS) -> LrCheckResult:
    """Every base run with learning-rate check runs (see the module docstring); empty without any."""
    budget = main_budget(df)
    if budget is None:
        return LrCheckResult((), tolerance, {}, "no scaling runs: no learning-rate check")
    check_tokens = int(round(budget * CHECK_FRACTION))
    points = points_at_train_length(df)
    runs = main_rows(points)
    cfgs = {r: _config(c) for r, c in zip(runs["run_id"], runs["config_json"])}
    model_key = {r: json.dumps(c.get("model", {}), sort_keys=True) for r, c in cfgs.items()}
    bases = runs[(runs["role"] == "scaling") & (runs["train_tokens"].astype(int) == budget)]
    quarter = runs[runs["train_tokens"].astype(int) == check_tokens]
    checks = []
    for _, base in bases.sort_values(["family", "params_active_nonembedding", "run_id"]).iterrows():
        base_lr = _lr(cfgs[base["run_id"]])
        if base_lr is None or base_lr <= 0:
            continue
        mates = quarter[[model_key[r] == model_key[base["run_id"]] for r in quarter["run_id"]]]
        others = [(r, _lr(cfgs[r["run_id"]])) for _, r in mates.iterrows()]
        others = [(r, lr) for r, lr in others if lr is not None and not math.isclose(lr, base_lr, rel_tol=1e-9)]
        if not others:
            continue
        pts = [LrPoint(lr / base_lr, lr, str(r["run_id"]), _loss(r)) for r, lr in others]
        branch = points[(points["source_run_id"] == base["run_id"]) & (points["point"] == BRANCH_POINT)
                        & (points["train_tokens"].astype(int) == check_tokens)]
        note = ""
        if branch.empty:
            note = (f"{base['name']} has no cooldown branch at {check_tokens:,} tokens: no 1x loss at this budget "
                    "(give the base run train.cooldown_branches including 0.25)")
        else:
            pts.append(LrPoint(1.0, base_lr, str(branch.iloc[0]["run_id"]), _loss(branch.iloc[0])))
        pts.sort(key=lambda p: p.multiplier)
        finite = [p for p in pts if math.isfinite(p.loss)]
        best = min(finite, key=lambda p: p.loss) if finite else None
        one = next((p for p in pts if p.multiplier == 1.0 and math.isfinite(p.loss)), None)
        gap = None if one is None or best is None else one.loss - best.loss
        checks.append(LrCheck(
            family=str(base["family"]), base_run=str(base["run_id"]), base_name=str(base["name"]),
            params_active_nonembedding=int(base["params_active_nonembedding"]), tokens=check_tokens,
            base_lr=base_lr, points=tuple(pts), best_multiplier=None if best is None else best.multiplier,
            gap_1x_nats=gap, within_tolerance=None if gap is None else bool(gap <= tolerance), note=note))
    per_family: dict[str, bool | None] = {}
    for fam in sorted({c.family for c in checks}):
        flags = [c.within_tolerance for c in checks if c.family == fam]
        per_family[fam] = None if any(f is None for f in flags) else all(flags)
    return LrCheckResult(tuple(checks), tolerance, per_family, favours_words(checks, per_family, tolerance))


def favours_words(checks: Sequence[LrCheck], per_family: dict[str, bool | None], tolerance: float) -> str:
    """Whether the chosen rate favours one family, in words."""
    if not checks:
        return "no learning-rate check runs in this study"
    known = {f: v for f, v in per_family.items() if v is not None}
    missing = sorted(f for f, v in per_family.items() if v is None)
    tail = f"; not decided for {', '.join(missing)} (a 1x point is missing)" if missing else ""
    if not known:
        return "no family has a complete check" + tail
    ok = sorted(f for f, v in known.items() if v)
    off = sorted(f for f, v in known.items() if not v)
    gaps = {f: max(c.gap_1x_nats for c in checks if c.family == f and c.gap_1x_nats is not None) for f in known}
    detail = ", ".join(f"{f} {gaps[f]:.3g}" for f in sorted(gaps))
    if not off:
        return (f"1x is within {tolerance:g} nats of the best rate for every family checked ({', '.join(ok)}): the "
                f"chosen rate does not favour one (largest gap of 1x to the best: {detail})" + tail)
    if not ok:
        return (f"1x is more than {tolerance:g} nats from the best rate for every family checked; largest gaps: "
                f"{detail}; the rate is off for all, not for one" + tail)
    return (f"the chosen rate favours {', '.join(ok)}: 1x is within {tolerance:g} nats of the best for them but "
            f"not for {', '.join(off)} (largest gaps: {detail})" + tail)


def lr_check_rows(df: pd.DataFrame, tolerance: float = TOLERANCE_NATS
                  ) -> tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """Caption, columns and rows of the ``lr_check`` table (``analysis.outputs.TABLES``; ``analysis.tables``
    renders them): one row per base run, the loss at each rate multiplier."""
    from analysis.outputs import TABLES

    res = lr_check(df, tolerance)
    mults = sorted({p.multiplier for c in res.checks for p in c.points}) or [0.5, 1.0, 2.0]
    cols = ("family", "base run", "params active non-emb", "tokens", "base lr",
            *(f"loss at {m:g}x lr (nats)" for m in mults), "best", "1x - best (nats)",
            f"1x within {tolerance:g} nats", "note")
    rows = []
    for c in res.checks:
        by = {p.multiplier: p.loss for p in c.points}
        rows.append((c.family, c.base_run, c.params_active_nonembedding, c.tokens, c.base_lr,
                     *(by.get(m) for m in mults), None if c.best_multiplier is None else f"{c.best_multiplier:g}x",
                     c.gap_1x_nats, c.within_tolerance, c.note))
    return f"{TABLES['lr_check']} Verdict: {res.favours}.", cols, tuple(rows)
