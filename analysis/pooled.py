"""Pooled scaling fits: dense and RoM families fitted together with a shared asymptote.

Form, with f the family of a point and x its size (N, C or wall-clock time, see ``PooledX``):

    L = E + A_f x^-alpha              (shared exponent: "pooled")
    L = E + A_f x^-alpha_f            (exponent per family: "pooled-free")
    ... + B D^-beta                   (added for x = N when the token budget D varies across the points)

E (and B, beta) are shared by the families. With a shared exponent, a RoM model of size x_r reaches the loss of
a dense model of size k x_r with k = (A_dense / A_rom)^(1/alpha), whatever x_r (and whatever D: the D term
is shared), so the equivalence ratio (x = N) is k and the saving (x = C or time) is 1 - 1/k, each with one
interval. With an exponent per family, k depends on x_r: k(x_r) = (A_d / A_r)^(1/alpha_d) x_r^(alpha_r/alpha_d
- 1); the slope d ln k / d ln x = alpha_r / alpha_d - 1 says whether RoM's advantage grows (> 0) or shrinks
(< 0) with scale.

Conventions are those of ``analysis.fit`` (loss in nats/token at the training length; raw units; bounds
0 <= E <= min L, exponents in [0, 3], log-coefficients in [-15, 15]; an optimum within 1e-6 of a bound is
``HIT_BOUND``; points selected by ``analysis.fit.select_points``, every left-out run listed with its reason).
Differences:

* Objective: ``FitLoss`` - least squares or Huber on the log residual r = log(pred) - log(L). The Huber scale
  follows the measured noise (delta = k * sigma_log, k = 1.345 by default: 95% efficiency under Gaussian
  noise, robust to one bad run); the choice is made by the recovery test (tests/test_analysis_recovery.py,
  docs/analysis.md), not by a constant in log units.
* Two bootstraps, both stratified by family (each family keeps its number of units):
  - ``runs``: resample units with replacement. A unit is a training run; points that share a run (cooldown
    branches recorded at several token budgets) share its unit (column ``UNIT_COLUMN`` when present) and are
    drawn together;
  - ``noise`` (parametric): new losses pred_i * exp(sigma_f * z_i) around the fitted law with each family's
    measured seed spread (``analysis.noise``); sigma_f itself is drawn from its sampling distribution
    (s_f * sqrt(dof / chi2_dof)) in every replicate so that a spread measured from three seeds does not
    give overconfident intervals.
  The headline interval of a derived quantity is the envelope of the two (lo = min, hi = max): it covers
  noise and leverage / misfit; the recovery test checks its coverage.
"""

from __future__ import annotations

import enum
import logging
import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from rom.io import as_float
from analysis.fit import (ALL_BUDGETS, BOUND_TOL, EXPONENT_BOUNDS, LOGCOEF_BOUNDS, MAIN_BUDGET, FitStatus,
                          FlopConvention, ParamConvention, _with_single_blas_thread, minimize_from_starts,
                          select_points)
from analysis.noise import NoiseEstimate, estimate_noise, residual_noise

log = logging.getLogger(__name__)

UNIT_COLUMN = "source_run_id"  # points that share a training run (cooldown branches) share this id
HUBER_K = 1.345  # Huber delta in units of the noise's log-space standard deviation
# Chosen by the recovery test (tests/test_analysis_recovery.py; numbers in docs/analysis.md): under Gaussian
# log noise least squares gave the smallest error of ln(ratio) at every noise level (Huber(1.345 sigma) 15-20%
# larger, Huber(1e-3) up to 40% larger), and no Huber loss removed the bias of a single outlying run (the fit
# bends towards it: its residual stays small), so robustness bought nothing measurable.
PAPER_N_ACTIVE = 1.3e9  # the paper's headline scale (active parameters)


class PooledX(str, enum.Enum):
    """What x is in a pooled fit, and therefore what the read-off means."""

    PARAMS = "params"  # N under the parameter convention -> equivalence ratio N_eq / N_r
    FLOPS = "flops"  # C under the FLOP convention -> saving 1 - C_r / C_dense
    FLOPS_NO_HEAD = "flops_nohead"  # C without the LM head (the embedding lookup has no FLOPs) -> saving
    WALL = "wall"  # training wall-clock seconds -> measured wall-clock saving

    @property
    def quantity(self) -> str:
        return "ratio" if self == PooledX.PARAMS else "saving"


@dataclass(frozen=True)
class FitLoss:
    """The fit objective on log residuals: least squares (``delta`` None) or Huber(delta)."""

    name: str  # "least_squares" | "huber"
    delta: float | None
    rule: str  # how delta was chosen

    @staticmethod
    def least_squares() -> "FitLoss":
        return FitLoss("least_squares", None, "least squares on log residuals")

    @staticmethod
    def huber_from_noise(sigma_log: float, k: float = HUBER_K) -> "FitLoss":
        if not (sigma_log > 0 and math.isfinite(sigma_log)):
            return FitLoss("least_squares", None, "least squares (no noise estimate to scale a Huber loss)")
        return FitLoss("huber", k * sigma_log, f"Huber, delta = {k:g} x the seed noise's log-space std "
                                               f"({sigma_log:.3g})")

    @staticmethod
    def huber_fixed(delta: float) -> "FitLoss":
        return FitLoss("huber", float(delta), f"Huber, fixed delta = {delta:g} (log units)")


DEFAULT_LOSS = FitLoss.least_squares()


# ------------------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    level: float
    method: str  # "run bootstrap" | "noise bootstrap" | "envelope of run and noise bootstraps" | "profile over E"
    n: int = 0  # replicates (or grid points) behind it


@dataclass(frozen=True)
class Derived:
    """A quantity derived from a pooled fit: the point value and its intervals (``interval`` is the headline).

    ``name``: "ratio" (x_dense / x_rom at equal loss), "saving" (1 - x_rom / x_dense) or "slope"
    (d ln(x_dense/x_rom) / d ln x_rom). ``at``: the x_rom it is evaluated at (None when it does not depend on
    it). ``replicates_without_value``: bootstrap replicates where it is undefined (counted as inf / 1).
    """

    name: str
    value: float | None
    at: float | None
    interval: Interval | None
    intervals: tuple[Interval, ...]
    replicates_without_value: int = 0


