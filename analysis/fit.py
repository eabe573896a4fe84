"""Scaling-law fits: L(N) = E + A N^-alpha, L(C) = E + B C^-beta and L(N, D) = E + A N^-a + B D^-b.

Conventions (written into every ``FitResult``):

* Loss ``L`` is the validation loss in nats/token at the training context length (``at_train_length``).
* ``N`` is a parameter count (raw count, not millions) under a ``ParamConvention``; default active
  non-embedding. ``C`` is training FLOPs under a ``FlopConvention``; default ``flops.train_total`` of the
  record. ``D`` is training tokens. Reported coefficients are in these raw units: L = E + A * N**-alpha.
* Objective: sum over runs of Huber(delta) of the log-space residual r = log(pred) - log(L), delta = inf by
  default (least squares; chosen by a recovery test, see HUBER_DELTA),
  minimised with bounded L-BFGS-B (analytic gradient) from a grid of starting points; the best optimum wins.
  Internally x is divided by its geometric mean (conditioning) and each coefficient is optimised as its log.
* Bounds: 0 <= E <= min(L) (the asymptote cannot lie above an observed loss); exponents in [0, 3];
  log-coefficients (at the reference x) in [-15, 15]. An optimum within 1e-6 of a bound gives
  ``HIT_BOUND`` (e.g. E = 0: the data look like a pure power law at this scale).
* Points: one per run (roles ``scaling`` and ``seed``; seed replicates of a size are extra points, so they
  count as independent runs in the fit and in the bootstrap). Runs left out are listed in ``excluded`` with
  the reason; nothing is dropped silently. L(N) and L(C) are fits at one token budget: they use the points at
  the study's main budget (``analysis.collect.main_budget``); the joint L(N, D) form also uses the WSD
  cooldown branches (their own token budgets), and its bootstrap draws a run's points together.
* Degrees of freedom: ``dof`` = distinct x values - free parameters. dof < 0 gives ``TOO_FEW_POINTS``
  (no fit). dof == 0 is exactly determined: the curve passes through the points, the fit is reported, and
  no confidence interval is given (``ci`` is None, ``ci_note`` says why). Fixing E (``fixed_E``) removes
  one parameter.
* Bootstrap: resample runs with replacement (numpy SeedSequence of (seed, crc32(key)), so each fit's draws
  do not depend on which other fits run); refit from the point estimate and the next two best grid optima; replicates
  with fewer distinct x than free parameters, or whose fit fails, are skipped and counted. Percentile CIs
  at ``ci_level``; none when fewer than half the replicates succeed.
"""

from __future__ import annotations

import contextlib
import functools
import enum
import logging
import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.errors import AnalysisError
from rom.io import as_float

log = logging.getLogger(__name__)

# Least squares on log residuals (a Huber loss with an infinite scale): chosen by the recovery test of issue 24
# (tests/test_analysis_recovery.py, docs/analysis.md) over Huber(1e-3), which behaved like L1 at the studies'
# misfit, and over a Huber scale set from the seed noise.
HUBER_DELTA = math.inf
EXPONENT_BOUNDS = (0.0, 3.0)
LOGCOEF_BOUNDS = (-15.0, 15.0)
BOUND_TOL = 1e-6
FIT_ROLES = ("scaling", "seed")


class FitStatus(str, enum.Enum):
    CONVERGED = "converged"
    HIT_BOUND = "hit_bound"
    TOO_FEW_POINTS = "too_few_points"
    FAILED = "failed"


class ParamConvention(str, enum.Enum):
    """Which parameter count is N."""

    ACTIVE_NONEMBEDDING = "active_nonembedding"
    ACTIVE = "active"
    TOTAL_NONEMBEDDING = "total_nonembedding"
    TOTAL = "total"

    @property
    def column(self) -> str:
        return f"params_{self.value}"


class FlopConvention(str, enum.Enum):
    """Which number is C."""

    TRAIN_TOTAL = "train_total"  # flops.train_total of the record (analytic, all components)
    SIX_ND = "6ND"  # 6 * N (the chosen parameter convention) * training tokens

    def values(self, df: pd.DataFrame, params: ParamConvention) -> np.ndarray:
        if self == FlopConvention.TRAIN_TOTAL:
            return df["flops_train_total"].to_numpy(float)
        return 6.0 * df[params.column].to_numpy(float) * df["train_tokens"].to_numpy(float)


class FitKind(str, enum.Enum):
    PARAMS = "params"  # L(N) = E + A N^-alpha
    FLOPS = "flops"  # L(C) = E + B C^-beta
    JOINT = "joint"  # L(N, D) = E + A N^-a + B D^-b


