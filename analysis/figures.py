"""Figures (matplotlib Agg, one style, PNG + PDF each). Plots read fit results and claims; they never fit.

Every figure is always written (a panel says "no data" when the study has none) so that a workflow can
declare fixed outputs. ``figures.json`` beside them lists files, captions and notes (e.g. missing metrics
files), and the report reads it.

Conventions shared by the figures (docs/analysis.md, "Figures"):

* runs are named by their ``name`` (``rom-m-seed1``), never by their hashed run id;
* a seed group (a run and its replicates that differ only in the seed, ``analysis.noise.seed_groups``) is drawn
  as one point at its mean with a bar of +-1 standard deviation, the replicates as small dots;
* runs that no fit uses (ablations, other training lengths) get an open marker of their own, named in the
  legend; no line goes through them or through seed replicates;
* a fit with a parameter at a bound of its search range is drawn in grey, and its legend says which
  parameter sits at which bound, in words;
* loss curves are the cross-entropy (``train/ce``), not cross-entropy + auxiliary losses; cooldown-branch
  lines of a metrics file stay off the main curve (their end points are marked).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.errors import AnalysisError  # noqa: E402
from rom.io import atomic_path, atomic_write_json_safe as write_json  # noqa: E402
from analysis.claims import Claim  # noqa: E402
from analysis.collect import runs_at_train_length  # noqa: E402
from analysis.families import Family, families_in  # noqa: E402
from analysis.fit import (BOUND_TOL, EXPONENT_BOUNDS, FIT_ROLES, FitKind, FitResult, FitStatus,  # noqa: E402
                          ParamConvention, fit_key, predict)
from analysis.noise import seed_groups  # noqa: E402
from analysis.outputs import FIGURE_FORMATS, FIGURES, FIGURES_MANIFEST, claim_id  # noqa: E402
from analysis.pooled import PAPER_N_ACTIVE, PooledFit, PooledX, x_ratio  # noqa: E402
from analysis.pooled import predict as pooled_predict  # noqa: E402
from analysis.prediction import Prediction, choose_prediction  # noqa: E402

log = logging.getLogger(__name__)

STYLE: dict[str, Any] = {
    "figure.figsize": (6.4, 4.4),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "pdf.fonttype": 42,  # embed TrueType so the PDF text stays text
}
FAMILY_COLORS = {"mamba": "#1f77b4", "rom": "#d62728", "hybrid-mamba": "#2ca02c", "hybrid-rom": "#ff7f0e"}
BOUND_COLOR = "#9a9a9a"  # fits with a parameter at a bound
# Open markers for runs no fit uses (ablations, other training lengths), one per run in the order met.
UNFITTED_MARKERS = ("^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "8", "d")
# Line style of a training curve by run role.
ROLE_LINESTYLES = {"scaling": "-", "seed": "--", "ablation": "-.", "extrapolation": ":"}
WIDE = (8.8, 4.6)  # a plot with its legend outside on the right


def family_style(family: Family) -> dict[str, Any]:
    """Colour per base family, solid for routed (RoM) and dashed for dense mixers, squares for FFN-MoE."""
    return {"color": FAMILY_COLORS.get(family.base, "#7f7f7f"), "linestyle": "-" if family.routed else "--",
            "marker": "s" if family.moe else "o"}


def shade(color: str, t: float) -> tuple[float, float, float]:
    """``color`` lightened towards white for t = 0 (0.4 of its strength) and itself at t = 1."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    strength = 0.4 + 0.6 * min(max(t, 0.0), 1.0)
    return tuple(float(v) for v in 1.0 - (1.0 - rgb) * strength)


def greyed(color: str) -> tuple[float, float, float]:
    """A fit at a bound: grey with a trace of its family's colour (two greyed fits stay apart)."""
    rgb, grey = np.array(matplotlib.colors.to_rgb(color)), np.array(matplotlib.colors.to_rgb(BOUND_COLOR))
    return tuple(float(v) for v in 0.3 * rgb + 0.7 * grey)


def length_label(n: float) -> str:
    """512 -> '512', 1024 -> '1K', 1536 -> '1.5K', 2**20 -> '1M' (context lengths in tokens)."""
    n = int(n)
    for div, unit in ((1 << 20, "M"), (1 << 10, "K")):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def count_label(v: float) -> str:
    """1.3e9 -> '1.3B', 3.5e6 -> '3.5M', 4.7e5 -> '470k' (parameter counts)."""
    v = float(v)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def bound_words(param_names: Sequence[str], params: Mapping[str, float] | None, fixed: Mapping[str, float],
                loss_min: float, at_bound: bool) -> list[str]:
    """Which parameters of a fit sit at a bound of the search range, in words ("E at its lower bound 0").

    The bounds are those of ``analysis.fit`` (0 <= E <= the lowest measured loss, exponents in
    ``EXPONENT_BOUNDS``); a fit whose status says "at a bound" without either (a log-coefficient at its
    limit) gets "a coefficient at its bound"."""
    if params is None:
        return []
    words = []
    for name in param_names:
        if name in fixed or name not in params:
            continue
        value = float(params[name])
        if name == "E":
            tol = BOUND_TOL * max(loss_min, 1.0)
            if value <= tol:
                words.append("E at its lower bound 0")
            elif math.isfinite(loss_min) and loss_min - value <= tol:
                words.append(f"E at its upper bound, the lowest loss {loss_min:.3g}")
        elif name.split("[")[0] in ("alpha", "beta", "a", "b"):
            lo, hi = EXPONENT_BOUNDS
            tol = BOUND_TOL * max(hi - lo, 1.0)
            if value - lo <= tol:
                words.append(f"{name} at its lower bound {lo:g} (no fall with size)")
            elif hi - value <= tol:
                words.append(f"{name} at its upper bound {hi:g}")
    if at_bound and not words:
        words.append("a coefficient at its bound")
    return words