@dataclass(frozen=True)
class PooledPoint:
    run_id: str
    unit: str
    family: str
    x: float
    tokens: float
    loss: float
    pred: float
    log_residual: float
    n_params: float = math.nan  # N under the parameter convention (= x for x_kind params)


@dataclass(frozen=True)
class PooledBootstrap:
    kind: str  # "runs" | "noise"
    requested: int
    ok: int
    seed: int
    samples: tuple[tuple[float, ...], ...]  # rows in PooledFit.free_names order
    note: str = ""


@dataclass(frozen=True)
class PooledFit:
    """Dense + RoM fitted together (frozen; see the module docstring for the form and conventions)."""

    key: str  # "<variant>:<x>:<dense>+<rom>", e.g. "pooled:params:mamba+rom"
    variant: str  # "pooled" (shared exponent) | "pooled-free" (exponent per family)
    x_kind: PooledX
    dense_family: str
    rom_family: str
    shared_exponent: bool
    token_term: bool  # B D^-beta included (token budgets vary)
    form: str
    status: FitStatus
    message: str
    param_convention: str
    flop_convention: str
    x_column: str
    param_names: tuple[str, ...]  # e.g. ("E", "A[mamba]", "A[rom]", "alpha")
    params: dict[str, float] | None
    fixed: dict[str, float]
    ci: dict[str, tuple[float, float]] | None  # envelope of the two bootstraps, per free parameter
    ci_level: float
    ci_note: str
    loss_fn: FitLoss
    noise: dict[str, NoiseEstimate]
    n_points: int
    n_units: int
    dof: int
    x_range: dict[str, tuple[float, float]]  # per family
    objective: float
    points: tuple[PooledPoint, ...]
    excluded: tuple[tuple[str, str], ...]
    bootstraps: tuple[PooledBootstrap, ...]
    derived: tuple[Derived, ...]  # ratio or saving (shared: constant; free: at the largest RoM x), slope
    lack_of_fit: dict[str, float] = field(default_factory=dict)  # chi2, dof, p_value, residual_sigma_log
    units: dict[str, str] = field(default_factory=lambda: {"L": "nats/token", "N": "parameters", "C": "FLOPs",
                                                              "T": "seconds", "D": "tokens"})

    @property
    def ok(self) -> bool:
        return self.params is not None and self.status in (FitStatus.CONVERGED, FitStatus.HIT_BOUND)

    @property
    def free_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.param_names if n not in self.fixed)

    def sample_params(self, kind: str | None = None) -> list[dict[str, float]]:
        """Bootstrap replicates (``kind`` "runs", "noise" or None for both) as full parameter dicts."""
        out = []
        for b in self.bootstraps:
            if kind is None or b.kind == kind:
                out += [{**self.fixed, **dict(zip(self.free_names, row))} for row in b.samples]
        return out

    def get(self, name: str) -> Derived | None:
        return next((d for d in self.derived if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["x_kind"] = self.x_kind.value
        d["status"] = self.status.value
        d["noise"] = {k: asdict(v) for k, v in self.noise.items()}
        return d

    @staticmethod
    def from_dict(d: dict[str, Any], source: str = "<fits>") -> "PooledFit":
        def interval(v: Any) -> Interval | None:
            return None if v is None else Interval(as_float(v["lo"]), as_float(v["hi"]), float(v["level"]),
                                                   v["method"], int(v.get("n", 0)))

        try:
            return PooledFit(
                key=d["key"], variant=d["variant"], x_kind=PooledX(d["x_kind"]), dense_family=d["dense_family"],
                rom_family=d["rom_family"], shared_exponent=bool(d["shared_exponent"]),
                token_term=bool(d["token_term"]), form=d["form"], status=FitStatus(d["status"]),
                message=d["message"], param_convention=d["param_convention"],
                flop_convention=d["flop_convention"], x_column=d["x_column"],
                param_names=tuple(d["param_names"]),
                params=None if d["params"] is None else {k: as_float(v) for k, v in d["params"].items()},
                fixed={k: as_float(v) for k, v in d["fixed"].items()},
                ci=None if d["ci"] is None else {k: (as_float(v[0]), as_float(v[1])) for k, v in d["ci"].items()},
                ci_level=float(d["ci_level"]), ci_note=d["ci_note"],
                loss_fn=FitLoss(d["loss_fn"]["name"], None if d["loss_fn"]["delta"] is None
                                else as_float(d["loss_fn"]["delta"]), d["loss_fn"]["rule"]),
                noise={k: NoiseEstimate.from_dict(v) for k, v in d["noise"].items()},
                n_points=int(d["n_points"]), n_units=int(d["n_units"]), dof=int(d["dof"]),
                x_range={k: (as_float(v[0]), as_float(v[1])) for k, v in d["x_range"].items()},
                objective=as_float(d["objective"]),
                points=tuple(PooledPoint(p["run_id"], p["unit"], p["family"], as_float(p["x"]),
                                         as_float(p["tokens"]), as_float(p["loss"]), as_float(p["pred"]),
                                         as_float(p["log_residual"]), as_float(p.get("n_params", math.nan)))
                             for p in d["points"]),
                excluded=tuple((e[0], e[1]) for e in d["excluded"]),
                bootstraps=tuple(PooledBootstrap(b["kind"], int(b["requested"]), int(b["ok"]), int(b["seed"]),
                                                 tuple(tuple(as_float(v) for v in row) for row in b["samples"]),
                                                 b.get("note", "")) for b in d["bootstraps"]),
                derived=tuple(Derived(x["name"], as_float(x["value"]), as_float(x["at"]),
                                      interval(x["interval"]), tuple(interval(i) for i in x["intervals"]),
                                      int(x.get("replicates_without_value", 0))) for x in d["derived"]),
                units=dict(d.get("units", {})),
                lack_of_fit={k: as_float(v) for k, v in d.get("lack_of_fit", {}).items()},
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise AnalysisError(f"{source}: pooled fit entry {d.get('key', '?')!r} is malformed ({e!r})") from None


# ------------------------------------------------------------------------------------- arithmetic


def x_ratio(params: dict[str, float], dense: str, rom: str, x_rom: float | None = None) -> float:
    """k = x_dense / x_rom at equal loss (the D term, shared, cancels). Shared exponent: k does not depend on
    x_rom. Per-family exponents: k(x_rom) = (A_d / A_r)^(1/alpha_d) x_rom^(alpha_r / alpha_d - 1).
    Returns inf/0 at degenerate parameters (an exponent or coefficient at 0)."""
    a_d, a_r = params[f"A[{dense}]"], params[f"A[{rom}]"]
    if "alpha" in params:
        al_d = al_r = params["alpha"]
    else:
        al_d, al_r = params[f"alpha[{dense}]"], params[f"alpha[{rom}]"]
    if not (a_d > 0 and a_r > 0 and al_d > 0):
        return math.inf
    log_k = (math.log(a_d) - math.log(a_r)) / al_d
    if al_r != al_d:
        if x_rom is None:
            raise AnalysisError("x_ratio: per-family exponents need the RoM size x_rom")
        log_k += (al_r / al_d - 1.0) * math.log(x_rom)
    return math.exp(min(log_k, 700.0))


def slope(params: dict[str, float], dense: str, rom: str) -> float:
    """d ln k / d ln x_rom = alpha_rom / alpha_dense - 1 (0 with a shared exponent)."""
    if "alpha" in params:
        return 0.0
    al_d = params[f"alpha[{dense}]"]
    return params[f"alpha[{rom}]"] / al_d - 1.0 if al_d > 0 else math.inf


def quantity(kind: PooledX, k: float) -> float:
    """The read-off from k = x_dense / x_rom: the ratio itself (x = N) or the saving 1 - 1/k."""
    return k if kind == PooledX.PARAMS else 1.0 - 1.0 / k


def predict(fit: PooledFit, family: str, x: Any, tokens: Any = None, params: dict[str, float] | None = None) -> Any:
    """The pooled law of ``family`` at x (and D, when the fit has a token term)."""
    p = params if params is not None else fit.params
    if p is None:
        raise AnalysisError(f"pooled fit {fit.key} has no parameters (status {fit.status.value})")
    alpha = p["alpha"] if fit.shared_exponent else p[f"alpha[{family}]"]
    out = p["E"] + p[f"A[{family}]"] * np.power(np.asarray(x, float), -alpha)
    if fit.token_term:
        if tokens is None:
            raise AnalysisError(f"pooled fit {fit.key} has a token term: give tokens")
        out = out + p["B"] * np.power(np.asarray(tokens, float), -p["beta"])
    return out


def percentile_interval(values: Sequence[float], level: float, method: str) -> Interval:
    """Percentile interval tolerating +-inf (order statistics, no interpolation)."""
    arr = np.sort(np.asarray(values, float))
    lo = float(np.quantile(arr, (1 - level) / 2, method="lower"))
    hi = float(np.quantile(arr, (1 + level) / 2, method="higher"))
    return Interval(lo, hi, level, method, len(arr))


def envelope(intervals: Sequence[Interval], method: str = "envelope of run and noise bootstraps") -> Interval | None:
    if not intervals:
        return None
    if len(intervals) == 1:
        return intervals[0]
    return Interval(min(i.lo for i in intervals), max(i.hi for i in intervals), intervals[0].level, method,
                    min(i.n for i in intervals))


# ------------------------------------------------------------------------------------- the optimiser


@dataclass
class _Problem:
    """Normalised: pred = E + exp(c_f - a_f * lx) (+ exp(cB - b * ld)); lx = log(x / ref), ld = log(D / refD)."""

    lx: np.ndarray  # (n,)
    fam: np.ndarray  # (n,) int in [0, F)
    ld: np.ndarray | None  # (n,) or None without a token term
    logy: np.ndarray
    n_fam: int
    shared: bool
    fixed_E: float | None
    delta: float | None  # None: least squares

    @property
    def n_alpha(self) -> int:
        return 1 if self.shared else self.n_fam

    def unpack(self, th: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float, float]:
        i = 0
        if self.fixed_E is None:
            E, i = th[0], 1
        else:
            E = self.fixed_E
        c = th[i:i + self.n_fam]
        i += self.n_fam
        a = th[i:i + self.n_alpha]
        i += self.n_alpha
        cb, b = (th[i], th[i + 1]) if self.ld is not None else (0.0, 0.0)
        return E, c, a, cb, b

    def objective(self, th: np.ndarray) -> tuple[float, np.ndarray]:
        E, c, a, cb, b = self.unpack(th)
        af = a[0] if self.shared else a[self.fam]
        t = np.exp(c[self.fam] - af * self.lx)
        pred = E + t
        if self.ld is not None:
            td = np.exp(cb - b * self.ld)
            pred = pred + td
        pred = np.maximum(pred, 1e-300)
        r = np.log(pred) - self.logy
        if self.delta is None:
            value = 0.5 * float(r @ r)
            dr = r / pred
        else:
            absr = np.abs(r)
            value = float(np.sum(np.where(absr <= self.delta, 0.5 * r * r, self.delta * (absr - 0.5 * self.delta))))
            dr = np.clip(r, -self.delta, self.delta) / pred
        g = []
        if self.fixed_E is None:
            g.append(dr.sum())
        wt = dr * t
        g.extend(np.bincount(self.fam, weights=wt, minlength=self.n_fam))
        if self.shared:
            g.append(-(wt * self.lx).sum())
        else:
            g.extend(np.bincount(self.fam, weights=-wt * self.lx, minlength=self.n_fam))
        if self.ld is not None:
            wd = dr * td
            g += [wd.sum(), -(wd * self.ld).sum()]
        return value, np.asarray(g, float)

    def bounds(self) -> list[tuple[float, float]]:
        b = [] if self.fixed_E is not None else [(0.0, float(np.exp(self.logy.min())))]
        b += [LOGCOEF_BOUNDS] * self.n_fam + [EXPONENT_BOUNDS] * self.n_alpha
        if self.ld is not None:
            b += [LOGCOEF_BOUNDS, EXPONENT_BOUNDS]
        return b

    def names(self, families: Sequence[str]) -> list[str]:
        n = [] if self.fixed_E is not None else ["E"]
        n += [f"A[{f}]" for f in families]
        n += ["alpha"] if self.shared else [f"alpha[{f}]" for f in families]
        if self.ld is not None:
            n += ["B", "beta"]
        return n

    def starts(self) -> list[np.ndarray]:
        lmin = float(np.exp(self.logy.min()))
        lmean = float(np.exp(self.logy.mean()))
        e_grid = [self.fixed_E] if self.fixed_E is not None else [0.0, 0.4 * lmin, 0.8 * lmin, 0.95 * lmin]
        a_grid = [0.1, 0.3, 0.6, 1.2]
        b_grid = [0.2, 0.6] if self.ld is not None else [None]
        bounds = list(zip(*self.bounds()))
        out = []
        for E in e_grid:
            n_terms = 2 if self.ld is not None else 1
            gap = max(lmean - E, 1e-3 * lmean) / n_terms
            for shift in (-1.0, 0.0, 1.0):
                for a in a_grid:
                    for b in b_grid:
                        th = [] if self.fixed_E is not None else [E]
                        th += [math.log(gap) + shift] * self.n_fam + [a] * self.n_alpha
                        if b is not None:
                            th += [math.log(gap) + shift, b]
                        out.append(np.clip(np.asarray(th, float), *bounds))
        return out

    def optimise(self, starts: Sequence[np.ndarray]) -> tuple[np.ndarray | None, float, list[tuple[float, np.ndarray]]]:
        found = [(r.value, r.theta) for r in minimize_from_starts(self.objective, starts, self.bounds()) if r.success]
        if not found:
            return None, math.nan, []
        return found[0][1], found[0][0], found

    def at_bound(self, th: np.ndarray, families: Sequence[str]) -> list[str]:
        hits = []
        for name, v, (lo, hi) in zip(self.names(families), th, self.bounds()):
            span = max(hi - lo, 1.0)
            label = name if not name.startswith(("A[", "B")) else f"log {name} at the reference x"
            if v - lo <= BOUND_TOL * span:
                hits.append(f"{label}={v:.4g} at lower bound {lo:.4g}")
            elif hi - v <= BOUND_TOL * span:
                hits.append(f"{label}={v:.4g} at upper bound {hi:.4g}")
        return hits

    def raw(self, th: np.ndarray, families: Sequence[str], ref: float, ref_d: float) -> dict[str, float]:
        E, c, a, cb, b = self.unpack(th)
        out = {"E": float(E)}
        for j, f in enumerate(families):
            aj = a[0] if self.shared else a[j]
            out[f"A[{f}]"] = float(np.exp(c[j] + aj * math.log(ref)))
        if self.shared:
            out["alpha"] = float(a[0])
        else:
            out.update({f"alpha[{f}]": float(a[j]) for j, f in enumerate(families)})
        if self.ld is not None:
            out["B"] = float(np.exp(cb + b * math.log(ref_d)))
            out["beta"] = float(b)
        return out

    def pred(self, th: np.ndarray) -> np.ndarray:
        E, c, a, cb, b = self.unpack(th)
        af = a[0] if self.shared else a[self.fam]
        p = E + np.exp(c[self.fam] - af * self.lx)
        if self.ld is not None:
            p = p + np.exp(cb - b * self.ld)
        return p

    def with_data(self, idx: np.ndarray | None = None, logy: np.ndarray | None = None) -> "_Problem":
        sel = slice(None) if idx is None else idx
        return _Problem(self.lx[sel], self.fam[sel], None if self.ld is None else self.ld[sel],
                        (self.logy if logy is None else logy)[sel], self.n_fam, self.shared, self.fixed_E,
                        self.delta)


# ------------------------------------------------------------------------------------- data


def x_values(points: pd.DataFrame, kind: PooledX, params: ParamConvention, flops: FlopConvention) -> tuple[np.ndarray, str]:
    """x of each point and a description of it; AnalysisError when the table lacks what ``kind`` needs."""
    if kind == PooledX.PARAMS:
        return points[params.column].to_numpy(float), params.column
    if kind == PooledX.FLOPS:
        col = "flops_train_total" if flops == FlopConvention.TRAIN_TOTAL else f"6*{params.column}*train_tokens"
        return flops.values(points, params), col
    if kind == PooledX.FLOPS_NO_HEAD:
        from analysis.conventions import flops_without_head

        return flops_without_head(points), "flops_train_total * (1 - head / per_token_fwd)"
    return points["wall_time_s"].to_numpy(float), "wall_time_s"


def units_of(points: pd.DataFrame) -> np.ndarray:
    """Bootstrap unit of each point: its training run (``UNIT_COLUMN`` when present and set, else run_id)."""
    run = points["run_id"].astype(str).to_numpy()
    if UNIT_COLUMN not in points.columns:
        return run
    src = points[UNIT_COLUMN]
    return np.where(src.notna() & (src.astype(str) != ""), src.astype(str), run)


# ------------------------------------------------------------------------------------- fitting


def _derive(kind: PooledX, params: dict[str, float], dense: str, rom: str, shared: bool,
            x_at: float | None) -> dict[str, float]:
    k = x_ratio(params, dense, rom, x_at)
    out = {kind.quantity: quantity(kind, k)}
    if not shared:
        out["slope"] = slope(params, dense, rom)
    return out


def derived_quantities(kind: PooledX, point: dict[str, float] | None, samples: dict[str, list[dict[str, float]]],
                       dense: str, rom: str, shared: bool, x_at: float | None, level: float) -> tuple[Derived, ...]:
    """Ratio / saving (and the slope for per-family exponents) with run, noise and envelope intervals."""
    if point is None:
        return ()
    names = [kind.quantity] + ([] if shared else ["slope"])
    at = None if shared else x_at
    pv = _derive(kind, point, dense, rom, shared, x_at)
    out = []
    for name in names:
        ivs, undefined = [], 0
        for bkind, rows in samples.items():
            if not rows:
                continue
            vals = [_derive(kind, p, dense, rom, shared, x_at)[name] for p in rows]
            undefined += sum(1 for v in vals if not math.isfinite(v) or (name == "saving" and v >= 1.0))
            ivs.append(percentile_interval(vals, level, f"{bkind} bootstrap"))
        value = pv[name] if math.isfinite(pv[name]) else None
        out.append(Derived(name, value, at if name != "slope" else None, envelope(ivs), tuple(ivs), undefined))
    return tuple(out)


@_with_single_blas_thread
def fit_pooled(
    df: pd.DataFrame,
    dense: str,
    rom: str,
    kind: PooledX = PooledX.PARAMS,
    shared_exponent: bool = True,
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    loss: FitLoss | None = None,
    noise: dict[str, NoiseEstimate] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    fixed_E: float | None = None,
    x_at: float | None = None,
    tokens: str | int | None = None,
) -> PooledFit:
    """Fit dense and RoM families of the collected table together (see the module docstring).

    ``loss``: the objective (default: Huber with delta = 1.345 x the pooled seed noise, least squares when no
    noise is measured). ``noise``: per-family noise estimates (default: ``estimate_noise(df)``).
    ``x_at``: the RoM size at which a per-family-exponent ratio is evaluated (default: the largest RoM x).
    ``tokens``: which token budgets (``analysis.fit.select_points``): by default every budget for x = N (the
    form gains B D^-beta when they vary: cooldown branches) and the study's main budget otherwise (an L(C) or
    wall-clock law at one budget); an integer: that budget only.
    """
    families = [dense, rom]
    variant = "pooled" if shared_exponent else "pooled-free"
    key = f"{variant}:{kind.value}:{dense}+{rom}"
    sel, excluded = [], []
    for f in families:
        pts, exc = select_points(df, f, tokens if tokens is not None else (
            ALL_BUDGETS if kind == PooledX.PARAMS else MAIN_BUDGET))
        sel.append(pts)
        excluded += exc
    points = pd.concat(sel, ignore_index=True) if any(len(p) for p in sel) else sel[0]
    noise = estimate_noise(df, families) if noise is None else noise
    if loss is None:
        loss = DEFAULT_LOSS
    fam_idx = np.asarray([families.index(f) for f in points["family"]], int)
    logy_raw = points["loss_nats"].to_numpy(float)
    tokens = points["train_tokens"].to_numpy(float)
    token_term = kind == PooledX.PARAMS and len(set(tokens)) > 1
    try:
        x, x_col = x_values(points, kind, param_convention, flop_convention)
    except (KeyError, AnalysisError) as e:
        x, x_col = np.full(len(points), np.nan), f"unavailable ({e})"
    units = units_of(points)
    n_par = points[param_convention.column].to_numpy(float)
    form = ("L = E + A_f x^-alpha" if shared_exponent else "L = E + A_f x^-alpha_f") + (
        " + B D^-beta" if token_term else "")
    names_all = ["E", f"A[{dense}]", f"A[{rom}]"] + (
        ["alpha"] if shared_exponent else [f"alpha[{dense}]", f"alpha[{rom}]"]) + (
        ["B", "beta"] if token_term else [])
    fixed = {"E": float(fixed_E)} if fixed_E is not None else {}
    n_free = len(names_all) - len(fixed)
    distinct = {(int(f), float(a), float(t)) for f, a, t in zip(fam_idx, x, tokens)}
    dof = len(distinct) - n_free
    x_range = {f: ((float(np.nanmin(x[fam_idx == j])), float(np.nanmax(x[fam_idx == j])))
                   if np.any(fam_idx == j) else (math.nan, math.nan)) for j, f in enumerate(families)}
    if x_at is None and np.any(fam_idx == 1):
        x_at = float(np.nanmax(x[fam_idx == 1]))
    common = dict(key=key, variant=variant, x_kind=kind, dense_family=dense, rom_family=rom,
                  shared_exponent=shared_exponent, token_term=token_term, form=form,
                  param_convention=param_convention.value, flop_convention=flop_convention.value, x_column=x_col,
                  param_names=tuple(names_all), fixed=fixed, ci_level=ci_level, loss_fn=loss, noise=dict(noise),
                  n_points=len(points), n_units=len(set(units)), dof=dof, x_range=x_range,
                  excluded=tuple(excluded))

    def no_fit(status: FitStatus, message: str) -> PooledFit:
        pts = tuple(PooledPoint(r, u, f, float(a), float(t), float(l), math.nan, math.nan, float(nn))
                    for r, u, f, a, t, l, nn in zip(points["run_id"], units, points["family"], x, tokens, logy_raw,
                                                    n_par))
        return PooledFit(status=status, message=message, params=None, ci=None, ci_note="no fit",
                         objective=math.nan, points=pts, bootstraps=(), derived=(), **common)

    per_fam = [len({a for f, a, _ in distinct if f == j}) for j in range(2)]
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        return no_fit(FitStatus.FAILED, f"x ({x_col}) missing or not positive for some runs")
    need = (2, 1) if shared_exponent else (2, 2)
    if per_fam[0] < need[0] or per_fam[1] < need[1]:
        return no_fit(FitStatus.TOO_FEW_POINTS,
                      f"{per_fam[0]} distinct {dense} and {per_fam[1]} distinct {rom} sizes; this form needs at "
                      f"least {need[0]} and {need[1]}")
    if dof < 0:
        return no_fit(FitStatus.TOO_FEW_POINTS, f"{len(distinct)} distinct points for {n_free} free parameters")
    if fixed_E is not None and not 0 <= fixed_E < logy_raw.min():
        return no_fit(FitStatus.FAILED, f"fixed E={fixed_E} must lie in [0, min loss={logy_raw.min():.4g})")

    ref = float(np.exp(np.log(x).mean()))
    ref_d = float(np.exp(np.log(tokens).mean()))
    problem = _Problem(np.log(x / ref), fam_idx, np.log(tokens / ref_d) if token_term else None, np.log(logy_raw),
                       2, shared_exponent, fixed_E, loss.delta)
    theta, value, ranked = problem.optimise(problem.starts())
    if theta is None:
        return no_fit(FitStatus.FAILED, "L-BFGS-B did not converge from any start")
    params = problem.raw(theta, families, ref, ref_d)
    if fixed_E is not None:
        params["E"] = float(fixed_E)
    params = {n: params[n] for n in names_all}
    hits = problem.at_bound(theta, families)
    status = FitStatus.HIT_BOUND if hits else FitStatus.CONVERGED
    notes = list(hits)
    if kind != PooledX.PARAMS and len(set(tokens)) > 1:
        notes.append(f"token budgets vary ({len(set(tokens))} distinct); this fit in {kind.value} mixes them")
    pred = problem.pred(theta)
    pts = tuple(PooledPoint(r, u, f, float(a), float(t), float(l), float(p), float(math.log(p) - math.log(l)),
                            float(nn))
                for r, u, f, a, t, l, p, nn in zip(points["run_id"], units, points["family"], x, tokens, logy_raw,
                                                   pred, n_par))

    lof = lack_of_fit(pts, noise, len(pts) - n_free)
    if lof and lof["p_value"] < 0.01:
        notes.append(f"residuals exceed the seed noise (F = {lof['F']:.3g} on {int(lof['dof'])} and "
                     f"{int(lof['seed_dof'])} dof, p = {lof['p_value']:.2g}): the form misfits or a run is off; "
                     "intervals from noise alone would be too narrow")
    if any(noise.get(f) is None or noise[f].dof <= 0 for f in families) and dof > 0:
        res = residual_noise("+".join(families), [p.log_residual for p in pts], dof, float(logy_raw.mean()))
        noise = {f: noise[f] if f in noise and noise[f].dof > 0 else
                 NoiseEstimate(f, res.sigma_log, res.sigma_nats, res.dof, res.source) for f in families}
        common["noise"] = dict(noise)
        notes.append("no seed runs: the noise bootstrap uses the fit's residual spread")
    free = [n for n in names_all if n not in fixed]
    boots: list[PooledBootstrap] = []
    ci, ci_note = None, ""
    if dof == 0:
        ci_note = (f"exactly determined ({len(distinct)} distinct points for {n_free} free parameters): no interval")
    elif bootstrap <= 0:
        ci_note = "bootstrap disabled"
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))
        boots.append(_run_bootstrap(problem, units, fam_idx, theta, bootstrap, rng, families, ref, ref_d, free,
                                    n_free, seed))
        boots.append(_noise_bootstrap(problem, pred, fam_idx, noise, theta, bootstrap, rng, families, ref, ref_d,
                                      free, seed))
        per = []
        for b in boots:
            if b.ok >= 0.5 * bootstrap:
                arr = np.asarray(b.samples)
                per.append({n: (float(np.percentile(arr[:, j], 50 * (1 - ci_level))),
                                float(np.percentile(arr[:, j], 50 * (1 + ci_level)))) for j, n in enumerate(free)})
        if per:
            ci = {n: (min(p[n][0] for p in per), max(p[n][1] for p in per)) for n in free}
        ci_note = "; ".join(f"{b.kind} bootstrap {b.ok}/{b.requested}" + (f" ({b.note})" if b.note else "")
                            for b in boots)
        ci_note = f"{100 * ci_level:.0f}% percentile envelope of: {ci_note}" if ci else f"no CI: {ci_note}"
    samples = {b.kind: [{**fixed, **dict(zip(free, row))} for row in b.samples]
               for b in boots if b.ok >= 0.5 * bootstrap}
    derived = derived_quantities(kind, params, samples, dense, rom, shared_exponent, x_at, ci_level)
    return PooledFit(status=status, message="; ".join(notes) if notes else "converged", params=params, ci=ci,
                     ci_note=ci_note, objective=value, points=pts, bootstraps=tuple(boots), derived=derived,
                     lack_of_fit=lof, **common)


def lack_of_fit(points: Sequence[PooledPoint], noise: dict[str, NoiseEstimate], dof: int) -> dict[str, float]:
    """Do the residuals exceed the seed noise? F = (sum (r_i / s_f)^2 / dof) against F(dof, seed dof): the
    seed spread is itself an estimate (often from 3 runs), so a chi-square test would overstate the
    evidence. Returns {chi2, dof, seed_dof, F, p_value, residual_sigma_log}; empty without seed-measured noise
    for every point's family or without residual degrees of freedom."""
    from scipy.stats import f as f_dist

    if dof <= 0 or not points:
        return {}
    sig, groups = [], {}
    for p in points:
        e = noise.get(p.family)
        if e is None or e.dof <= 0 or not e.source.startswith("seeds") or not e.sigma_log > 0:
            return {}
        sig.append(e.sigma_log)
        groups[e.groups] = e.dof
    seed_dof = sum(groups.values())
    r = np.asarray([p.log_residual for p in points])
    stat = float(np.sum((r / np.asarray(sig)) ** 2))
    F = stat / dof
    return {"chi2": stat, "dof": float(dof), "seed_dof": float(seed_dof), "F": F,
            "p_value": float(f_dist.sf(F, dof, seed_dof)), "residual_sigma_log": float(math.sqrt(float(r @ r) / dof))}


def _pooled_sigma(noise: dict[str, NoiseEstimate], families: Sequence[str]) -> float:
    """The dof-weighted pooled log-space noise of the families (nan without any estimate)."""
    est = [noise[f] for f in families if f in noise and noise[f].dof > 0 and math.isfinite(noise[f].sigma_log)]
    if not est:
        return math.nan
    dof = sum(e.dof for e in est)
    return math.sqrt(sum(e.dof * e.sigma_log ** 2 for e in est) / dof)


def batched_fit(problem: _Problem, theta0: np.ndarray, logy: np.ndarray, weights: np.ndarray,
                max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Refit B data sets at once (bootstrap replicates): rows of ``logy`` (B, n) with point weights ``weights``
    (B, n; a run drawn twice weighs 2, one not drawn 0), starting from ``theta0``. Levenberg-Marquardt on the
    weighted objective (least squares, or Huber through iteratively reweighted least squares), parameters
    projected onto the bounds after each step. Returns (theta (B, p), converged (B,))."""
    B, n = logy.shape
    th = np.repeat(np.asarray(theta0, float)[None, :], B, axis=0)
    lo, hi = (np.asarray(v, float) for v in zip(*problem.bounds()))
    lo = np.repeat(lo[None, :], B, axis=0)
    hi = np.repeat(hi[None, :], B, axis=0)
    if problem.fixed_E is None:  # E below the smallest loss each replicate uses
        ymin = np.where(weights > 0, logy, np.inf).min(axis=1)
        hi[:, 0] = np.exp(ymin)
        th[:, 0] = np.minimum(th[:, 0], hi[:, 0] * (1 - 1e-9))
    p = th.shape[1]
    onehot = np.eye(problem.n_fam)[problem.fam]  # (n, F)
    delta = problem.delta

    def residuals(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = 0
        if problem.fixed_E is None:
            E, i = t[:, :1], 1
        else:
            E = np.full((B, 1), problem.fixed_E)
        c = t[:, i:i + problem.n_fam]
        i += problem.n_fam
        a = t[:, i:i + problem.n_alpha]
        i += problem.n_alpha
        af = a[:, :1] if problem.shared else a[:, problem.fam]
        tt = np.exp(c[:, problem.fam] - af * problem.lx[None, :])  # (B, n)
        pred = E + tt
        cols = [] if problem.fixed_E is None else None
        if problem.ld is not None:
            td = np.exp(t[:, i:i + 1] - t[:, i + 1:i + 2] * problem.ld[None, :])
            pred = pred + td
        pred = np.maximum(pred, 1e-300)
        J = np.empty((B, n, p))
        j = 0
        if cols is not None:
            J[:, :, 0] = 1.0
            j = 1
        J[:, :, j:j + problem.n_fam] = tt[:, :, None] * onehot[None, :, :]
        j += problem.n_fam
        if problem.shared:
            J[:, :, j] = -tt * problem.lx[None, :]
        else:
            J[:, :, j:j + problem.n_fam] = (-tt * problem.lx[None, :])[:, :, None] * onehot[None, :, :]
        j += problem.n_alpha
        if problem.ld is not None:
            J[:, :, j] = td
            J[:, :, j + 1] = -td * problem.ld[None, :]
        J /= pred[:, :, None]
        return np.log(pred) - logy, J, pred

    def objective(r: np.ndarray) -> np.ndarray:
        if delta is None:
            return 0.5 * np.sum(weights * r * r, axis=1)
        a = np.abs(r)
        return np.sum(weights * np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)), axis=1)

    lam = np.full(B, 1e-3)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r, J, _ = residuals(th)
        obj = objective(r)
        done = np.zeros(B, bool)
        for _ in range(max_iter):
            w = weights if delta is None else weights * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
            g = np.einsum("bnp,bn->bp", J, w * r)
            H = np.einsum("bnp,bnq,bn->bpq", J, J, w)
            diag = np.einsum("bpp->bp", H)
            A = H + (lam[:, None] * (diag + 1e-12))[:, :, None] * np.eye(p)[None]
            try:
                step = -np.linalg.solve(A, g[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = -g * 1e-3
            new = np.clip(th + np.where(done[:, None], 0.0, step), lo, hi)
            r_new, J_new, _ = residuals(new)
            obj_new = objective(r_new)
            better = np.isfinite(obj_new) & (obj_new <= obj) & ~done
            small = better & (obj - obj_new <= 1e-13 * np.maximum(obj, 1e-30)) & (
                np.max(np.abs(new - th), axis=1) < 1e-9)
            th = np.where(better[:, None], new, th)
            r = np.where(better[:, None], r_new, r)
            J = np.where(better[:, None, None], J_new, J)
            obj = np.where(better, obj_new, obj)
            lam = np.where(better, np.maximum(lam / 3, 1e-12), np.minimum(lam * 4, 1e12))
            done |= small | (lam >= 1e12)
            if done.all():
                break
    ok = np.isfinite(obj) & np.all(np.isfinite(th), axis=1)
    return th, ok


def _raw_rows(problem: _Problem, thetas: np.ndarray, families, ref, ref_d, free) -> list[tuple[float, ...]]:
    rows = []
    for th in thetas:
        raw = problem.raw(th, families, ref, ref_d)
        rows.append(tuple(raw[n] for n in free))
    return rows


def _run_bootstrap(problem: _Problem, units: np.ndarray, fam_idx: np.ndarray, theta: np.ndarray, n_boot: int,
                   rng: np.random.Generator, families, ref, ref_d, free, n_free: int, seed: int) -> PooledBootstrap:
    """Resample training runs (units) with replacement within each family; a run brings all its points."""
    weights = np.zeros((n_boot, len(units)))
    for j in range(len(families)):
        us = sorted(set(units[fam_idx == j]))
        members = [np.flatnonzero((units == u) & (fam_idx == j)) for u in us]
        draws = rng.integers(0, len(us), (n_boot, len(us)))
        for k, m in enumerate(members):
            weights[:, m] += (draws == k).sum(axis=1)[:, None]
    ld = problem.ld if problem.ld is not None else np.zeros_like(problem.lx)
    keep = []
    for b in range(n_boot):
        used = weights[b] > 0
        distinct = {(int(f), float(x), float(d)) for f, x, d in zip(problem.fam[used], problem.lx[used], ld[used])}
        n_dense = len({x for f, x, _ in distinct if f == 0})
        n_rom = len({x for f, x, _ in distinct if f == 1})
        keep.append(len(distinct) >= n_free and n_dense >= 2 and (problem.shared or n_rom >= 2))
    keep = np.asarray(keep, bool)
    rows: list[tuple[float, ...]] = []
    failed = 0
    if keep.any():
        logy = np.repeat(problem.logy[None, :], int(keep.sum()), axis=0)
        th, ok = batched_fit(problem, theta, logy, weights[keep])
        failed = int((~ok).sum())
        rows = _raw_rows(problem, th[ok], families, ref, ref_d, free)
    skipped = int((~keep).sum())
    note = ", ".join(x for x in (f"{skipped} skipped (too few distinct sizes)" if skipped else "",
                                 f"{failed} failed to fit" if failed else "") if x)
    return PooledBootstrap("runs", n_boot, len(rows), seed, tuple(rows), note)


def _noise_bootstrap(problem: _Problem, pred: np.ndarray, fam_idx: np.ndarray, noise: dict[str, NoiseEstimate],
                     theta: np.ndarray, n_boot: int, rng: np.random.Generator, families, ref, ref_d, free,
                     seed: int) -> PooledBootstrap:
    """New losses around the fitted law with each family's measured log-space noise (sigma drawn per replicate
    from its sampling distribution, s * sqrt(dof / chi2_dof))."""
    est = [noise.get(f) for f in families]
    if any(e is None or not (e.dof > 0 and math.isfinite(e.sigma_log) and e.sigma_log > 0) for e in est):
        missing = [f for f, e in zip(families, est) if e is None or not e.dof > 0]
        return PooledBootstrap("noise", n_boot, 0, seed, (), f"no noise estimate for {missing}")
    sig = np.asarray([e.sigma_log for e in est])
    dof = np.asarray([e.dof for e in est], float)
    s = sig[None, :] * np.sqrt(dof[None, :] / rng.chisquare(dof, size=(n_boot, len(families))))
    logy = np.log(pred)[None, :] + s[:, fam_idx] * rng.standard_normal((n_boot, len(pred)))
    th, ok = batched_fit(problem, theta, logy, np.ones_like(logy))
    rows = _raw_rows(problem, th[ok], families, ref, ref_d, free)
    note = "; ".join(f"{e.family}: sigma_log {e.sigma_log:.3g} ({e.source}, dof {e.dof})" for e in est)
    return PooledBootstrap("noise", n_boot, len(rows), seed, tuple(rows), note)


# ------------------------------------------------------------------------------------- every pair of a table


# (x kind, shared exponent, parameter convention or None for the fits' own): the pooled fits made per pair.
POOLED_VARIANTS: tuple[tuple[PooledX, bool, ParamConvention | None], ...] = (
    (PooledX.PARAMS, True, None),
    (PooledX.PARAMS, False, None),
    (PooledX.PARAMS, True, ParamConvention.ACTIVE),  # the paper's convention: embeddings included
    (PooledX.FLOPS, True, None),
    (PooledX.FLOPS, False, None),
    (PooledX.FLOPS_NO_HEAD, True, None),
    (PooledX.WALL, True, None),
)


def pooled_key(kind: PooledX, shared: bool, dense: str, rom: str, convention: str | None = None) -> str:
    """Key of a pooled fit; ``convention`` set when the parameter convention differs from the other fits'."""
    return f"{'pooled' if shared else 'pooled-free'}:{kind.value}:{dense}+{rom}" + (f"@{convention}" if convention
                                                                                   else "")


def pooled_all(
    df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> list[PooledFit]:
    """Every variant of ``POOLED_VARIANTS`` for every (dense, rom) family pair, noise measured once."""
    from dataclasses import replace

    noise = estimate_noise(df)
    out = []
    for dense, rom in pairs:
        for kind, shared, conv in POOLED_VARIANTS:
            pc = conv or param_convention
            suffix = conv.value if conv is not None and conv != param_convention else None
            if conv is not None and suffix is None:
                continue  # the same fit as the default-convention one
            fit = fit_pooled(df, dense, rom, kind, shared, pc, flop_convention, noise=noise, bootstrap=bootstrap,
                             seed=seed, ci_level=ci_level)
            if suffix:
                fit = replace(fit, key=pooled_key(kind, shared, dense, rom, suffix))
            if suffix or kind in (PooledX.FLOPS_NO_HEAD, PooledX.WALL):
                # Views only (their intervals are in ``derived``): the replicates are not stored, to keep
                # fits.json small; predictions and bands use the other fits.
                fit = replace(fit, bootstraps=tuple(replace(b, samples=(), note="; ".join(
                    x for x in (b.note, "replicates not stored (a view)") if x)) for b in fit.bootstraps))
            log.info("pooled fit %s: %s (%s)", fit.key, fit.status.value, fit.message)
            out.append(fit)
        out += pooled_by_budget(df, dense, rom, param_convention, flop_convention, noise, bootstrap, seed, ci_level)
    return out


def budget_key(dense: str, rom: str, tokens: int) -> str:
    """Key of the pooled L(N) fit at one token budget (``pooled_by_budget``)."""
    return pooled_key(PooledX.PARAMS, True, dense, rom, f"D={int(tokens)}")


def pooled_by_budget(df: pd.DataFrame, dense: str, rom: str,
                     param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
                     flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
                     noise: dict[str, NoiseEstimate] | None = None, bootstrap: int = 1000, seed: int = 0,
                     ci_level: float = 0.95) -> list[PooledFit]:
    """Where the pair's points span several token budgets (WSD cooldown branches), the pooled L(N) fit (exponent
    shared, no D term) at each budget alone, keyed ``budget_key``: the equivalence ratio per budget, which the
    shared D term of the all-budget fit cannot show (does RoM's advantage change with tokens per parameter?).
    Views: their intervals stay in ``derived``, the replicates are not stored. [] with one budget."""
    from dataclasses import replace

    budgets = set()
    for f in (dense, rom):
        pts, _ = select_points(df, f, ALL_BUDGETS)
        budgets |= set(pts["train_tokens"].astype(int))
    if len(budgets) < 2:
        return []
    out = []
    for tokens in sorted(budgets):
        fit = fit_pooled(df, dense, rom, PooledX.PARAMS, True, param_convention, flop_convention, noise=noise,
                         bootstrap=bootstrap, seed=seed, ci_level=ci_level, tokens=tokens)
        fit = replace(fit, key=budget_key(dense, rom, tokens),
                      bootstraps=tuple(replace(b, samples=(), note="; ".join(
                          x for x in (b.note, "replicates not stored (a view)") if x)) for b in fit.bootstraps))
        log.info("pooled fit %s: %s (%s)", fit.key, fit.status.value, fit.message)
        out.append(fit)
    return out


def load_pooled(doc: dict[str, Any], source: str = "<fits>") -> dict[str, PooledFit]:
    """The pooled fits of a fits document (``{}`` for a document written before they existed)."""
    entries = doc.get("pooled", []) if isinstance(doc, dict) else []
    if not isinstance(entries, list):
        raise AnalysisError(f"{source}: 'pooled' must be a list of pooled fits")
    return {f.key: f for f in (PooledFit.from_dict(d, source) for d in entries)}
