"""The dense series a RoM hybrid is read against in claim (b), found from the runs' typed config fields.

The paper's 23% compares a RoM hybrid with scaling the *Mamba layers* of the same hybrid densely. For a RoM
hybrid scaling run r (a routed hybrid family) the **Mamba-width series** is every run of its dense counterpart
family (roles scaling and seed, main rows at the study's main token budget) whose model config equals r's
once these fields are set aside:

* ``model.rom`` (the routed mixer's own settings: experts, routing, load balancing; a dense run never uses them),
* ``model.hybrid_ssm`` (set to the dense counterpart's mixer: the difference the claim measures),
* the width that the series scales: ``model.mamba.expand`` for Mamba-1 (the paper's), and for the other
  architectures (``model.ssm``) their own field in ``WIDTH_FIELDS`` (``model.mamba2.expand``,
  ``model.gated_deltanet.expand_v``).

It is a series when its scaling runs cover at least ``MIN_POINTS`` distinct widths. The
**whole-hybrid series** (a second view) is every dense counterpart run at r's width whose model
differs otherwise (d_model, layers, heads...: the whole hybrid scaled), with the width series' run at r's
expand as its shared point; it is a series with at least ``MIN_POINTS`` distinct sizes, and is looked for only
beside a width series (it is a second view of that reading). The RoM side of both
is r and its seed replicates (runs of r's family with r's model config). Where several RoM hybrids have a
width series, claim (b) uses the one with the most active parameters.

The fit step fits each series' L(C) alone (``series_fits``: a ``FitResult`` keyed
``flops:<dense>@<series id>``) and pooled with its RoM runs (``series_pooled``: ``PooledFit`` keyed
``pooled:flops:<dense>+<rom>@<series id>`` and the FLOPs-without-head / wall-clock views); claim (b) reads
them (``analysis.claims.saving``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.collect import main_budget, runs_at_train_length
from analysis.families import SSM_MIXERS, families_in
from analysis.fit import FIT_ROLES, FitKind, FitResult, FlopConvention, ParamConvention, fit_family

WIDTH = "mamba-width"
WHOLE = "whole-hybrid"
MIN_POINTS = 3  # distinct widths (sizes) of scaling runs that make a series: an L(C) fit has 3 parameters
IGNORED_FIELDS = ("model.rom", "model.hybrid_ssm (set to the dense mixer)")  # and the series' width field
# model.ssm (absent in records made before it: "mamba") -> (config.model section, field) of the width a
# Mamba-width series scales: the SSM layers' inner width relative to d_model
WIDTH_FIELDS: dict[str, tuple[str, str]] = {
    "mamba": ("mamba", "expand"),
    "mamba2": ("mamba2", "expand"),
    "gated-deltanet": ("gated_deltanet", "expand_v"),
}


@dataclass(frozen=True)
class HybridSeries:
    """A dense series and the RoM hybrid run(s) read against it (see the module docstring)."""

    kind: str  # WIDTH | WHOLE
    dense_family: str
    rom_family: str
    rom_run: str  # run_id of the RoM hybrid scaling run the series is built around
    rom_name: str  # its name (a label only; never parsed)
    rom_runs: tuple[str, ...]  # rom_run and its seed replicates
    dense_runs: tuple[str, ...]  # the series' scaling runs (ordered by active parameters)
    seed_runs: tuple[str, ...]  # dense seed replicates of a series member
    expand: tuple[float, ...]  # the width field (width_field) of each of dense_runs
    d_model: tuple[int, ...]  # d_model of each of dense_runs
    names: tuple[str, ...]  # names of dense_runs
    width_field: str = "model.mamba.expand"  # the config field the width series scales (WIDTH_FIELDS)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.rom_name}"

    @property
    def fit_key(self) -> str:
        """Key of the series' own L(C) fit (``series_fits``)."""
        return f"{FitKind.FLOPS.value}:{self.dense_family}@{self.id}"

    @property
    def runs(self) -> tuple[str, ...]:
        return self.dense_runs + self.seed_runs + self.rom_runs

    def subset(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows of the series' runs (dense and RoM; their own records, cooldown branches left out)."""
        col = "source_run_id" if "source_run_id" in df.columns else "run_id"
        return df[df[col].isin(self.runs) & (df["run_id"] == df[col])]

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        return IGNORED_FIELDS + (self.width_field,)

    def describe(self) -> str:
        what = (f"Mamba layers widened densely ({self.width_field} " + ", ".join(f"{e:g}" for e in self.expand) + ")"
                if self.kind == WIDTH else "the whole hybrid scaled (d_model " + ", ".join(map(str, self.d_model))
                + ")")
        return (f"{self.kind} series of {self.rom_name}: {len(self.dense_runs)} {self.dense_family} runs "
                f"({', '.join(self.names)}), {what}; other model fields as {self.rom_name}'s "
                f"(ignored: {', '.join(self.ignored_fields)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        d["fit_key"] = self.fit_key
        d["ignored_fields"] = list(self.ignored_fields)
        d["description"] = self.describe()
        return d


def _model(config_json: str) -> dict[str, Any]:
    try:
        cfg = json.loads(config_json) if isinstance(config_json, str) and config_json else {}
    except json.JSONDecodeError:
        cfg = {}
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    return model if isinstance(model, dict) else {}


def _width_field(model: dict[str, Any]) -> tuple[str, str] | None:
    """(section, field) of the model's SSM width (WIDTH_FIELDS), None for an architecture without one."""
    return WIDTH_FIELDS.get(str(model.get("ssm") or "mamba"))


def _expand(model: dict[str, Any]) -> float | None:
    where = _width_field(model)
    section = model.get(where[0]) if where else None
    v = section.get(where[1]) if isinstance(section, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _normalised(model: dict[str, Any], dense_mixer: str) -> str:
    """The model config with the fields a width series may differ in set aside (as a comparable string)."""
    m = copy.deepcopy(model)
    m.pop("rom", None)
    m["hybrid_ssm"] = dense_mixer
    where = _width_field(m)
    if where and isinstance(m.get(where[0]), dict):
        m[where[0]].pop(where[1], None)
    return json.dumps(m, sort_keys=True)


def _candidates(df: pd.DataFrame) -> pd.DataFrame:
    """Main rows at the training length and the main budget, roles scaling / seed, with their model config."""
    runs = runs_at_train_length(df)
    budget = main_budget(df)
    runs = runs[runs["role"].isin(FIT_ROLES)]
    if budget is not None:
        runs = runs[runs["train_tokens"].astype(int) == budget]
    models = [_model(c) for c in runs["config_json"]] if "config_json" in runs.columns else [{}] * len(runs)
    return runs.assign(_model=models, _expand=[_expand(m) for m in models])


def _usable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[~rows["diverged"].astype(bool) & np.isfinite(rows["loss_nats"].astype(float))]


def hybrid_series(df: pd.DataFrame) -> list[HybridSeries]:
    """Every width and whole-hybrid series of the table (see the module docstring), RoM runs largest first."""
    fams = families_in(df)
    runs = _candidates(df)
    out: list[HybridSeries] = []
    for rom_fam in sorted((f for f in fams.values() if f.routed and f.hybrid), key=lambda f: f.name):
        dense_fam = rom_fam.dense_counterpart()
        if dense_fam.name not in fams:
            continue
        mixer = SSM_MIXERS[rom_fam.ssm].dense
        rom_rows = runs[runs["family"] == rom_fam.name]
        dense_rows = runs[runs["family"] == dense_fam.name].assign(
            _key=lambda d: [_normalised(m, mixer) for m in d["_model"]])
        heads = _usable(rom_rows[rom_rows["role"] == "scaling"]).sort_values(
            ["params_active_nonembedding", "run_id"], ascending=[False, True])
        for _, r in heads.iterrows():
            key = _normalised(r["_model"], mixer)
            mates = rom_rows[[json.dumps(m, sort_keys=True) == json.dumps(r["_model"], sort_keys=True)
                              for m in rom_rows["_model"]]]
            width = dense_rows[dense_rows["_key"] == key]
            whole = dense_rows[(dense_rows["_key"] != key) & (dense_rows["_expand"] == r["_expand"])]
            whole = pd.concat([whole, width[width["_expand"] == r["_expand"]]])
            for kind, members, by in ((WIDTH, width, "_expand"), (WHOLE, whole, "params_active_nonembedding")):
                scaling = _usable(members[members["role"] == "scaling"])
                if scaling[by].nunique(dropna=True) < MIN_POINTS:
                    if kind == WIDTH:
                        break  # the whole-hybrid series is a second view of a width series only
                    continue
                scaling = scaling.sort_values(["params_active_nonembedding", "run_id"])
                out.append(HybridSeries(
                    kind=kind, dense_family=dense_fam.name, rom_family=rom_fam.name, rom_run=str(r["run_id"]),
                    rom_name=str(r["name"]), rom_runs=tuple(sorted(map(str, mates["run_id"]))),
                    dense_runs=tuple(map(str, scaling["run_id"])),
                    seed_runs=tuple(sorted(map(str, members.loc[members["role"] == "seed", "run_id"]))),
                    expand=tuple(math.nan if e is None or pd.isna(e) else float(e) for e in scaling["_expand"]),
                    d_model=tuple(int(d) for d in scaling["d_model"]), names=tuple(map(str, scaling["name"])),
                    width_field=_width_label(r["_model"])))
    return out


def _width_label(model: dict[str, Any]) -> str:
    where = _width_field(model)
    return f"model.{where[0]}.{where[1]}" if where else "(none)"


def width_series(df: pd.DataFrame) -> HybridSeries | None:
    """The Mamba-width series of claim (b): that of the RoM hybrid with the most active parameters, or None."""
    return next((s for s in hybrid_series(df) if s.kind == WIDTH), None)


def whole_series(df: pd.DataFrame, rom_run: str) -> HybridSeries | None:
    """The whole-hybrid series built around the RoM run ``rom_run``, or None."""
    return next((s for s in hybrid_series(df) if s.kind == WHOLE and s.rom_run == rom_run), None)


def series_fits(df: pd.DataFrame, param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
                flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL, bootstrap: int = 1000, seed: int = 0,
                ci_level: float = 0.95) -> list[FitResult]:
    """Each series' own L(C) fit (its dense runs alone), keyed ``HybridSeries.fit_key``; [] without a series."""
    return [task() for task in series_fit_tasks(df, param_convention, flop_convention, bootstrap, seed, ci_level)]


def series_fit_tasks(df: pd.DataFrame, param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
                     flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL, bootstrap: int = 1000,
                     seed: int = 0, ci_level: float = 0.95) -> list:
    """``series_fits`` as picklable tasks, one per series (``analysis.parallel.run_tasks``)."""
    return [functools.partial(series_fit, df, s, param_convention, flop_convention, bootstrap, seed, ci_level)
            for s in hybrid_series(df)]


def series_fit(df: pd.DataFrame, s: HybridSeries, param_convention: ParamConvention,
               flop_convention: FlopConvention, bootstrap: int, seed: int, ci_level: float) -> FitResult:
    """One series' own L(C) fit (its dense runs alone), keyed ``s.fit_key``."""
    fit = fit_family(s.subset(df), s.dense_family, FitKind.FLOPS, param_convention, flop_convention, bootstrap,
                     seed, ci_level)
    return replace(fit, key=s.fit_key, message=f"{fit.message}; {s.describe()}")


def series_pooled(df: pd.DataFrame, param_convention: ParamConvention = ParamConvention.ACTIVE_NONEMBEDDING,
                  flop_convention: FlopConvention = FlopConvention.TRAIN_TOTAL, bootstrap: int = 1000, seed: int = 0,
                  ci_level: float = 0.95, noise: dict | None = None) -> list:
    """Each series pooled with its RoM runs (exponent shared: one RoM size does not give a second exponent):
    L(C), and as views L(C without the LM head) and L(wall-clock); keys ``pooled_key(..., series.id)``."""
    from analysis.noise import estimate_noise
    from analysis.pooled import PooledX, fit_pooled, pooled_key

    noise = estimate_noise(df) if noise is None else noise
    out = []
    for s in hybrid_series(df):
        sub = s.subset(df)
        for kind in (PooledX.FLOPS, PooledX.FLOPS_NO_HEAD, PooledX.WALL):
            fit = fit_pooled(sub, s.dense_family, s.rom_family, kind, True, param_convention, flop_convention,
                             noise=noise, bootstrap=bootstrap, seed=seed, ci_level=ci_level)
            fit = replace(fit, key=pooled_key(kind, True, s.dense_family, s.rom_family, s.id),
                          message=f"{fit.message}; {s.describe()}")
            if kind != PooledX.FLOPS:  # views: intervals kept in ``derived``, replicates not stored
                fit = replace(fit, bootstraps=tuple(replace(b, samples=(), note="; ".join(
                    x for x in (b.note, "replicates not stored (a view)") if x)) for b in fit.bootstraps))
            out.append(fit)
    return out


def series_view(series: HybridSeries) -> dict[str, Any]:
    """A claim view entry naming a series and its runs (the claim's details say which series was used)."""
    return {"what": f"dense baseline: the {series.kind} series", "fit_key": series.fit_key, "value": None,
            "interval": None, "at": None, "method": series.describe(), "status": "", "note": "",
            "series": series.to_dict()}