def fit_bound_words(fit: FitResult) -> list[str]:
    return bound_words(fit.param_names, fit.params, fit.fixed, fit.loss_range[0],
                       fit.status == FitStatus.HIT_BOUND)


def pooled_bound_words(fit: PooledFit) -> list[str]:
    loss_min = min((p.loss for p in fit.points), default=math.nan)
    return bound_words(fit.param_names, fit.params, fit.fixed, loss_min, fit.status == FitStatus.HIT_BOUND)


def _log_x(ax: Any, values: Sequence[float]) -> None:
    """Log x axis spanning at least a decade (so it carries a decade label and no crowded minor labels)."""
    ax.set_xscale("log")
    vals = [float(v) for v in values if np.isfinite(v) and v > 0]
    if not vals:
        return
    lo, hi = min(vals) / 1.3, max(vals) * 1.3
    if hi / lo < 10:
        centre = math.sqrt(lo * hi)
        lo, hi = centre / math.sqrt(10), centre * math.sqrt(10)
    ax.set_xlim(lo, hi)
    if math.log10(hi / lo) < 2:  # at most one decade label: label the 2x and 5x minor ticks as well
        ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.LogFormatterSciNotation(labelOnlyBase=False))
    else:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555555",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_right(ax: Any, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=kw.pop("fontsize", 7), **kw)


def _save(fig: Any, out_dir: Path, name: str) -> list[str]:
    files = []
    for fmt in FIGURE_FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            # no creation date in the file: regenerating from the same records gives the same bytes
            metadata = {"CreationDate": None} if fmt == "pdf" else ({"Software": None} if fmt == "png" else None)
            fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata=metadata)
        files.append(path.name)
    plt.close(fig)
    return files


# ------------------------------------------------------------------------------------------ runs as points


@dataclass(frozen=True)
class SeedGroup:
    """A run and its seed replicates (identical config but the seed): drawn as mean +- std."""

    family: str
    label: str  # the reference run's name (the scaling run when there is one)
    run_ids: tuple[str, ...]


def seed_groups_of(df: pd.DataFrame) -> list[SeedGroup]:
    """The seed groups of a table (``analysis.noise.seed_groups``: runs at their training length, roles scaling
    and seed, >= 2 runs, at least one of role seed)."""
    out = []
    for family, groups in sorted(seed_groups(df).items()):
        for g in groups:
            ref = g[g["role"] == "scaling"]
            label = str((ref if not ref.empty else g).sort_values("run_id")["name"].iloc[0])
            out.append(SeedGroup(family, label, tuple(str(r) for r in g["run_id"])))
    return out


def _unfitted(g: pd.DataFrame) -> pd.Series:
    return ~(g["role"].isin(FIT_ROLES) & ~g["diverged"].astype(bool))


def _scatter_runs(ax: Any, runs: pd.DataFrame, x_of: Callable[[pd.DataFrame], Any], groups: Sequence[SeedGroup],
                  lines: bool = False) -> dict[str, tuple[float, float]]:
    """Every run at its x and loss, by the conventions of the module docstring; ``lines``: one line per family
    through its scaling runs (a seed group's mean standing for its scaling run). Returns the drawn
    (x, loss) of each seed group by its label."""
    families = families_in(runs)
    in_group = {rid: grp for grp in groups for rid in grp.run_ids}
    markers = iter(UNFITTED_MARKERS * 4)
    drawn: dict[str, tuple[float, float]] = {}
    for family in sorted(runs["family"].unique()):
        g = runs[runs["family"] == family].copy()
        g["_x"] = np.asarray(x_of(g), float)
        st = family_style(families[family])
        fitted = ~_unfitted(g)
        single = g[fitted & ~g["run_id"].isin(list(in_group))]
        ax.plot(single["_x"], single["loss_nats"], linestyle="none", marker=st["marker"], color=st["color"],
                label=f"{family} runs")
        line_pts = [(float(r["_x"]), float(r["loss_nats"])) for _, r in single[single["role"] == "scaling"].iterrows()]
        for grp in [gr for gr in groups if gr.family == family]:
            members = g[g["run_id"].isin(grp.run_ids)]
            if members.empty:
                continue
            x, y = float(members["_x"].mean()), float(members["loss_nats"].mean())
            sd = float(members["loss_nats"].std(ddof=1)) if len(members) > 1 else 0.0
            ax.plot(members["_x"], members["loss_nats"], linestyle="none", marker=".", color=st["color"],
                    alpha=0.5, markersize=4)
            ax.errorbar([x], [y], yerr=[sd], fmt=st["marker"], color=st["color"], capsize=3, elinewidth=1.0,
                        label=f"{grp.label}: mean ± std of {len(members)} seeds")
            drawn[grp.label] = (x, y)
            line_pts.append((x, y))
        if lines and len(line_pts) > 1:
            xs, ys = zip(*sorted(line_pts))
            ax.plot(xs, ys, color=st["color"], linestyle=st["linestyle"], linewidth=1.0, alpha=0.8)
        unfitted = g[~fitted]
        if "train_tokens" in g.columns and (g["role"] == "scaling").any():
            # runs at another token budget than the family's scaling runs (the learning-rate check, at a
            # quarter of it) sit on another curve: they belong to the lr_check table, not to this plot
            budgets = set(g.loc[g["role"] == "scaling", "train_tokens"].astype(float))
            unfitted = unfitted[unfitted["train_tokens"].astype(float).isin(budgets)]
        for _, r in unfitted.sort_values(["role", "_x", "name"]).iterrows():
            why = "diverged" if bool(r["diverged"]) else r["role"]
            ax.plot([r["_x"]], [r["loss_nats"]], linestyle="none", marker=next(markers), mfc="none",
                    color=st["color"], label=f"{r['name']} ({why}, not fitted)")
    return drawn


