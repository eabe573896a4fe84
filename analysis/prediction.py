"""Carrying a pooled fit to the paper's scale: the equivalence ratio (claim a) or the FLOPs saving (claim b)
predicted at 1.3e9 active parameters, with an interval from the fit's parameter uncertainty.

The prediction evaluates the pooled law's read-off k(x) = x_dense / x_rom at the x of a RoM model with
``n_active`` parameters: x = n_active for claim (a); for savings, the x (FLOPs or seconds) of the largest RoM
run scaled by n_active / its N (FLOPs and time per token grow in proportion to the active parameters, the
token budget staying the study's). With a shared exponent k does not depend on x (the prediction is the
fitted ratio); with an exponent per family it does, and the interval carries the uncertainty of the slope.
The interval is the envelope of the percentile intervals of the run and noise bootstraps' replicates, each
evaluated at the same x: the parameter uncertainty, not the scatter of a single new run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from rom.io import as_float
from analysis.pooled import (PAPER_N_ACTIVE, PooledFit, PooledX, envelope, percentile_interval, quantity, x_ratio)


@dataclass(frozen=True)
class Prediction:
    """The read-off of a pooled fit at a chosen scale (``claims.json``: ``claims[id].prediction``)."""

    n_active: float  # RoM active parameters it is predicted at, in ``param_convention``
    value: float | None  # ratio (claim a) or saving (claim b); None without a usable fit
    interval: tuple[float, float] | None
    level: float
    method: str  # the fit, the bootstrap, how x was set
    quantity: str  # "ratio" | "saving"
    fit_key: str
    param_convention: str
    x: float  # the x the read-off is evaluated at (N, C or seconds)
    extrapolation: float  # n_active / the largest RoM N of the fit (how far beyond the data)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = None if self.interval is None else [self.interval[0], self.interval[1]]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Prediction":
        iv = d.get("interval")
        return Prediction(float(d["n_active"]), as_float(d["value"]),
                          None if iv is None else (as_float(iv[0]), as_float(iv[1])), float(d["level"]),
                          d["method"], d["quantity"], d["fit_key"], d["param_convention"], as_float(d["x"]),
                          as_float(d["extrapolation"]), d.get("note", ""))


def _x_at(fit: PooledFit, n_active: float) -> tuple[float, float]:
    rom = [p for p in fit.points if p.family == fit.rom_family]
    largest = max(rom, key=lambda p: (p.n_params, p.x))
    if fit.x_kind == PooledX.PARAMS:
        return n_active, n_active / largest.n_params
    return largest.x * n_active / largest.n_params, n_active / largest.n_params


def predict_at(fit: PooledFit, n_active: float = PAPER_N_ACTIVE) -> Prediction:
    """The pooled fit's read-off for a RoM model of ``n_active`` parameters (see the module docstring)."""
    q = fit.x_kind.quantity
    form = "exponent shared" if fit.shared_exponent else "exponent per family"
    if not fit.ok or not any(p.family == fit.rom_family for p in fit.points):
        return Prediction(n_active, None, None, fit.ci_level, f"pooled fit {fit.key} ({form})", q, fit.key,
                          fit.param_convention, math.nan, math.nan,
                          f"no usable pooled fit ({fit.status.value}: {fit.message})")
    x, extra = _x_at(fit, n_active)
    value = quantity(fit.x_kind, x_ratio(fit.params, fit.dense_family, fit.rom_family, x))
    ivs = []
    for kind in ("runs", "noise"):
        rows = fit.sample_params(kind)
        if rows:
            vals = [quantity(fit.x_kind, x_ratio(p, fit.dense_family, fit.rom_family, x)) for p in rows]
            ivs.append(percentile_interval(vals, fit.ci_level, f"{kind} bootstrap"))
    iv = envelope(ivs)
    how_x = ("N = n_active" if fit.x_kind == PooledX.PARAMS else
             f"x = the largest RoM run's {fit.x_column} scaled by n_active / its N (the study's token budget)")
    method = (f"pooled fit {fit.key}: {fit.form} ({form}, {fit.loss_fn.name}); read-off at {how_x}, "
              f"{extra:.3g}x the largest RoM run's N; {100 * fit.ci_level:.0f}% "
              + (iv.method if iv else "no interval") + " of the replicates' read-offs at the same x")
    note = "" if fit.status.value == "converged" else f"fit {fit.status.value}: {fit.message}"
    return Prediction(n_active, value if math.isfinite(value) else None, None if iv is None else (iv.lo, iv.hi),
                      fit.ci_level, method, q, fit.key, fit.param_convention, float(x), float(extra), note)


def choose_prediction(fits: Sequence[PooledFit], n_active: float = PAPER_N_ACTIVE) -> Prediction | None:
    """The prediction from the exponent-per-family fit when it is usable (its interval carries the slope's
    uncertainty, which dominates far beyond the data), else from the shared-exponent fit; None without either."""
    free = [f for f in fits if not f.shared_exponent and f.ok and f.bootstraps]
    shared = [f for f in fits if f.shared_exponent and f.ok]
    for group, why in ((free, ""), (shared, "the exponent-per-family fit is not usable; assumes the ratio does "
                                            "not change with N")):
        if group:
            p = predict_at(group[0], n_active)
            return p if not why else Prediction(**{**asdict(p), "note": "; ".join(x for x in (p.note, why) if x)})
    return None
