"""Figures (matplotlib Agg, one style, PNG + PDF each). Plots read fit results and claims; they never fit.

Every figure is always written (a panel says "no data" when the study has none) so that a workflow can
declare fixed outputs. ``figures.json`` beside them lists files, captions and notes (e.g. missing metrics
files), and the report reads it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.errors import AnalysisError  # noqa: E402
from rom.io import atomic_path, atomic_write_json_safe as write_json  # noqa: E402
from analysis.claims import Claim  # noqa: E402
from analysis.collect import runs_at_train_length  # noqa: E402
from analysis.families import Family, families_in  # noqa: E402
from analysis.fit import FIT_ROLES, FitKind, FitResult, ParamConvention, fit_key, predict  # noqa: E402
from analysis.outputs import FIGURE_FORMATS, FIGURES, FIGURES_MANIFEST, claim_id  # noqa: E402

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
def family_style(family: Family) -> dict[str, Any]:
    """Colour per base family, solid for routed (RoM) and dashed for dense mixers, squares for FFN-MoE."""
    return {"color": FAMILY_COLORS.get(family.base, "#7f7f7f"), "linestyle": "-" if family.routed else "--",
            "marker": "s" if family.moe else "o"}


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


def _save(fig: Any, out_dir: Path, name: str) -> list[str]:
    files = []
    for fmt in FIGURE_FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
        files.append(path.name)
    plt.close(fig)
    return files


# ------------------------------------------------------------------------------------------ figures


def fig_context_ppl(df: pd.DataFrame, notes: list[str]) -> Any:
    sel = df[df["role"] != "ablation"]
    lengths = sorted(sel["train_seq_len"].unique())
    fig, axes = plt.subplots(1, max(1, len(lengths)), figsize=(6.0 * max(1, len(lengths)), 4.2), squeeze=False,
                             layout="constrained")  # room for each panel's legend
    if sel.empty:
        _no_data(axes[0, 0], "no evaluation rows")
        return fig
    families = families_in(sel)
    for ax, T in zip(axes[0], lengths):
        g = sel[sel["train_seq_len"] == T]
        order = g.drop_duplicates("run_id").sort_values(["family", "params_active_nonembedding"])["run_id"]
        for run_id in order:
            r = g[g["run_id"] == run_id].sort_values("context_length")
            st = family_style(families[r["family"].iloc[0]])
            label = f"{r['family'].iloc[0]} {_short(r, 'params_active_nonembedding')}"
            ax.plot(r["context_length"], r["ppl"], color=st["color"], linestyle=st["linestyle"],
                    marker=st["marker"], alpha=0.85, label=label)
            at = r[r["at_train_length"]]
            ax.plot(at["context_length"], at["ppl"], marker="o", mfc="white", color=st["color"], linestyle="none")
        ax.axvline(T, color="#999999", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"trained at {T} tokens")
        ax.set_xlabel("evaluation context length (tokens)")
        ax.set_ylabel("validation perplexity")
        # linear: the claim is about flatness, and a log axis within one decade would carry no tick labels
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8))
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # each panel has its own runs
    return fig


def _short(rows: pd.DataFrame, col: str) -> str:
    v = float(rows[col].iloc[0])
    return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def _headline(claims: Sequence[Claim], claim_id: str) -> dict[str, Any] | None:
    for c in claims:
        if c.id == claim_id:
            return next((d for d in c.details if d.get("headline")), None)
    return None


def _fit_curves(ax: Any, runs: pd.DataFrame, fits: dict[str, FitResult], kind: FitKind, x_of: Callable,
                extra_x: Sequence[float] = ()) -> None:
    families = families_in(runs)
    for family in sorted(runs["family"].unique()):
        g = runs[runs["family"] == family]
        st = family_style(families[family])
        fitted = g["role"].isin(FIT_ROLES) & ~g["diverged"].astype(bool)
        ax.plot(x_of(g[fitted]), g[fitted]["loss_nats"], linestyle="none", marker=st["marker"], color=st["color"],
                label=family)
        if (~fitted).any():  # ablations and other training lengths: shown for reference, never fitted
            roles = "/".join(sorted(set(g[~fitted]["role"])))
            ax.plot(x_of(g[~fitted]), g[~fitted]["loss_nats"], linestyle="none", marker=st["marker"], mfc="none",
                    color=st["color"], alpha=0.8, label=f"{family} {roles} (not fitted)")
        fit = fits.get(fit_key(kind, family))
        if fit is None or not fit.ok:
            continue
        xs_all = [v for v in list(x_of(g)) + list(extra_x) if np.isfinite(v) and v > 0]
        lo, hi = min(xs_all) / 1.3, max(xs_all) * 1.3  # the x range _log_x shows
        grid = np.geomspace(lo, hi, 120)
        ax.plot(grid, predict(fit, None, grid), color=st["color"], linestyle=st["linestyle"], linewidth=1.2,
                label=f"{family} fit ({fit.status.value})")
        samples = fit.sample_params()
        if fit.ci is not None and samples:
            preds = np.array([predict(fit, p, grid) for p in samples])
            q = 50 * (1 - fit.ci_level)
            ax.fill_between(grid, np.percentile(preds, q, axis=0), np.percentile(preds, 100 - q, axis=0),
                            color=st["color"], alpha=0.15, linewidth=0)
    _log_x(ax, list(x_of(runs)) + list(extra_x))
    ax.set_ylabel("validation loss at the training length (nats/token)")


def fig_loss_vs_params(df: pd.DataFrame, fits: dict[str, FitResult], claims: Sequence[Claim],
                       notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    conv = next((ParamConvention(f.param_convention) for f in fits.values()), ParamConvention.ACTIVE_NONEMBEDDING)
    fig, ax = plt.subplots()
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    head = _headline(claims, claim_id("equivalence"))
    extra = [head["x_dense"]] if head and math.isfinite(head["x_dense"]) else []
    _fit_curves(ax, runs, fits, FitKind.PARAMS, lambda g: g[conv.column].astype(float), extra)
    if head:
        y, xr, xd = head["loss"], head["x_run"], head["x_dense"]
        if math.isfinite(xd):
            ax.annotate("", xy=(xd, y), xytext=(xr, y), arrowprops={"arrowstyle": "->", "color": "black"})
            ax.axvline(xd, color="black", linestyle=":", linewidth=0.8)
            label = rf"$N_{{eq}}/N_r$ = {head['value']:.2f}x" + (" (extrapolated)" if head["extrapolated"] else "")
            ax.annotate(label, (math.sqrt(xr * xd), y), xytext=(0, -14), textcoords="offset points",
                        ha="center", fontsize=8)
        else:
            ax.text(xr, y, "no read-off: below the dense asymptote  ", ha="right", va="bottom", fontsize=8)
    else:
        notes.append(f"loss_vs_active_params: no equivalence read-off (claim ({claim_id('equivalence')}) has none)")
    ax.set_xlabel(f"parameters ({conv.value.replace('_', ' ')})")
    ax.legend(fontsize=7)
    return fig


def fig_loss_vs_flops(df: pd.DataFrame, fits: dict[str, FitResult], claims: Sequence[Claim],
                      notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    fig, ax = plt.subplots()
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    flops_fits = [f for f in fits.values() if f.kind == FitKind.FLOPS]
    head = _headline(claims, claim_id("saving"))
    extra = [head["x_dense"]] if head and math.isfinite(head["x_dense"]) else []

    def c_of(g: pd.DataFrame) -> Any:
        if flops_fits and flops_fits[0].flop_convention == "6ND":
            col = ParamConvention(flops_fits[0].param_convention).column
            return 6.0 * g[col].astype(float) * g["train_tokens"].astype(float)
        return g["flops_train_total"].astype(float)

    _fit_curves(ax, runs, fits, FitKind.FLOPS, c_of, extra)
    if head:
        y, xr, xd = head["loss"], head["x_run"], head["x_dense"]
        if math.isfinite(xd):
            ax.annotate("", xy=(xr, y), xytext=(xd, y), arrowprops={"arrowstyle": "->", "color": "black"})
            label = f"FLOPs saving {100 * head['value']:.0f}%" + (" (extrapolated)" if head["extrapolated"] else "")
            ax.annotate(label, (math.sqrt(xr * xd), y), xytext=(0, -14), textcoords="offset points",
                        ha="center", fontsize=8)
        else:
            ax.text(xr, y, "no read-off: below the dense asymptote  ", ha="right", va="bottom", fontsize=8)
    else:
        notes.append(f"loss_vs_flops: no saving read-off (claim ({claim_id('saving')}) has none)")
    conv = flops_fits[0].flop_convention if flops_fits else "train_total"
    ax.set_xlabel(f"training FLOPs ({conv})")
    ax.legend(fontsize=7)
    return fig


def fig_loss_vs_total_params(df: pd.DataFrame, notes: list[str]) -> Any:
    runs = runs_at_train_length(df)
    fig, ax = plt.subplots()
    if runs.empty:
        _no_data(ax, "no runs")
        return fig
    families = families_in(runs)
    for family in sorted(runs["family"].unique()):
        g = runs[runs["family"] == family].sort_values("params_total")
        st = family_style(families[family])
        ax.plot(g["params_total"], g["loss_nats"], color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                label=family)
    _log_x(ax, runs["params_total"].astype(float))
    ax.set_xlabel("total parameters (all experts, with embeddings)")
    ax.set_ylabel("validation loss at the training length (nats/token)")
    ax.legend()
    return fig


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
        path = str(g["metrics_path"].iloc[0])
        if not path:
            notes.append(f"{run_id}: record names no metrics file")
            continue
        if not Path(path).is_file() and (run_id, Path(path).name) in moved:
            path = str(moved[(run_id, Path(path).name)])
        if not Path(path).is_file():
            notes.append(f"{run_id}: metrics file {path} is missing")
            continue
        out[run_id] = RunMetrics(families[str(g["family"].iloc[0])], int(g["num_experts"].iloc[0]),
                                 read_metrics(path))
    return out


def fig_training_curves(metrics: dict[str, RunMetrics], notes: list[str]) -> Any:
    fig, ax = plt.subplots()
    drawn = 0
    for run_id, m in metrics.items():
        family, rows = m.family, m.rows
        st = family_style(family)
        x_key = "tokens" if any("tokens" in r for r in rows) else "step"
        tr = [(r[x_key], r["train/loss"]) for r in rows if x_key in r and isinstance(r.get("train/loss"), (int, float))]
        va = [(r[x_key], r["val/loss"]) for r in rows if x_key in r and isinstance(r.get("val/loss"), (int, float))]
        if tr:
            ax.plot(*zip(*tr), color=st["color"], linestyle=st["linestyle"], alpha=0.6, linewidth=1.0)
            drawn += 1
        if va:
            ax.plot(*zip(*va), color=st["color"], marker="o", linestyle="none", markersize=3)
        if not tr and not va:
            notes.append(f"{run_id}: metrics file has no train/loss or val/loss")
    if not drawn:
        _no_data(ax, "no training metrics found")
        return fig
    handles = [plt.Line2D([], [], color=family_style(f)["color"], linestyle=family_style(f)["linestyle"],
                          label=f.name) for f in sorted({m.family for m in metrics.values()}, key=lambda f: f.name)]
    ax.legend(handles=handles)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
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


def fig_expert_load(metrics: dict[str, RunMetrics], notes: list[str]) -> Any:
    fig, (ax_cv, ax_mm) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    drawn = 0
    for run_id, m in metrics.items():
        load = router_load(m.rows)
        if not load:
            continue
        st = family_style(m.family)
        color = plt.cm.tab10(drawn % 10)
        label = run_id if len(run_id) <= 28 else run_id[:25] + "..."
        if "load_cv" in load:
            layers = sorted(load["load_cv"])
            ax_cv.plot(layers, [load["load_cv"][i] for i in layers], marker=st["marker"], color=color, label=label)
        if "load_max" in load or "load_min" in load:
            for stat, ls in (("load_max", "-"), ("load_min", "--")):
                if stat in load:
                    layers = sorted(load[stat])
                    ax_mm.plot(layers, [load[stat][i] for i in layers], marker=st["marker"], color=color,
                               linestyle=ls, label=f"{label} {stat[5:]}")
            values = [v for stat in ("load_max", "load_min") for v in load.get(stat, {}).values()]
            if m.num_experts > 1 and values and max(values) <= 1.0:  # logged as fractions of tokens
                ax_mm.axhline(1.0 / m.num_experts, color=color, linestyle=":", linewidth=0.8,
                              label=f"uniform 1/{m.num_experts}")
        drawn += 1
    if not drawn:
        _no_data(ax_cv, "no router load metrics\n(dense runs, or none logged)")
        _no_data(ax_mm, "no router load metrics")
        notes.append("expert_load: no run logged router/layer{i}/load_* metrics")
        return fig
    for ax in (ax_cv, ax_mm):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_cv.set_xlabel("layer")
    ax_cv.set_ylabel("load CV (tokens per expert)")
    ax_mm.set_xlabel("layer")
    ax_mm.set_ylabel("max / min expert load (as logged)")
    ax_cv.legend(fontsize=6)
    ax_mm.legend(fontsize=6)
    return fig


# ------------------------------------------------------------------------------------------ all


def make_figures(df: pd.DataFrame, fits: dict[str, FitResult], claims: Sequence[Claim], out_dir: str | Path,
                 records_dir: str | Path | None = None) -> dict:
    """Write every figure (PNG + PDF) and ``figures.json``; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"schema": "analysis.figures/1", "figures": {}}
    metric_notes: list[str] = []
    metrics = _load_all_metrics(df, metric_notes, records_dir)
    builders: dict[str, Callable[[list[str]], Any]] = {
        "context_ppl": lambda n: fig_context_ppl(df, n),
        "loss_vs_active_params": lambda n: fig_loss_vs_params(df, fits, claims, n),
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