def _band(curves: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    q = 50 * (1 - level)
    return np.nanpercentile(curves, q, axis=0), np.nanpercentile(curves, 100 - q, axis=0)


def _fit_curves(ax: Any, runs: pd.DataFrame, fits: Mapping[str, FitResult], kind: FitKind, x_of: Callable,
                grid_x: Sequence[float]) -> None:
    """Each family's per-family fit over ``grid_x``'s range with its bootstrap band; grey when at a bound."""
    families = families_in(runs)
    for family in sorted(runs["family"].unique()):
        fit = fits.get(fit_key(kind, family))
        if fit is None or not fit.ok:
            continue
        # Over the family's own x (and the read-off beyond it), not the whole axis: a fit far outside its
        # data says nothing and can run off the plot.
        own = [v for v in x_of(runs[runs["family"] == family]) if v > 0]
        span = [v for v in grid_x if min(own) / 3 <= v <= max(own) * 3] + own
        grid = np.geomspace(min(span) / 1.3, max(span) * 1.3, 160)
        st = family_style(families[family])
        words = fit_bound_words(fit)
        color = greyed(st["color"]) if words else st["color"]
        label = f"{family} fit" + ("\n  grey: " + ";\n  ".join(words) if words else "")
        ax.plot(grid, predict(fit, None, grid), color=color, linestyle=st["linestyle"], linewidth=1.2, label=label,
                alpha=0.9)
        samples = fit.sample_params()
        if fit.ci is not None and samples:
            lo_b, hi_b = _band(np.array([predict(fit, p, grid) for p in samples]), fit.ci_level)
            ax.fill_between(grid, lo_b, hi_b, color=color, alpha=0.12 if words else 0.15, linewidth=0)
    ax.set_ylabel("validation loss at the training length (nats/token)")


# ------------------------------------------------------------------------------------------ figures


def fig_context_ppl(df: pd.DataFrame, notes: list[str]) -> Any:
    """ppl(L) / ppl(T) against the evaluated length L, one panel per training length T."""
    sel = df[(df["role"] != "ablation") & ~df["diverged"].astype(bool)]
    lengths = sorted(sel["train_seq_len"].unique())
    n = max(1, len(lengths))
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n + 1.2, 4.2), squeeze=False, layout="constrained")
    if sel.empty:
        _no_data(axes[0, 0], "no evaluation rows")
        return fig
    families = families_in(sel)
    groups = seed_groups_of(df)
    in_group = {rid: grp for grp in groups for rid in grp.run_ids}
    for ax, T in zip(axes[0], lengths):
        g = sel[sel["train_seq_len"] == T]
        ratios: dict[str, pd.Series] = {}
        for run_id, r in g.groupby("run_id", sort=True):
            base = r[r["at_train_length"]]
            if base.empty:
                notes.append(f"context_ppl: {r['name'].iloc[0]} has no evaluation at its training length {T}")
                continue
            ratios[run_id] = r.set_index("context_length")["ppl"].sort_index() / float(base["ppl"].iloc[0])
        info = g.drop_duplicates("run_id").set_index("run_id")
        order = info.loc[list(ratios)].sort_values(["family", "params_active_nonembedding", "name"])
        done: set[str] = set()
        for family, fam_runs in order.groupby("family", sort=True):
            st = family_style(families[family])
            sizes = sorted(set(fam_runs["params_active_nonembedding"]))
            for run_id, row in fam_runs.iterrows():
                if run_id in done:
                    continue
                t = sizes.index(row["params_active_nonembedding"]) / (len(sizes) - 1) if len(sizes) > 1 else 1.0
                color = shade(st["color"], t)
                grp = in_group.get(run_id)
                members = [m for m in (grp.run_ids if grp else (run_id,)) if m in ratios]
                done.update(members)
                if len(members) > 1:
                    frame = pd.concat([ratios[m] for m in members], axis=1)
                    mean, sd = frame.mean(axis=1), frame.std(axis=1, ddof=1)
                    ax.errorbar(mean.index, mean.values, yerr=sd.values, color=color, linestyle=st["linestyle"],
                                marker=st["marker"], capsize=3, elinewidth=1.0,
                                label=f"{grp.label} ({count_label(row['params_active_nonembedding'])}): "
                                      f"mean ± std of {len(members)} seeds")
                else:
                    s = ratios[run_id]
                    ax.plot(s.index, s.values, color=color, linestyle=st["linestyle"], marker=st["marker"],
                            label=f"{row['name']} ({count_label(row['params_active_nonembedding'])})")
        evaluated = sorted(set(g["context_length"].astype(int)))
        ax.axhline(1.0, color="#555555", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(evaluated)
        ax.set_xticklabels([length_label(v) for v in evaluated])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlim(min(evaluated) / 1.15, max(evaluated) * 1.15)
        ax.set_title(f"trained at {length_label(T)} tokens")
        ax.set_xlabel("evaluation context length L (tokens)")
        ax.set_ylabel(f"ppl(L) / ppl({length_label(T)})")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3f"))
        _legend_right(ax, fontsize=6)
    return fig


def _headline(claims: Sequence[Claim], cid: str) -> dict[str, Any] | None:
    for c in claims:
        if c.id == cid:
            return next((d for d in c.details if d.get("headline")), None)
    return None


def _claim(claims: Sequence[Claim], cid: str) -> Claim | None:
    return next((c for c in claims if c.id == cid), None)


def _fmt_interval(ci: Sequence[float] | None, fmt: str) -> str:
    if ci is None:
        return "no interval"
    return "[" + ", ".join("∞" if math.isinf(v) else format(v, fmt) for v in ci) + "]"


def _readoff_arrow(ax: Any, head: dict[str, Any] | None, label: Callable[[dict[str, Any]], str],
                   towards_dense: bool, notes: list[str], what: str) -> None:
    if not head:
        notes.append(f"{what}: no per-family read-off to draw")
        return
    y, xr, xd = head["loss"], head["x_run"], head["x_dense"]
    if isinstance(xd, (int, float)) and math.isfinite(xd):
        start, end = ((xr, xd) if towards_dense else (xd, xr))
        ax.annotate("", xy=(end, y), xytext=(start, y), arrowprops={"arrowstyle": "->", "color": "black"})
        ax.annotate(label(head) + (" (extrapolated)" if head["extrapolated"] else ""), (math.sqrt(xr * xd), y),
                    xytext=(0, -14), textcoords="offset points", ha="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    else:
        ax.text(xr, y, "no read-off: below the dense asymptote  ", ha="right", va="bottom", fontsize=8)


def _headline_box(ax: Any, claim: Claim | None, fmt: str) -> None:
    """The claim's headline value and interval, as printed in the claims table, in a corner of the plot."""
    if claim is None or claim.ours is None:
        return
    value = format(claim.ours, fmt)
    text = f"claim ({claim.id}) headline: {value} {_fmt_interval(claim.ci, fmt)} ({claim.ci_label})"
    if claim.headline_fit:
        text += f"\nfrom {claim.headline_fit}"
    ax.set_title(text, fontsize=8)


def _ylim_to_points(ax: Any, runs: pd.DataFrame) -> None:
    """y range of the measured losses (with a margin), so that no fit curve or band sets it."""
    y = runs["loss_nats"].astype(float)
    y = y[np.isfinite(y)]
    if len(y):
        pad = 0.15 * max(float(y.max() - y.min()), 0.05)
        ax.set_ylim(float(y.min()) - pad, float(y.max()) + pad)


def _readoff_x(head: dict[str, Any] | None) -> list[float]:
    """The dense x of a headline read-off, to widen the plotted grid to it ([] when there is none)."""
    x = head.get("x_dense") if head else None
    return [x] if isinstance(x, float) and math.isfinite(x) else []


def fig_loss_vs_params(df: pd.DataFrame, fits: Mapping[str, FitResult], claims: Sequence[Claim],
                       notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    conv = next((ParamConvention(f.param_convention) for f in fits.values()), ParamConvention.ACTIVE_NONEMBEDDING)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    head = _headline(claims, claim_id("equivalence"))
    extra = _readoff_x(head)
    x_of = lambda g: g[conv.column].astype(float)  # noqa: E731
    grid_x = [v for v in list(x_of(runs)) + extra if v > 0]
    _fit_curves(ax, runs, fits, FitKind.PARAMS, x_of, grid_x)
    _scatter_runs(ax, runs, x_of, seed_groups_of(df))
    _readoff_arrow(ax, head, lambda h: rf"per-family read-off $N_{{eq}}/N_r$ = {h['value']:.2f}x", True, notes,
                   "loss_vs_active_params")
    _headline_box(ax, _claim(claims, claim_id("equivalence")), ".3g")
    _ylim_to_points(ax, runs)
    _log_x(ax, grid_x)
    ax.set_xlabel(f"parameters ({conv.value.replace('_', ' ')})")
    _legend_right(ax)
    return fig


def fig_loss_vs_flops(df: pd.DataFrame, fits: Mapping[str, FitResult], claims: Sequence[Claim],
                      notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    flops_fits = [f for f in fits.values() if f.kind == FitKind.FLOPS]
    head = _headline(claims, claim_id("saving"))
    extra = _readoff_x(head)

    def c_of(g: pd.DataFrame) -> Any:
        if flops_fits and flops_fits[0].flop_convention == "6ND":
            col = ParamConvention(flops_fits[0].param_convention).column
            return 6.0 * g[col].astype(float) * g["train_tokens"].astype(float)
        return g["flops_train_total"].astype(float)

    grid_x = [v for v in list(c_of(runs)) + extra if v > 0]
    _fit_curves(ax, runs, fits, FitKind.FLOPS, c_of, grid_x)
    _scatter_runs(ax, runs, c_of, seed_groups_of(df))
    _readoff_arrow(ax, head, lambda h: f"per-family read-off: FLOPs saving {100 * h['value']:.0f}%", False, notes,
                   "loss_vs_flops")
    _headline_box(ax, _claim(claims, claim_id("saving")), ".3g")
    _ylim_to_points(ax, runs)
    _log_x(ax, grid_x)
    conv = flops_fits[0].flop_convention if flops_fits else "train_total"
    ax.set_xlabel(f"training FLOPs ({conv})")
    _legend_right(ax)
    return fig


def fig_loss_vs_total_params(df: pd.DataFrame, notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    x_of = lambda g: g["params_total"].astype(float)  # noqa: E731
    _scatter_runs(ax, runs, x_of, seed_groups_of(df), lines=True)
    _log_x(ax, runs["params_total"].astype(float))
    ax.set_xlabel("total parameters (all experts, with embeddings)")
    ax.set_ylabel("validation loss at the training length (nats/token)")
    _legend_right(ax)
    return fig


# ------------------------------------------------------------------------------------------ prediction


def _pooled_for_prediction(claims: Sequence[Claim], pooled: Mapping[str, PooledFit]
                           ) -> tuple[PooledFit | None, Prediction | None, str]:
    """The pooled fit behind claim (a)'s prediction (``claims[a].prediction.fit_key``) and the prediction; without
    one in claims.json, the one ``analysis.prediction.choose_prediction`` picks for the first routed pair."""
    claim = _claim(claims, claim_id("equivalence"))
    if claim is not None and claim.prediction:
        pred = Prediction.from_dict(claim.prediction)
        fit = pooled.get(pred.fit_key)
        if fit is not None:
            return fit, pred, f"claim ({claim.id}) prediction"
    params_fits = [f for f in pooled.values() if f.x_kind == PooledX.PARAMS and "@" not in f.key]
    for pair in sorted({(f.dense_family, f.rom_family) for f in params_fits}):
        group = [f for f in params_fits if (f.dense_family, f.rom_family) == pair]
        pred = choose_prediction(group)
        if pred is not None and pred.value is not None:
            return pooled.get(pred.fit_key), pred, "read from the pooled fits (claims.json has no prediction)"
    return None, None, ""


def _pooled_curves(fit: PooledFit, family: str, grid: np.ndarray, tokens: float | None
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The pooled law of a family on ``grid`` and its band: per bootstrap the pointwise percentiles of the
    replicates' curves, joined as the envelope of the two (the convention of the fit's intervals)."""
    centre = pooled_predict(fit, family, grid, tokens)
    los, his = [], []
    for kind in ("runs", "noise"):
        samples = fit.sample_params(kind)
        if samples:
            curves = np.array([pooled_predict(fit, family, grid, tokens, params=p) for p in samples])
            lo, hi = _band(curves, fit.ci_level)
            los.append(lo)
            his.append(hi)
    if not los:
        return centre, None, None
    return centre, np.min(los, axis=0), np.max(his, axis=0)


def _ratio_curves(fit: PooledFit, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    centre = np.array([x_ratio(fit.params, fit.dense_family, fit.rom_family, float(x)) for x in grid])
    los, his = [], []
    for kind in ("runs", "noise"):
        samples = fit.sample_params(kind)
        if samples:
            curves = np.array([[x_ratio(p, fit.dense_family, fit.rom_family, float(x)) for x in grid]
                               for p in samples])
            lo, hi = _band(np.where(np.isfinite(curves), curves, np.nan), fit.ci_level)
            los.append(lo)
            his.append(hi)
    if not los:
        return centre, None, None
    return centre, np.min(los, axis=0), np.max(his, axis=0)


def fig_prediction(df: pd.DataFrame, claims: Sequence[Claim], pooled: Mapping[str, PooledFit],
                   notes: list[str]) -> Any:
    """Left: loss against active parameters with the pooled dense + RoM law and its band carried to the
    paper's 1.3B; right: the equivalence ratio k(N) with its band and the prediction at 1.3B."""
    fig, (ax, ax_k) = plt.subplots(1, 2, figsize=(12.4, 4.6), layout="constrained")
    fit, pred, source = _pooled_for_prediction(claims, pooled)
    if fit is None or not fit.ok or pred is None:
        why = "no pooled dense + RoM fit" if fit is None else f"pooled fit {fit.key}: {fit.status.value}"
        for a in (ax, ax_k):
            _no_data(a, f"no prediction at the paper's scale\n({why})")
        notes.append(f"prediction: none ({why})")
        return fig
    notes.append(f"prediction {source}: {fit.key}")
    runs = runs_at_train_length(df)
    runs = runs[runs["family"].isin([fit.dense_family, fit.rom_family])]
    conv = ParamConvention(fit.param_convention)
    x_of = lambda g: g[conv.column].astype(float)  # noqa: E731
    n_target = float(pred.n_active)
    xs = [p.x for p in fit.points]
    lo_x, hi_x = min(xs) / 1.5, max(n_target, max(xs)) * 2.0
    grid = np.geomspace(lo_x, hi_x, 200)
    tokens = max((p.tokens for p in fit.points), default=None) if fit.token_term else None
    families = families_in(runs) if not runs.empty else {}
    words = pooled_bound_words(fit)
    for family in (fit.dense_family, fit.rom_family):
        st = family_style(families[family]) if family in families else {"color": "#555555", "linestyle": "-"}
        color = greyed(st["color"]) if words else st["color"]
        centre, lo, hi = _pooled_curves(fit, family, grid, tokens)
        ax.plot(grid, centre, color=color, linestyle=st["linestyle"], linewidth=1.3, label=f"{family}: pooled law")
        if lo is not None:
            ax.fill_between(grid, lo, hi, color=color, alpha=0.15, linewidth=0)
    if not runs.empty:
        _scatter_runs(ax, runs[~_unfitted(runs)], x_of, seed_groups_of(df))
    for a in (ax, ax_k):
        a.axvspan(max(xs), hi_x, color="#eeeeee", zorder=0, linewidth=0)
        a.axvline(n_target, color="black", linestyle=":", linewidth=0.9)
        a.set_xscale("log")
        a.set_xlim(lo_x, hi_x)
        a.set_xlabel(f"parameters ({conv.value.replace('_', ' ')})")
    ax.text(n_target, 0.98, f" {count_label(n_target)}\n (paper)", transform=ax.get_xaxis_transform(),
            fontsize=7, va="top")
    ax.text(math.sqrt(max(xs) * hi_x), 0.02, "beyond the data", transform=ax.get_xaxis_transform(), fontsize=7,
            ha="center", va="bottom", color="#666666")
    title = f"{fit.dense_family} + {fit.rom_family}, {'shared exponent' if fit.shared_exponent else 'exponent per family'}"
    if words:
        title += f" (greyed: {'; '.join(words)})"
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("validation loss at the training length (nats/token)" + (" at the full token budget"
                                                                          if fit.token_term else ""))
    ax.legend(fontsize=6, loc="upper right")

    centre, lo, hi = _ratio_curves(fit, grid)
    color = BOUND_COLOR if words else FAMILY_COLORS.get(families[fit.rom_family].base if fit.rom_family in families
                                                          else "rom", "#d62728")
    level = f"{100 * fit.ci_level:.0f}%"
    ax_k.plot(grid, centre, color=color, label=f"k(N) = N_eq / N_rom, {fit.key}")
    if lo is not None:
        ax_k.fill_between(grid, lo, hi, color=color, alpha=0.15, linewidth=0,
                          label=f"{level} envelope of run and noise bootstraps")
    paper = _claim(claims, claim_id("equivalence"))
    if paper is not None and paper.paper_value is not None:
        ax_k.axhline(paper.paper_value, color="black", linestyle="--", linewidth=0.9,
                     label=f"paper: {paper.paper_value:g}x")
    ax_k.axhline(1.0, color="#555555", linewidth=0.8)
    if pred.value is not None:
        iv = pred.interval
        yerr = None if iv is None else [[pred.value - iv[0]], [iv[1] - pred.value]]
        ax_k.errorbar([n_target], [pred.value], yerr=yerr, fmt="D", color="black", capsize=4,
                      label=f"prediction at {count_label(n_target)}: {pred.value:.3g}x "
                            f"{_fmt_interval(iv, '.3g')}")
    rom_pts = [p for p in fit.points if p.family == fit.rom_family]
    finite = [v for v in ([*centre] + ([*lo, *hi] if lo is not None else [])) if np.isfinite(v) and v > 0]
    ax_k.set_yscale("log")
    if finite:
        top = max(max(finite), pred.interval[1] if pred.interval and math.isfinite(pred.interval[1]) else 0)
        bottom = min(min(finite), pred.interval[0] if pred.interval and pred.interval[0] > 0 else 1)
        ax_k.set_ylim(min(bottom, 0.9) / 1.2, max(top, 2.5) * 1.2)
    ax_k.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_k.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax_k.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if rom_pts:
        ax_k.plot([p.x for p in rom_pts], [x_ratio(fit.params, fit.dense_family, fit.rom_family, p.x)
                                           for p in rom_pts], linestyle="none", marker="|", color="black",
                  markersize=10, label="RoM run sizes")
    ax_k.set_ylabel("equivalence ratio N_eq / N_rom")
    ax_k.set_title(f"claim ({claim_id('equivalence')}) carried to {count_label(n_target)} active parameters",
                   fontsize=9)
    ax_k.legend(fontsize=6, loc="lower left")
    return fig


# ------------------------------------------------------------------------------------------ metrics files


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Lines of a metrics JSONL; bad lines are skipped (a run may have been cut off mid-write)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


@dataclass(frozen=True)
class RunMetrics:
    family: Family
    num_experts: int
    rows: list[dict[str, Any]]
    name: str = ""  # the run's name (legends); the run id when unknown
    role: str = "scaling"
    size: float = math.nan  # active non-embedding parameters (shading by size)

    @property
    def main(self) -> list[dict[str, Any]]:
        """The main run's lines (cooldown-branch lines carry a ``branch`` key and are left out)."""
        return [r for r in self.rows if "branch" not in r]

    @property
    def branch_ends(self) -> list[tuple[float, float, float]]:
        """(fraction, tokens, val/loss) of each cooldown branch that logged its final validation loss."""
        out = []
        for r in self.rows:
            b = r.get("branch")
            if isinstance(b, dict) and isinstance(b.get("val/loss"), (int, float)) and "tokens" in b:
                out.append((float(b.get("fraction", math.nan)), float(b["tokens"]), float(b["val/loss"])))
        return out


def _load_all_metrics(df: pd.DataFrame, notes: list[str], records_dir: str | Path | None = None
                      ) -> dict[str, RunMetrics]:
    """Each run's metrics: the table's ``metrics_path``; if that is gone and ``records_dir`` is given
    (records moved since collect), ``<records_dir>/**/<run_id>/<metrics file name>``."""
    out = {}
    families = families_in(df)
    moved: dict[tuple[str, str], Path] = {}
    if records_dir is not None:
        moved = {(p.parent.name, p.name): p for p in Path(records_dir).rglob("*.jsonl")}
    for run_id, g in df.groupby("run_id", sort=True):
        name = str(g["name"].iloc[0]) if "name" in g.columns else str(run_id)
        path = str(g["metrics_path"].iloc[0])
        if not path:
            notes.append(f"{name}: record names no metrics file")
            continue
        if not Path(path).is_file() and (run_id, Path(path).name) in moved:
            path = str(moved[(run_id, Path(path).name)])
        if not Path(path).is_file():
            notes.append(f"{name}: metrics file {path} is missing")
            continue
        out[run_id] = RunMetrics(families[str(g["family"].iloc[0])], int(g["num_experts"].iloc[0]),
                                 read_metrics(path), name, str(g["role"].iloc[0]),
                                 float(g["params_active_nonembedding"].iloc[0]))
    return out


def fig_training_curves(metrics: Mapping[str, RunMetrics], notes: list[str]) -> Any:
    """Cross-entropy (``train/ce``; ``train/loss`` only where a file has no ``train/ce``) against tokens, one
    panel per family, runs shaded by size and styled by role; validation losses as dots; cooldown branches'
    final validation losses as crosses."""
    by_family: dict[str, list[RunMetrics]] = {}
    for m in metrics.values():
        by_family.setdefault(m.family.name, []).append(m)
    names = sorted(by_family)
    n = max(1, len(names))
    cols = min(n, 2)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols + 1.0, 3.8 * rows_n), squeeze=False,
                             layout="constrained", sharey=True)
    flat = list(axes.flat)
    drawn = 0
    fallback: list[str] = []
    for ax, family in zip(flat, names):
        runs = sorted(by_family[family], key=lambda m: (m.size, m.role != "scaling", m.name))
        st = family_style(runs[0].family)
        sizes = sorted({m.size for m in runs})
        for m in runs:
            main = m.main
            x_key = "tokens" if any("tokens" in r for r in main) else "step"
            key = "train/ce" if any(isinstance(r.get("train/ce"), (int, float)) for r in main) else "train/loss"
            if key == "train/loss" and any("train/loss" in r for r in main):
                fallback.append(m.name)
            tr = [(r[x_key], r[key]) for r in main if x_key in r and isinstance(r.get(key), (int, float))]
            va = [(r[x_key], r["val/loss"]) for r in main if x_key in r and isinstance(r.get("val/loss"), (int, float))]
            t = sizes.index(m.size) / (len(sizes) - 1) if m.size in sizes and len(sizes) > 1 else 1.0
            color = shade(st["color"], t)
            if tr:
                ax.plot(*zip(*tr), color=color, linestyle=ROLE_LINESTYLES.get(m.role, "-"), linewidth=1.1,
                        label=f"{m.name} ({count_label(m.size)})" if math.isfinite(m.size) else m.name)
                drawn += 1
            if va:
                ax.plot(*zip(*va), color=color, marker="o", linestyle="none", markersize=3)
            ends = m.branch_ends
            if ends and x_key == "tokens":
                ax.plot([e[1] for e in ends], [e[2] for e in ends], color=color, marker="x", linestyle="none",
                        markersize=5)
            if not tr and not va:
                notes.append(f"{m.name}: metrics file has no train/ce, train/loss or val/loss")
        ax.set_title(family, fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training tokens")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.legend(fontsize=6, loc="upper right")
    for ax in flat[len(names):]:
        ax.set_visible(False)
    if not drawn:
        for ax in flat:
            ax.set_visible(True)
        _no_data(flat[0], "no training metrics found")
        return fig
    if fallback:
        notes.append("training_curves: no train/ce logged for " + ", ".join(sorted(fallback)) +
                     "; their lines are train/loss (cross-entropy + auxiliary losses)")
    if any(m.branch_ends for m in metrics.values()):
        notes.append("training_curves: crosses mark the final validation loss of WSD cooldown branches")
    fig.suptitle("lines: training cross-entropy (solid scaling, dashed seed, dash-dot ablation, dotted other "
                 "length); dots: validation loss", fontsize=8)
    return fig


def router_load(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """{stat: {layer: value}} from the last logged step that has router keys (stat: load_cv/max/min)."""
    for row in reversed(rows):
        found: dict[str, dict[int, float]] = {}
        for key, value in row.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "router" and parts[1].startswith("layer") and \
                    parts[1][5:].isdigit() and isinstance(value, (int, float)):
                found.setdefault(parts[2], {})[int(parts[1][5:])] = float(value)
        if found:
            return found
    return {}


def fig_expert_load(metrics: Mapping[str, RunMetrics], notes: list[str]) -> Any:
    fig, (ax_cv, ax_mm) = plt.subplots(1, 2, figsize=(11.0, 4.0), layout="constrained")
    drawn = 0
    routed = sorted(((rid, m) for rid, m in metrics.items() if router_load(m.main)),
                    key=lambda kv: (kv[1].family.name, kv[1].size, kv[1].name))
    cmap = plt.cm.tab10 if len(routed) <= 10 else plt.cm.tab20  # one colour per run
    for run_id, m in routed:
        load = router_load(m.main)
        st = family_style(m.family)
        color = cmap(drawn % cmap.N)
        label = m.name or run_id
        if "load_cv" in load:
            layers = sorted(load["load_cv"])
            ax_cv.plot(layers, [load["load_cv"][i] for i in layers], marker=st["marker"], color=color, label=label)
        if "load_max" in load or "load_min" in load:
            for stat, ls in (("load_max", "-"), ("load_min", "--")):
                if stat in load:
                    layers = sorted(load[stat])
                    ax_mm.plot(layers, [load[stat][i] for i in layers], marker=st["marker"], color=color,
                               linestyle=ls)
            values = [v for stat in ("load_max", "load_min") for v in load.get(stat, {}).values()]
            if m.num_experts > 1 and values and max(values) <= 1.0:  # logged as fractions of tokens
                ax_mm.axhline(1.0 / m.num_experts, color="#555555", linestyle=":", linewidth=0.8)
        drawn += 1
    if not drawn:
        _no_data(ax_cv, "no router load metrics\n(dense runs, or none logged)")
        _no_data(ax_mm, "no router load metrics")
        notes.append("expert_load: no run logged router/layer{i}/load_* metrics")
        return fig
    for ax in (ax_cv, ax_mm):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("layer")
    ax_cv.set_ylabel("load CV (tokens per expert)")
    ax_mm.set_ylabel("expert share of routed tokens (as logged)")
    ax_mm.plot([], [], color="black", linestyle="-", label="most loaded expert")
    ax_mm.plot([], [], color="black", linestyle="--", label="least loaded expert")
    ax_mm.plot([], [], color="#555555", linestyle=":", label="uniform share 1/E")
    ax_mm.legend(fontsize=7)
    _legend_right(ax_cv, fontsize=6)  # run names, colour per run (shared by both panels)
    return fig


# ------------------------------------------------------------------------------------------ all


def make_figures(df: pd.DataFrame, fits: Mapping[str, FitResult], claims: Sequence[Claim], out_dir: str | Path,
                 records_dir: str | Path | None = None, pooled: Mapping[str, PooledFit] | None = None) -> dict:
    """Write every figure (PNG + PDF) and ``figures.json``; return the manifest. ``pooled``: the pooled fits of
    fits.json (``analysis.pooled.load_pooled``) for the prediction figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"schema": "analysis.figures/1", "figures": {}}
    metric_notes: list[str] = []
    metrics = _load_all_metrics(df, metric_notes, records_dir)
    pooled = dict(pooled or {})
    builders: dict[str, Callable[[list[str]], Any]] = {
        "context_ppl": lambda n: fig_context_ppl(df, n),
        "loss_vs_active_params": lambda n: fig_loss_vs_params(df, fits, claims, n),
        "prediction_at_paper_scale": lambda n: fig_prediction(df, claims, pooled, n),
        "loss_vs_flops": lambda n: fig_loss_vs_flops(df, fits, claims, n),
        "loss_vs_total_params": lambda n: fig_loss_vs_total_params(df, n),
        "training_curves": lambda n: fig_training_curves(metrics, n),
        "expert_load": lambda n: fig_expert_load(metrics, n),
    }
    if set(builders) != set(FIGURES):
        raise AnalysisError(f"figure builders {sorted(builders)} do not match analysis.outputs.FIGURES "
                            f"{sorted(FIGURES)}: each listed figure needs exactly one builder")
    with plt.rc_context(STYLE):
        for name in FIGURES:
            build = builders[name]
            notes: list[str] = list(metric_notes) if name == "training_curves" else []
            fig = build(notes)
            files = _save(fig, out_dir, name)
            manifest["figures"][name] = {"files": files, "caption": FIGURES[name], "notes": notes}
            log.info("figure %s written (%s)", name, ", ".join(files))
    write_json(out_dir / FIGURES_MANIFEST, manifest)
    return manifest