FORMS = {
    FitKind.PARAMS: ("L(N) = E + A*N^-alpha", ("E", "A", "alpha"), ("N",)),
    FitKind.FLOPS: ("L(C) = E + B*C^-beta", ("E", "B", "beta"), ("C",)),
    FitKind.JOINT: ("L(N,D) = E + A*N^-a + B*D^-b", ("E", "A", "a", "B", "b"), ("N", "D")),
}


def fit_key(kind: FitKind, family: str) -> str:
    return f"{kind.value}:{family}"


@dataclass(frozen=True)
class FitPoint:
    run_id: str
    x: tuple[float, ...]  # N, C or (N, D) in raw units
    loss: float  # observed, nats/token
    pred: float  # fitted, nats/token (nan when there is no fit)
    log_residual: float  # log(pred) - log(loss)


@dataclass(frozen=True)
class Bootstrap:
    requested: int
    ok: int
    seed: int
    samples: tuple[tuple[float, ...], ...]  # one row per successful replicate, order = FitResult.param_names


@dataclass(frozen=True)
class FitResult:
    """One fitted scaling law (frozen). Conventions, in full in this module's docstring:

    * loss in nats/token at the training length; N, C, D in raw units (parameters, FLOPs, tokens), so
      ``params`` satisfy L = E + A * N**-alpha literally; ``param_convention`` / ``flop_convention`` /
      ``x_columns`` say which N and C;
    * objective: Huber(``huber_delta``; inf = least squares) on log(pred) - log(L), bounded L-BFGS-B from
      ``n_starts`` starts;
    * ``status``: converged | hit_bound | too_few_points | failed; ``params`` is None without a fit;
    * ``dof`` = distinct x - free parameters; dof == 0 gives no CI (``ci_note`` says why);
    * ``ci``: percentile bootstrap over runs at ``ci_level``; ``bootstrap.samples`` holds the replicates;
    * ``points``: every run used, with its residual; ``excluded``: every run left out, with the reason.
    """

    key: str  # "<kind>:<family>", e.g. "params:mamba"
    kind: FitKind
    family: str
    form: str
    status: FitStatus
    message: str
    param_convention: str
    flop_convention: str
    x_names: tuple[str, ...]  # ("N",), ("C",) or ("N", "D")
    x_columns: tuple[str, ...]  # what x is, e.g. ("params_active_nonembedding",)
    param_names: tuple[str, ...]  # all parameters of the form, e.g. ("E", "A", "alpha")
    params: dict[str, float] | None  # raw units; None when no fit was made
    fixed: dict[str, float]  # parameters held fixed (not fitted), e.g. {"E": 1.7}
    ci: dict[str, tuple[float, float]] | None  # percentile CI per parameter; None when not available
    ci_level: float
    ci_note: str
    n_points: int
    n_unique_x: int
    dof: int
    x_range: dict[str, tuple[float, float]]
    loss_range: tuple[float, float]
    objective: float
    huber_delta: float
    n_starts: int
    points: tuple[FitPoint, ...]
    excluded: tuple[tuple[str, str], ...]  # (run_id, reason)
    bootstrap: Bootstrap
    units: dict[str, str] = field(default_factory=lambda: {"L": "nats/token", "N": "parameters",
                                                              "C": "FLOPs", "D": "tokens"})

    @property
    def ok(self) -> bool:
        """A usable point estimate (converged or at a bound)."""
        return self.params is not None and self.status in (FitStatus.CONVERGED, FitStatus.HIT_BOUND)

    def sample_params(self) -> list[dict[str, float]]:
        """Bootstrap replicates as parameter dicts (fixed parameters filled in)."""
        free = [n for n in self.param_names if n not in self.fixed]
        return [{**self.fixed, **dict(zip(free, row))} for row in self.bootstrap.samples]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["status"] = self.status.value
        return d

    @staticmethod
    def from_dict(d: dict[str, Any], source: str = "<fits>") -> "FitResult":
        try:
            boot = d["bootstrap"]
            return FitResult(
                key=d["key"], kind=FitKind(d["kind"]), family=d["family"], form=d["form"],
                status=FitStatus(d["status"]), message=d["message"],
                param_convention=d["param_convention"], flop_convention=d["flop_convention"],
                x_names=tuple(d["x_names"]), x_columns=tuple(d["x_columns"]),
                param_names=tuple(d["param_names"]),
                params=None if d["params"] is None else {k: as_float(v) for k, v in d["params"].items()},
                fixed={k: as_float(v) for k, v in d["fixed"].items()},
                ci=None if d["ci"] is None else {k: (as_float(v[0]), as_float(v[1])) for k, v in d["ci"].items()},
                ci_level=float(d["ci_level"]), ci_note=d["ci_note"],
                n_points=int(d["n_points"]), n_unique_x=int(d["n_unique_x"]), dof=int(d["dof"]),
                x_range={k: (as_float(v[0]), as_float(v[1])) for k, v in d["x_range"].items()},
                loss_range=(as_float(d["loss_range"][0]), as_float(d["loss_range"][1])),
                objective=as_float(d["objective"]), huber_delta=float(d["huber_delta"]),
                n_starts=int(d["n_starts"]),
                points=tuple(FitPoint(p["run_id"], tuple(as_float(v) for v in p["x"]), as_float(p["loss"]),
                                      as_float(p["pred"]), as_float(p["log_residual"])) for p in d["points"]),
                excluded=tuple((e[0], e[1]) for e in d["excluded"]),
                bootstrap=Bootstrap(int(boot["requested"]), int(boot["ok"]), int(boot["seed"]),
                                    tuple(tuple(as_float(v) for v in row) for row in boot["samples"])),
                units=dict(d.get("units", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise AnalysisError(f"{source}: fit entry {d.get('key', '?')!r} is malformed ({e!r})") from None


# ------------------------------------------------------------------------------------- model functions


def power_law(x: Any, E: float, A: float, alpha: float) -> Any:
    """L = E + A x^-alpha (x in raw units)."""
    return E + A * np.power(np.asarray(x, float), -alpha)


def power_law_inverse(loss: float, E: float, A: float, alpha: float) -> float:
    """x with power_law(x) == loss; ``math.inf`` when loss <= E (the fit never reaches that loss)."""
    if not loss > E or A <= 0 or alpha <= 0:
        return math.inf
    return float((A / (loss - E)) ** (1.0 / alpha))


def chinchilla(N: Any, D: Any, E: float, A: float, a: float, B: float, b: float) -> Any:
    return E + A * np.power(np.asarray(N, float), -a) + B * np.power(np.asarray(D, float), -b)


def evaluate_form(kind: FitKind, p: dict[str, float], *x: Any) -> Any:
    """The form of ``kind`` at x (N, C or N, D) with parameters ``p`` (named as in FORMS)."""
    if kind == FitKind.JOINT:
        return chinchilla(x[0], x[1], p["E"], p["A"], p["a"], p["B"], p["b"])
    _, (_, coef, expo), _ = FORMS[kind]
    return power_law(x[0], p["E"], p[coef], p[expo])


def predict(fit: FitResult, params: dict[str, float] | None = None, *x: Any) -> Any:
    """Evaluate ``fit``'s form at x (N, C or N, D) with its parameters or the ones given."""
    p = params if params is not None else fit.params
    if p is None:
        raise AnalysisError(f"fit {fit.key} has no parameters (status {fit.status.value})")
    return evaluate_form(fit.kind, p, *x)


def inverse(fit: FitResult, loss: float, params: dict[str, float] | None = None) -> float:
    """x at which a one-variable fit reaches ``loss``; ``math.inf`` when loss <= E (no inverse)."""
    if fit.kind == FitKind.JOINT:
        raise AnalysisError(f"fit {fit.key}: the joint L(N, D) form has no one-variable inverse")
    p = params if params is not None else fit.params
    if p is None:
        raise AnalysisError(f"fit {fit.key} has no parameters (status {fit.status.value})")
    coef, expo = fit.param_names[1], fit.param_names[2]
    return power_law_inverse(loss, p["E"], p[coef], p[expo])


# ------------------------------------------------------------------------------------- the optimiser


@dataclass
class _Problem:
    """Internal, normalised problem: pred = E + sum_j exp(c_j - p_j * log(x_j / ref_j))."""

    logx: np.ndarray  # (n, terms): log(x / ref)
    logy: np.ndarray  # (n,)
    ref: np.ndarray  # (terms,)
    fixed_E: float | None
    delta: float

    @property
    def n_terms(self) -> int:
        return self.logx.shape[1]

    def unpack(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        if self.fixed_E is None:
            E, rest = theta[0], theta[1:]
        else:
            E, rest = self.fixed_E, theta
        return E, rest[0::2], rest[1::2]

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        E, c, p = self.unpack(theta)
        terms = np.exp(c[None, :] - p[None, :] * self.logx)  # (n, terms)
        pred = E + terms.sum(axis=1)
        pred = np.maximum(pred, 1e-300)
        r = np.log(pred) - self.logy
        absr = np.abs(r)
        quad = absr <= self.delta
        value = float(np.sum(np.where(quad, 0.5 * r * r, self.delta * (absr - 0.5 * self.delta)))) if \
            math.isfinite(self.delta) else 0.5 * float(r @ r)
        dr = np.clip(r, -self.delta, self.delta) / pred  # dHuber/dpred
        grads = []
        if self.fixed_E is None:
            grads.append(np.sum(dr))
        for j in range(self.n_terms):
            grads.append(np.sum(dr * terms[:, j]))
            grads.append(np.sum(dr * terms[:, j] * -self.logx[:, j]))
        return value, np.asarray(grads, float)

    def bounds(self) -> list[tuple[float, float]]:
        b = [] if self.fixed_E is not None else [(0.0, float(np.exp(self.logy.min())))]
        for _ in range(self.n_terms):
            b += [LOGCOEF_BOUNDS, EXPONENT_BOUNDS]
        return b

    def starts(self) -> list[np.ndarray]:
        """Grid of starting points: fractions of min(L) for E, exponents, and coefficients around the gap."""
        lmin, lmean = float(np.exp(self.logy.min())), float(np.exp(self.logy.mean()))
        e_grid = [self.fixed_E] if self.fixed_E is not None else [0.0, 0.4 * lmin, 0.8 * lmin, 0.95 * lmin]
        p_grid = [0.1, 0.3, 0.6, 1.2]
        out = []
        for E in e_grid:
            gap = max(lmean - E, 1e-3 * lmean) / self.n_terms
            for c_shift in (-1.0, 0.0, 1.0):
                for ps in _product(p_grid, self.n_terms):
                    theta = [] if self.fixed_E is not None else [E]
                    for p in ps:
                        theta += [math.log(gap) + c_shift, p]
                    out.append(np.clip(np.asarray(theta, float), *zip(*self.bounds())))
        return out


def _product(values: Sequence[float], k: int) -> list[tuple[float, ...]]:
    if k == 1:
        return [(v,) for v in values]
    return [(v,) + rest for v in values for rest in _product(values, k - 1)]


@dataclass
class _Optimum:
    theta: np.ndarray
    value: float
    success: bool
    message: str


def _single_blas_thread() -> contextlib.AbstractContextManager:
    """L-BFGS-B on 3-5 variables is ~10x slower when BLAS spins up threads (measured 2.9 s vs 0.33 s for 48
    starts on a shared 2-core machine), so limit BLAS to one thread while optimising, if threadpoolctl is
    installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _with_single_blas_thread(fn):
    """Run ``fn`` under ``_single_blas_thread``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _single_blas_thread():
            return fn(*args, **kwargs)

    return wrapper


def minimize_from_starts(objective: Callable, starts: Sequence[np.ndarray], bounds: Sequence[tuple[float, float]]
                         ) -> list[_Optimum]:
    """L-BFGS-B (objective returns value and gradient) from every start; the finite optima, best first (ties in
    start order). Shared by the per-family fits here and the pooled fits (analysis.pooled)."""
    results = []
    for x0 in starts:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        if np.all(np.isfinite(res.x)) and np.isfinite(res.fun):
            results.append(_Optimum(np.asarray(res.x, float), float(res.fun), bool(res.success), str(res.message)))
    return sorted(results, key=lambda r: r.value)


def _optimise(problem: _Problem, starts: Sequence[np.ndarray]) -> tuple[_Optimum | None, list[_Optimum]]:
    results = minimize_from_starts(problem.objective, starts, problem.bounds())
    best = next((r for r in results if r.success), None)
    return best, results


def _at_bound(problem: _Problem, theta: np.ndarray, param_names: Sequence[str]) -> list[str]:
    """Messages for internal parameters at a bound, named after the form's parameters."""
    names = ([] if problem.fixed_E is not None else ["E"]) + [
        n if i % 2 else f"log {n} at the reference x" for i, n in enumerate(param_names[1:])]
    hits = []
    for name, value, (lo, hi) in zip(names, theta, problem.bounds()):
        span = max(hi - lo, 1.0)
        if value - lo <= BOUND_TOL * span:
            hits.append(f"{name}={value:.4g} at lower bound {lo:.4g}")
        elif hi - value <= BOUND_TOL * span:
            hits.append(f"{name}={value:.4g} at upper bound {hi:.4g}")
    return hits


def _raw_params(problem: _Problem, theta: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    E, c, p = problem.unpack(theta)
    values = [float(E)]
    for j in range(problem.n_terms):
        values += [float(np.exp(c[j] + p[j] * math.log(problem.ref[j]))), float(p[j])]
    return dict(zip(names, values))


# ------------------------------------------------------------------------------------- fitting


MAIN_BUDGET = "main"  # select_points(tokens=...): only the points at the study's main token budget
ALL_BUDGETS = "all"  # every token budget (cooldown branches included): forms with a D term


def select_points(df: pd.DataFrame, family: str, tokens: str | int = MAIN_BUDGET
                  ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One row per point of ``family`` at its training length (a run, or one of its cooldown branches); the
    reasons for every point left out. ``tokens``: "main" keeps the points at the study's main token budget
    (``analysis.collect.main_budget``: one-variable fits at one budget), "all" every budget (the joint form and
    pooled fits with a D term), an integer that budget."""
    from analysis.collect import main_budget

    fam = df[df["family"] == family]
    budget = main_budget(df) if tokens == MAIN_BUDGET else (None if tokens == ALL_BUDGETS else int(tokens))
    excluded: list[tuple[str, str]] = []
    keep = []
    for run_id, rows in fam.groupby("run_id", sort=True):
        row = rows[rows["at_train_length"]]
        first = rows.iloc[0]
        if budget is not None and int(first["train_tokens"]) != budget:
            what = "the study's main token budget" if tokens == MAIN_BUDGET else "the budget of this fit"
            excluded.append((run_id, f"token budget {int(first['train_tokens'])} is not {what} {budget} "
                                     "(one-budget fit; the joint and pooled L(N, D) fits use every budget)"))
        elif first["role"] not in FIT_ROLES:
            excluded.append((run_id, f"role={first['role']} (fits use roles {'/'.join(FIT_ROLES)})"))
        elif bool(first["diverged"]):
            why = first.get("divergence")  # the reason the trainer recorded (issue 28), when the table has it
            excluded.append((run_id, f"training diverged: {why}" if isinstance(why, str) and why else "training diverged"))
        elif row.empty:
            excluded.append((run_id, f"no evaluation at the training length {int(first['train_seq_len'])}"))
        elif not (np.isfinite(row.iloc[0]["loss_nats"]) and row.iloc[0]["loss_nats"] > 0):
            excluded.append((run_id, f"loss {row.iloc[0]['loss_nats']!r} is not a finite positive number"))
        else:
            keep.append(row.iloc[[0]])
    points = pd.concat(keep) if keep else fam.iloc[0:0]
    points = points.sort_values(["params_active_nonembedding", "train_tokens", "run_id"]).reset_index(drop=True)
    return points, excluded


@_with_single_blas_thread
def fit_family(
    df: pd.DataFrame,
    family: str,
    kind: FitKind,
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    fixed_E: float | None = None,
    huber_delta: float = HUBER_DELTA,
    progress: bool = False,
) -> FitResult:
    """Fit one form to one family's runs from the collected table (see the module docstring). One-variable
    forms use the points at the study's main token budget; the joint form every budget (cooldown branches)."""
    points, excluded = select_points(df, family, ALL_BUDGETS if kind == FitKind.JOINT else MAIN_BUDGET)
    form, names, x_names = FORMS[kind]
    if kind == FitKind.PARAMS:
        xs = [points[param_convention.column].to_numpy(float)]
        x_columns = (param_convention.column,)
    elif kind == FitKind.FLOPS:
        xs = [flop_convention.values(points, param_convention)]
        x_columns = ("flops_train_total",) if flop_convention == FlopConvention.TRAIN_TOTAL else (
            f"6*{param_convention.column}*train_tokens",)
    else:
        xs = [points[param_convention.column].to_numpy(float), points["train_tokens"].to_numpy(float)]
        x_columns = (param_convention.column, "train_tokens")
    loss = points["loss_nats"].to_numpy(float)
    run_ids = points["run_id"].astype(str).tolist()
    X = np.stack(xs, axis=1) if len(points) else np.zeros((0, len(x_names)))
    fixed = {"E": float(fixed_E)} if fixed_E is not None else {}
    n_free = len(names) - len(fixed)
    n_unique = len({tuple(row) for row in X})
    dof = n_unique - n_free
    common = dict(
        key=fit_key(kind, family), kind=kind, family=family, form=form,
        param_convention=param_convention.value, flop_convention=flop_convention.value,
        x_names=x_names, x_columns=x_columns, param_names=names, fixed=fixed, ci_level=ci_level,
        n_points=len(points), n_unique_x=n_unique, dof=dof, huber_delta=huber_delta,
        excluded=tuple(excluded),
        x_range={n: (float(X[:, j].min()), float(X[:, j].max())) if len(X) else (math.nan, math.nan)
                 for j, n in enumerate(x_names)},
        loss_range=(float(loss.min()), float(loss.max())) if len(loss) else (math.nan, math.nan),
    )
    no_boot = Bootstrap(bootstrap, 0, seed, ())

    def no_fit(status: FitStatus, message: str) -> FitResult:
        pts = tuple(FitPoint(r, tuple(map(float, x)), float(l), math.nan, math.nan)
                    for r, x, l in zip(run_ids, X, loss))
        return FitResult(status=status, message=message, params=None, ci=None, ci_note="no fit",
                         objective=math.nan, n_starts=0, points=pts, bootstrap=no_boot, **common)

    if np.any(X <= 0):
        bad = [r for r, x in zip(run_ids, X) if np.any(x <= 0)]
        return no_fit(FitStatus.FAILED, f"non-positive x ({', '.join(x_columns)}) for runs {bad}")
    if kind == FitKind.JOINT:
        n_d = len(set(X[:, 1]))
        if n_d < 2:
            return no_fit(FitStatus.TOO_FEW_POINTS,
                          f"token budgets do not vary ({n_d} distinct D); the joint L(N, D) form needs several")
        if len(set(X[:, 0])) < 2:
            return no_fit(FitStatus.TOO_FEW_POINTS, "model sizes do not vary; the joint form needs several")
    if dof < 0:
        return no_fit(FitStatus.TOO_FEW_POINTS,
                      f"{n_unique} distinct x value(s) for {n_free} free parameters ({len(points)} runs)")
    if fixed_E is not None and not 0 <= fixed_E < loss.min():
        return no_fit(FitStatus.FAILED, f"fixed E={fixed_E} must lie in [0, min loss={loss.min():.4g})")

    ref = np.exp(np.log(X).mean(axis=0))
    problem = _Problem(np.log(X / ref), np.log(loss), ref, fixed_E, huber_delta)
    starts = problem.starts()
    best, ranked = _optimise(problem, starts)
    notes = []
    if kind != FitKind.JOINT and points["train_tokens"].nunique() > 1:
        notes.append(f"token budgets vary ({points['train_tokens'].nunique()} distinct); this one-variable "
                     "fit mixes them (see the joint fit)")
    if best is None:
        msg = ranked[0].message if ranked else "no start gave a finite objective"
        return no_fit(FitStatus.FAILED, f"L-BFGS-B did not converge from {len(starts)} starts: {msg}")
    params = _raw_params(problem, best.theta, names)  # E is the fixed value when fixed_E is set
    hits = _at_bound(problem, best.theta, names)
    status = FitStatus.HIT_BOUND if hits else FitStatus.CONVERGED
    message = "; ".join(hits + notes) if (hits or notes) else "converged"

    pred = evaluate_form(kind, params, *X.T)
    pts = tuple(FitPoint(r, tuple(map(float, x)), float(l), float(p), float(math.log(p) - math.log(l)))
                for r, x, l, p in zip(run_ids, X, loss, pred))

    # Bootstrap over runs.
    ci, ci_note, samples = None, "", []
    if dof == 0:
        ci_note = (f"exactly determined ({n_unique} distinct x for {n_free} free parameters): the curve passes "
                   "through the points, so there is no confidence interval; add sizes or fix E")
    elif bootstrap <= 0:
        ci_note = "bootstrap disabled"
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(common["key"].encode())]))
        boot_starts = [best.theta] + [r.theta for r in ranked[1:3]]  # few starts: speed
        iterator = range(bootstrap)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"bootstrap {common['key']}", leave=False)
        free_names = [n for n in names if n not in fixed]
        # Resample training runs, not points: a run's cooldown branches (same source_run_id) come together.
        # With one point per run this is the plain resampling of points (the same draws).
        units = (points["source_run_id"].astype(str).to_numpy() if "source_run_id" in points.columns
                 else np.asarray(run_ids))
        order = list(dict.fromkeys(units))
        members = [np.flatnonzero(units == u) for u in order]
        for _ in iterator:
            idx = np.concatenate([members[i] for i in rng.integers(0, len(order), len(order))])
            Xb = X[idx]
            if len({tuple(row) for row in Xb}) < n_free:
                continue
            pb = _Problem(np.log(Xb / ref), np.log(loss[idx]), ref, fixed_E, huber_delta)
            starts_b = [np.clip(s, *zip(*pb.bounds())) for s in boot_starts]
            bb, _ = _optimise(pb, starts_b)
            if bb is None:
                continue
            raw = _raw_params(pb, bb.theta, names)
            samples.append(tuple(raw[n] for n in free_names))
        if len(samples) < 0.5 * bootstrap:
            ci_note = f"only {len(samples)}/{bootstrap} bootstrap replicates could be fitted; no CI"
        else:
            arr = np.asarray(samples)
            lo_q, hi_q = 50 * (1 - ci_level), 50 * (1 + ci_level)
            ci = {n: (float(np.percentile(arr[:, j], lo_q)), float(np.percentile(arr[:, j], hi_q)))
                  for j, n in enumerate(free_names)}
            ci_note = f"{100 * ci_level:.0f}% percentile bootstrap over runs, {len(samples)}/{bootstrap} replicates"
    return FitResult(status=status, message=message, params=params, ci=ci, ci_note=ci_note,
                     objective=best.value, n_starts=len(starts), points=pts,
                     bootstrap=Bootstrap(bootstrap, len(samples), seed, tuple(samples)), **common)


def family_fit_tasks(
    df: pd.DataFrame,
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    fixed_E: dict[str, float] | None = None,
    progress: bool = False,
) -> list[Callable[[], FitResult]]:
    """``fit_family`` for every form of every family present in the table (families sorted, then params,
    flops, joint), each a picklable task (``analysis.parallel.run_tasks``)."""
    tasks = []
    for family in sorted(df["family"].unique()):
        for kind in FitKind:
            fe = (fixed_E or {}).get(family)
            tasks.append(functools.partial(fit_family, df, family, kind, param_convention, flop_convention,
                                           bootstrap, seed, ci_level, fe if kind != FitKind.JOINT else None,
                                           progress=progress))
    return tasks


def log_fit(fit: FitResult) -> FitResult:
    log.info("fit %s: %s (%s)", fit.key, fit.status.value, fit.message)
    return fit


def fit_all(df: pd.DataFrame, *args: Any, workers: int = 1, **kwargs: Any) -> list[FitResult]:
    """Every form for every family present in the table (the arguments of ``family_fit_tasks``), in up to
    ``workers`` processes (the same numbers with any number)."""
    from analysis.parallel import run_tasks

    return [log_fit(f) for f in run_tasks(family_fit_tasks(df, *args, **kwargs), workers)]


@dataclass(frozen=True)
class Profile:
    """A fit refitted with one parameter (``name``: E, or the exponent) fixed over a grid, the others free:
    which values of it the data allow.

    ``rss[i]`` is the least-squares sum of squared log residuals with the parameter at ``grid[i]`` (nan where
    that fit failed); a value is accepted when the likelihood-ratio statistic stays below the chi-square(1)
    quantile at ``level``: (rss - rss_min) / sigma^2 with ``sigma_log`` the measured seed noise, or
    n log(rss / rss_min) without it (``criterion`` says which). Read-offs over the accepted values show what
    a fit at a bound hides.
    """

    key: str
    name: str
    grid: tuple[float, ...]
    rss: tuple[float, ...]
    params: tuple[dict[str, float] | None, ...]
    accepted: tuple[bool, ...]
    level: float
    criterion: str
    n_points: int

    def accepted_params(self) -> list[dict[str, float]]:
        return [p for p, ok in zip(self.params, self.accepted) if ok and p is not None]

    @property
    def accepted_range(self) -> tuple[float, float] | None:
        vals = [v for v, ok in zip(self.grid, self.accepted) if ok]
        return (min(vals), max(vals)) if vals else None


def profile_E(
    df: pd.DataFrame,
    family: str,
    kind: FitKind,
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    level: float = 0.95,
    sigma_log: float | None = None,
    n_grid: int = 40,
) -> Profile:
    """Refit ``family``'s one-variable ``kind`` fit with E fixed on a grid over [0, min L) (least squares).
    Read-offs over the accepted E give an interval that does not rest on E sitting at a bound."""
    if kind == FitKind.JOINT:
        raise AnalysisError("profile_E: the joint form is not profiled")
    points, _ = select_points(df, family)
    loss = points["loss_nats"].to_numpy(float)
    key = fit_key(kind, family)
    if len(loss) == 0:
        return Profile(key, "E", (), (), (), (), level, "no points", 0)
    lmin = float(loss.min())
    grid = sorted(set(np.round(np.concatenate([np.linspace(0.0, lmin, n_grid, endpoint=False),
                                               lmin * (1 - np.geomspace(1e-4, 0.05, 8))]), 12)))
    rss, params = [], []
    for e in grid:
        f = fit_family(df, family, kind, param_convention, flop_convention, bootstrap=0, fixed_E=float(e),
                       huber_delta=math.inf)
        if f.params is None:
            rss.append(math.nan)
            params.append(None)
        else:
            rss.append(float(sum(p.log_residual ** 2 for p in f.points)))
            params.append(f.params)
    return _profile(key, "E", grid, rss, params, len(loss), level, sigma_log)


def _profile(key: str, name: str, grid: Sequence[float], rss: Sequence[float],
             params: Sequence[dict[str, float] | None], n_points: int, level: float, sigma_log: float | None
             ) -> Profile:
    """A profile over ``grid`` from its refits' residual sums of squares, with what the likelihood-ratio test
    accepts."""
    accepted, criterion = _likelihood_ratio_accepts(rss, n_points, level, sigma_log)
    return Profile(key, name, tuple(float(v) for v in grid), tuple(rss), tuple(params), accepted, level, criterion,
                   n_points)


def _likelihood_ratio_accepts(rss: Sequence[float], n_points: int, level: float, sigma_log: float | None
                              ) -> tuple[tuple[bool, ...], str]:
    """Which profiled values a likelihood-ratio test at ``level`` accepts (one profiled parameter), and how:
    (rss - rss_min) / sigma^2 with the measured seed noise ``sigma_log``, or n log(rss / rss_min) without it."""
    from scipy.stats import chi2

    arr = np.asarray(rss, float)
    best = np.nanmin(arr) if np.isfinite(arr).any() else math.nan
    q = float(chi2.ppf(level, 1))
    if sigma_log is not None and sigma_log > 0:
        stat = (arr - best) / sigma_log ** 2
        criterion = f"(rss - rss_min) / sigma^2 <= {q:.3g} (chi2_1 at {level:g}), sigma_log = {sigma_log:.3g} from seeds"
    else:
        stat = n_points * np.log(np.maximum(arr, 1e-300) / max(best, 1e-300))
        criterion = f"n log(rss / rss_min) <= {q:.3g} (chi2_1 at {level:g}), noise from the residuals"
    return tuple(bool(np.isfinite(s) and s <= q) for s in stat), criterion


# Exponents a profile visits: well past EXPONENT_BOUNDS' upper end, since the profile exists to see what the
# bound hides (a curve whose bend the data cannot place).
EXPONENT_PROFILE_GRID = tuple(float(v) for v in np.round(np.geomspace(0.02, 24.0, 93), 6))  # steps of 8%


def profile_exponent(
    df: pd.DataFrame,
    family: str,
    kind: FitKind,
    param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
    flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL,
    level: float = 0.95,
    sigma_log: float | None = None,
    grid: Sequence[float] = EXPONENT_PROFILE_GRID,
) -> Profile:
    """Refit ``family``'s one-variable ``kind`` fit (least squares on log losses, as the fit) with the exponent
    fixed at each value of ``grid``, E in [0, min L) and the coefficient free; ``name`` is the form's exponent
    (alpha or beta)."""
    from scipy.optimize import least_squares

    if kind == FitKind.JOINT:
        raise AnalysisError("profile_exponent: the joint form is not profiled")
    base = fit_family(df, family, kind, param_convention, flop_convention, bootstrap=0, huber_delta=math.inf)
    _, (e_name, coef_name, exp_name), _ = FORMS[kind]
    x = np.asarray([p.x[0] for p in base.points], float)
    loss = np.asarray([p.loss for p in base.points], float)
    if len(loss) < 3 or np.any(x <= 0) or np.any(loss <= 0):
        return Profile(base.key, exp_name, (), (), (), (), level, "too few usable points", len(loss))
    ref = float(np.exp(np.log(x).mean()))
    logx, logy, lmin = np.log(x / ref), np.log(loss), float(loss.min())
    rss, params = [], []
    for q in grid:
        def residuals(theta, q=q):  # theta: E, log of the coefficient at the reference x
            return np.log(np.maximum(theta[0] + np.exp(theta[1] - q * logx), 1e-300)) - logy

        best = None
        for e0 in (0.0, 0.5 * lmin, 0.9 * lmin, 0.99 * lmin):
            gap = max(float(loss.mean()) - e0, 1e-3 * lmin)
            try:
                res = least_squares(residuals, [e0, math.log(gap)], bounds=([0.0, -50.0], [lmin * (1 - 1e-9), 50.0]),
                                    xtol=1e-12, ftol=1e-12, gtol=1e-12)
            except ValueError:
                continue
            if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                best = res
        # the coefficient in raw units of x; past float range (x ~ 1e15 FLOPs at an exponent past ~20): no profile
        log_coef = math.inf if best is None else float(best.x[1]) + q * math.log(ref)
        if log_coef > 700.0:
            rss.append(math.nan)
            params.append(None)
            continue
        rss.append(float(2.0 * best.cost))  # cost = half the sum of squares
        params.append({e_name: float(best.x[0]), coef_name: math.exp(log_coef), exp_name: float(q)})
    return _profile(base.key, exp_name, grid, rss, params, len(loss), level, sigma_log)


FITS_SCHEMA = "analysis.fits/1"


def fits_document(fits: Sequence[FitResult], **settings: Any) -> dict[str, Any]:
    return {"schema": FITS_SCHEMA, "settings": settings, "fits": [f.to_dict() for f in fits]}


def load_fits(doc: dict[str, Any], source: str = "<fits>") -> dict[str, FitResult]:
    if not isinstance(doc, dict) or doc.get("schema") != FITS_SCHEMA:
        raise AnalysisError(f"{source}: not a fits file of schema {FITS_SCHEMA!r} "
                            f"(found {doc.get('schema') if isinstance(doc, dict) else type(doc).__name__!r})")
    return {f.key: f for f in (FitResult.from_dict(d, source) for d in doc["fits"])}
