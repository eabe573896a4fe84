"""Tables as CSV, Markdown and LaTeX: per-run results, fit parameters with CIs, claims vs the paper,
downstream accuracy in the paper's column order.

Each table is built once as a list of string-valued rows (``Table``) and rendered three ways, so the three
formats always agree. CSV keeps full precision for numbers; Markdown and LaTeX show 4 significant digits.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.errors import AnalysisError
from rom.io import atomic_write_text as write_text
from analysis.claims import Claim
from analysis.claims.downstream import DOWNSTREAM_COLUMNS, downstream_table
from analysis.collect import runs_at_train_length
from analysis.fit import FitResult
from analysis.outputs import TABLE_FORMATS, TABLES

TABLE_NAMES = tuple(TABLES)  # names and captions: analysis.outputs.TABLES
FORMATS = TABLE_FORMATS


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # raw values; formatted per output


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, tuple) and len(value) == 2:
        return f"[{fmt(value[0], digits)}, {fmt(value[1], digits)}]"
    return str(value)


def _raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ";".join(_raw(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.columns)
    for row in t.rows:
        w.writerow([_raw(v) for v in row])
    return buf.getvalue()


def to_markdown(t: Table) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = [f"**{t.caption}**", "", "| " + " | ".join(t.columns) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.rows]
    if not t.rows:
        lines.append("| " + " | ".join("—" for _ in t.columns) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "∞": r"$\infty$", "—": "--", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(t: Table) -> str:
    lines = [r"\begin{table}[ht]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(t.columns) + "}", r"\hline",
             " & ".join(latex_escape(c) for c in t.columns) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(fmt(v)) for v in row) + r" \\" for row in t.rows]
    lines += [r"\hline", r"\end{tabular}", r"\caption{" + latex_escape(t.caption) + "}",
              r"\label{tab:" + t.name + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- the tables


def runs_table(df: pd.DataFrame) -> Table:
    runs = runs_at_train_length(df)
    cols = ("run", "family", "role", "params active non-emb", "params total", "train tokens", "train FLOPs",
            "seq len", "passes", "val loss (nats)", "val ppl", "bpb", "train wall (s)", "tokens/s", "diverged")
    rows = tuple((r.run_id, r.family, r.role, int(r.params_active_nonembedding), int(r.params_total),
                  int(r.train_tokens), float(r.flops_train_total), int(r.train_seq_len), float(r.train_passes),
                  float(r.loss_nats), float(r.ppl), float(r.bpb), float(r.wall_time_s), float(r.tokens_per_s),
                  bool(r.diverged))
                 for r in runs.itertuples())
    missing = sorted(set(df["run_id"]) - set(runs["run_id"]))
    caption = TABLES["runs"]
    if missing:
        caption += f" (runs without an evaluation at their training length: {', '.join(missing)})"
    return Table("runs", caption, cols, rows)


def fits_table(fits: Sequence[FitResult]) -> Table:
    cols = ("fit", "form", "status", "parameter", "value", "CI", "n points", "dof", "x range", "conventions",
            "message")
    rows = []
    for f in fits:
        conv = f"N={f.param_convention}, C={f.flop_convention}"
        xr = "; ".join(f"{k} {fmt(v[0])}..{fmt(v[1])}" for k, v in f.x_range.items())
        if f.params is None:
            rows.append((f.key, f.form, f.status.value, "—", None, None, f.n_points, f.dof, xr, conv, f.message))
            continue
        for name in f.param_names:
            ci = f.ci.get(name) if f.ci else None
            value_note = "fixed" if name in f.fixed else None
            rows.append((f.key, f.form, f.status.value, name + (" (fixed)" if value_note else ""),
                         f.params[name], ci, f.n_points, f.dof, xr, conv,
                         f.message + ("" if f.ci else f"; {f.ci_note}")))
    return Table("fits", TABLES["fits"], cols, tuple(rows))


def claims_table(claims: Sequence[Claim]) -> Table:
    cols = ("claim", "paper", "ours", "interval", "verdict", "extrapolated", "headline", "reason")
    rows = tuple((f"({c.id}) {c.title}", c.paper_text, c.ours, c.ci, c.verdict.value, c.extrapolated,
                  c.headline, c.reason) for c in claims)
    return Table("claims", TABLES["claims"], cols, rows)


def downstream_results_table(df: pd.DataFrame) -> Table:
    table = downstream_table(runs_at_train_length(df))
    titles = [t for _, _, t in DOWNSTREAM_COLUMNS]
    cols = ("run", "family", "params active non-emb", *titles, "Average", "partial")
    rows = tuple((r["run_id"], r["family"], int(r["params_active_nonembedding"]),
                  *[None if pd.isna(r[t]) else float(r[t]) for t in titles],
                  None if pd.isna(r["Average"]) else float(r["Average"]), bool(r["partial"]))
                 for _, r in table.iterrows())
    return Table("downstream", TABLES["downstream"], cols, rows)


def ablations_table(df: pd.DataFrame) -> Table:
    """Each ablation and seed run against its reference: the scaling run of the same family, width, depth and
    training length. The noise scale is the standard deviation over the reference and its seed replicates."""
    runs = runs_at_train_length(df)
    shape = ["family", "d_model", "n_layer", "train_seq_len"]
    cols = ("run", "role", "family", "experts", "top-k", "params active non-emb", "val loss (nats)", "reference",
            "reference loss", "difference", "seed std", "difference / seed std")
    rows = []
    for r in runs[runs["role"].isin(["ablation", "seed"])].itertuples():
        same = runs
        for col in shape:
            same = same[same[col] == getattr(r, col)]
        ref = same[same["role"] == "scaling"]
        comparison: tuple = (None,) * 5  # reference, its loss, difference, seed std, difference / std
        if not ref.empty:
            ref_loss = float(ref["loss_nats"].iloc[0])
            replicates = same[same["role"].isin(["scaling", "seed"])]["loss_nats"].astype(float)
            std = float(replicates.std(ddof=1)) if len(replicates) >= 2 else None
            diff = float(r.loss_nats) - ref_loss
            comparison = (ref["run_id"].iloc[0], ref_loss, diff, std, diff / std if std else None)
        rows.append((r.run_id, r.role, r.family, int(r.num_experts), int(r.top_k),
                     int(r.params_active_nonembedding), float(r.loss_nats), *comparison))
    return Table("ablations", TABLES["ablations"], cols, tuple(rows))


def all_tables(df: pd.DataFrame, fits: Sequence[FitResult], claims: Sequence[Claim]) -> list[Table]:
    """Every table of ``analysis.outputs.TABLES``, in that order."""
    builders = {"runs": lambda: runs_table(df), "fits": lambda: fits_table(fits),
                "claims": lambda: claims_table(claims), "downstream": lambda: downstream_results_table(df),
                "ablations": lambda: ablations_table(df)}
    if set(builders) != set(TABLES):
        raise AnalysisError(f"table builders {sorted(builders)} do not match analysis.outputs.TABLES "
                            f"{sorted(TABLES)}: each listed table needs exactly one builder")
    return [builders[name]() for name in TABLES]


def write_tables(tables: Sequence[Table], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for t in tables:
        for ext, render in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex)):
            path = out_dir / f"{t.name}.{ext}"
            write_text(path, render(t))
            written.append(path)
    return written
