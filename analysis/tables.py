"""Tables as CSV, Markdown and LaTeX: per-run results, fit parameters with intervals, pooled fits, claims vs the
paper with the prediction at the paper's scale, downstream accuracy with standard errors and chance levels.

Each table is built once as a list of rows (``Table``) and rendered three ways, so the three formats always
agree. CSV keeps full precision for numbers (an estimate with a standard error becomes two columns, the
second named ``<column> s.e.``); Markdown and LaTeX show 4 significant digits. LaTeX goes through pandas'
``Styler.to_latex`` with booktabs rules and escaped symbols (``% _ & # $ { } ~ ^ \\``).

Intervals: a column holds intervals of one convention only, and its header says which ("95% CI: percentile
bootstrap over runs", "95% CI: envelope of run and noise bootstraps", "range over runs"); rows computed
another way get their own column (``interval_columns``).
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
from analysis.claims.downstream import CHANCE_LEVELS, DOWNSTREAM_COLUMNS, downstream_table
from analysis.collect import DENSE_EXPERTIZATION, runs_at_train_length
from analysis.families import families_in
from analysis.fit import FitResult
from analysis.lr_check import lr_check_rows
from analysis.noise import NoiseEstimate, config_key, config_leaves, estimate_noise
from analysis.outputs import TABLE_FORMATS, TABLES
from analysis.pooled import PooledFit
from analysis.prediction import Prediction

TABLE_NAMES = tuple(TABLES)  # names and captions: analysis.outputs.TABLES
FORMATS = TABLE_FORMATS


@dataclass(frozen=True)
class Est:
    """An estimate with its standard error (a table cell: "0.2565 ± 0.0044"; two CSV columns)."""

    value: float | None
    se: float | None


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # raw values; formatted per output


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, Est):
        if value.value is None or (isinstance(value.value, float) and math.isnan(value.value)):
            return "—"
        return fmt(value.value, digits) + ("" if value.se is None or math.isnan(value.se)
                                           else f" ± {fmt(value.se, 2)}")
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
    est_cols = {j for j in range(len(t.columns)) if any(isinstance(r[j], Est) for r in t.rows)}
    header: list[str] = []
    for j, c in enumerate(t.columns):
        header += [c, f"{c} s.e."] if j in est_cols else [c]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in t.rows:
        cells: list[str] = []
        for j, v in enumerate(row):
            if j in est_cols:
                e = v if isinstance(v, Est) else Est(v, None)
                cells += [_raw(e.value), _raw(e.se)]
            else:
                cells.append(_raw(v))
        w.writerow(cells)
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
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# Characters the tables print that LaTeX's default input encoding may lack (applied after escaping: the
# escapes never produce them, and these replacements are meant to be LaTeX).
_LATEX_UNICODE = {"∞": r"$\infty$", "—": "--", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "±": r"$\pm$",
                  "→": r"$\rightarrow$", "≈": r"$\approx$", "−": "-"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and write the few non-ASCII symbols the tables use as LaTeX."""
    return "".join(_LATEX_UNICODE.get(ch, _LATEX_ESCAPES.get(ch, ch)) for ch in text)


def to_latex(t: Table) -> str:
    """A ``table`` float with booktabs rules through ``pandas.io.formats.style.Styler.to_latex``."""
    frame = pd.DataFrame([[fmt(v) for v in row] for row in t.rows] or [["—"] * len(t.columns)],
                         columns=list(t.columns))
    # Duplicate or empty headers would confuse the Styler; the columns of a Table are unique by construction.
    styler = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    out = styler.to_latex(hrules=True, column_format="l" * len(t.columns), position="ht",
                          position_float="centering", caption=latex_escape(t.caption), label=f"tab:{t.name}")
    body_start = out.index(r"\begin{tabular}")
    head, body = out[:body_start], out[body_start:]
    for ch, tex in _LATEX_UNICODE.items():
        body = body.replace(ch, tex)
    return head + r"\small" + "\n" + body


def interval_label(level: float | None, method: str) -> str:
    """A column header for intervals of one convention, e.g. "95% CI: percentile bootstrap over runs"."""
    return (f"{100 * level:.0f}% CI: {method}" if level is not None else method)


def interval_columns(cells: Sequence[tuple[str, tuple[float, float] | None]]) -> tuple[list[str], list[list[Any]]]:
    """Spread (convention, interval) cells over one column per convention (first-seen order), so that no column
    mixes conventions. Returns the headers and, per input row, its cells (None outside its own column)."""
    headers: list[str] = []
    for label, iv in cells:
        if iv is not None and label and label not in headers:
            headers.append(label)
    rows = [[(tuple(iv) if iv is not None and label == h else None) for h in headers] for label, iv in cells]
    return headers, rows


# --------------------------------------------------------------------------------------- the tables


def runs_table(df: pd.DataFrame) -> Table:
    runs = runs_at_train_length(df)
    cols = ("run", "run id", "family", "role", "params active non-emb", "params total", "train tokens", "train FLOPs",
            "seq len", "passes", "val loss (nats)", "val ppl", "bpb", "train wall (s)", "tokens/s", "diverged")
    rows = tuple((r.name, r.run_id, r.family, r.role, int(r.params_active_nonembedding), int(r.params_total),
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
    """One row per parameter of every per-family fit; the interval column says its convention."""
    cells, base = [], []
    for f in fits:
        conv = f"N={f.param_convention}, C={f.flop_convention}"
        xr = "; ".join(f"{k} {fmt(v[0])}..{fmt(v[1])}" for k, v in f.x_range.items())
        label = interval_label(f.ci_level, "percentile bootstrap over runs")
        if f.params is None:
            base.append((f.key, f.form, f.status.value, "—", None, f.n_points, f.dof, xr, conv, f.message))
            cells.append((label, None))
            continue
        for name in f.param_names:
            ci = f.ci.get(name) if f.ci else None
            base.append((f.key, f.form, f.status.value, name + (" (fixed)" if name in f.fixed else ""),
                         f.params[name], f.n_points, f.dof, xr, conv, f.message + ("" if f.ci else f"; {f.ci_note}")))
            cells.append((label, ci))
    headers, ivs = interval_columns(cells)
    cols = ("fit", "form", "status", "parameter", "value", *headers, "n points", "dof", "x range", "conventions",
            "message")
    rows = tuple((*b[:5], *iv, *b[5:]) for b, iv in zip(base, ivs))
    return Table("fits", TABLES["fits"], cols, rows)


def _noise_text(f: PooledFit) -> str:
    parts = []
    for fam, n in sorted((k, v) for k, v in f.noise.items() if k in (f.dense_family, f.rom_family)):
        if n.dof > 0 and math.isfinite(n.sigma_nats):
            parts.append(f"{fam}: {n.sigma_nats:.2g} nats ({n.source}, dof {n.dof})")
        else:
            parts.append(f"{fam}: none")
    return "; ".join(parts)


def pooled_table(pooled: Sequence[PooledFit]) -> Table:
    """Pooled dense + RoM fits: parameters, then the derived ratio / saving / slope, with their intervals (the
    headline envelope and each bootstrap's in their own columns)."""
    cells: list[tuple[str, tuple[float, float] | None]] = []
    runs_cells, noise_cells, base = [], [], []
    for f in pooled:
        label = interval_label(f.ci_level, "envelope of run and noise bootstraps")
        common = (f.n_points, f.n_units, f.dof, _noise_text(f), f.message)
        if f.params is None:
            base.append((f.key, f.status.value, "—", None, *common))
            cells.append((label, None)), runs_cells.append((label, None)), noise_cells.append((label, None))
            continue
        for name in f.param_names:
            ci = f.ci.get(name) if f.ci else None
            base.append((f.key, f.status.value, name + (" (fixed)" if name in f.fixed else ""), f.params[name],
                         *common))
            cells.append((label, ci))
            runs_cells.append(("", None))
            noise_cells.append(("", None))
        for d in f.derived:
            at = "" if d.at is None or not math.isfinite(d.at) else f" at x = {fmt(d.at)}"
            base.append((f.key, f.status.value, f"{d.name}{at}", d.value, *common))
            iv = d.interval
            cells.append((interval_label(iv.level, iv.method) if iv else label, (iv.lo, iv.hi) if iv else None))
            by = {i.method: i for i in d.intervals if i is not None}
            r, n = by.get("runs bootstrap") or by.get("run bootstrap"), by.get("noise bootstrap")
            runs_cells.append((interval_label(r.level, "run bootstrap") if r else "", (r.lo, r.hi) if r else None))
            noise_cells.append((interval_label(n.level, "noise bootstrap") if n else "", (n.lo, n.hi) if n else None))
    h1, iv1 = interval_columns(cells)
    h2, iv2 = interval_columns(runs_cells)
    h3, iv3 = interval_columns(noise_cells)
    cols = ("fit", "status", "parameter or read-off", "value", *h1, *h2, *h3, "points", "runs", "dof",
            "seed noise (std of the loss)", "message")
    rows = tuple((*b[:4], *a, *r, *n, *b[4:]) for b, a, r, n in zip(base, iv1, iv2, iv3))
    return Table("pooled", TABLES["pooled"], cols, rows)


def _prediction(c: Claim) -> Prediction | None:
    return None if not c.prediction else Prediction.from_dict(c.prediction)


def claims_table(claims: Sequence[Claim]) -> Table:
    """Paper against ours, one interval column per convention, the prediction at the paper's scale."""
    cells = [(c.ci_label, c.ci) for c in claims]
    headers, ivs = interval_columns(cells)
    preds = [_prediction(c) for c in claims]
    scale = next((p.n_active for p in preds if p is not None), None)
    p_cells = [((interval_label(p.level, "envelope of run and noise bootstraps" if "envelope" in p.method
                                 else "bootstrap") + f" of the read-off at {_count(p.n_active)}"),
                p.interval) if p is not None else ("", None) for p in preds]
    p_headers, p_ivs = interval_columns(p_cells)
    pred_col = f"predicted at {_count(scale)} active" if scale else "predicted at the paper's scale"
    cols = ("claim", "paper", "ours", *headers, "verdict", "extrapolated", "headline", pred_col, *p_headers,
            "reason")
    rows = tuple((f"({c.id}) {c.title}", c.paper_text, c.ours, *iv, c.verdict.value, c.extrapolated, c.headline,
                  None if p is None else p.value, *piv, c.reason)
                 for c, iv, p, piv in zip(claims, ivs, preds, p_ivs))
    return Table("claims", TABLES["claims"], cols, rows)


def _count(v: float | None) -> str:
    if v is None:
        return "—"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:g}"


def downstream_results_table(df: pd.DataFrame) -> Table:
    """Scores ± lm-eval's standard error per task in the paper's column order, the chance level as the first
    row; the average's standard error treats the tasks as independent (sqrt(sum s.e.^2) / n)."""
    runs = runs_at_train_length(df)
    table = downstream_table(runs)
    titles = [t for _, _, t in DOWNSTREAM_COLUMNS]
    cols = ("run", "family", "params active non-emb", *titles, "Average", "partial")
    chance = [CHANCE_LEVELS.get(task) for task, _, _ in DOWNSTREAM_COLUMNS]
    known = [c for c in chance if c is not None]
    rows: list[tuple[Any, ...]] = [("chance level", "—", None, *[Est(c, None) if c is not None else None
                                                                 for c in chance],
                                    Est(sum(known) / len(known), None) if known else None, False)]
    by_run = runs.set_index("run_id")
    for _, r in table.iterrows():
        src = by_run.loc[r["run_id"]]
        ests, ses = [], []
        for task, metric, title in DOWNSTREAM_COLUMNS:
            value = None if pd.isna(r[title]) else float(r[title])
            se_col = f"downstream.{task}.{metric}_stderr"
            se = float(src[se_col]) if se_col in src.index and not pd.isna(src[se_col]) else None
            ests.append(Est(value, se))
            if value is not None:
                ses.append(se)
        avg = None if pd.isna(r["Average"]) else float(r["Average"])
        avg_se = (math.sqrt(sum(s * s for s in ses)) / len(ses)) if ses and all(s is not None for s in ses) else None
        rows.append((r["run_id"] if "name" not in src.index else src["name"], r["family"],
                     int(r["params_active_nonembedding"]), *ests, Est(avg, avg_se), bool(r["partial"])))
    return Table("downstream", TABLES["downstream"], cols, tuple(rows))


def ablations_table(df: pd.DataFrame) -> Table:
    """Each ablation and seed run against its reference: the scaling run of the same family, width, depth,
    training length and token budget whose configuration differs least from it (so a hybrid seed is compared
    with the hybrid of its own Mamba width). The noise scale is the standard deviation over the reference and
    its seed replicates (runs whose configuration equals the reference's but for the seed). Runs at another
    token budget than every scaling run of their shape (the learning-rate check) are in the lr_check table."""
    runs = runs_at_train_length(df)
    shape = ["family", "d_model", "n_layer", "train_seq_len", "train_tokens"]
    cols = ("run", "role", "family", "experts", "top-k", "params active non-emb", "val loss (nats)", "reference",
            "reference loss", "difference", "seed std", "difference / seed std")
    has_config = "config_json" in runs.columns
    keys = {r.run_id: config_key(r.config_json) for r in runs.itertuples()} if has_config else {}
    rows = []
    for r in runs[runs["role"].isin(["ablation", "seed"])].itertuples():
        same = runs
        for col in shape:
            same = same[same[col] == getattr(r, col)]
        ref = same[same["role"] == "scaling"]
        if ref.empty and not runs[(runs["role"] == "scaling") & (runs["family"] == r.family)
                                  & (runs["d_model"] == r.d_model) & (runs["n_layer"] == r.n_layer)].empty:
            continue  # same shape at another budget: a learning-rate check run (lr_check table)
        comparison: tuple = (None,) * 5  # reference, its loss, difference, seed std, difference / std
        if not ref.empty:
            if has_config and len(ref) > 1:
                mine = config_leaves(r.config_json)
                distance = [sum(mine.get(k) != v for k, v in config_leaves(c).items()) for c in ref["config_json"]]
                ref = ref.iloc[[int(pd.Series(distance).idxmin())]]
            ref_loss = float(ref["loss_nats"].iloc[0])
            if has_config:
                ref_key = keys[ref["run_id"].iloc[0]]
                replicates = same[same["role"].isin(["scaling", "seed"])
                                  & same["run_id"].map(keys).eq(ref_key)]["loss_nats"].astype(float)
            else:
                replicates = same[same["role"].isin(["scaling", "seed"])]["loss_nats"].astype(float)
            std = float(replicates.std(ddof=1)) if len(replicates) >= 2 else None
            diff = float(r.loss_nats) - ref_loss
            comparison = (ref["name"].iloc[0], ref_loss, diff, std, diff / std if std else None)
        rows.append((r.name, r.role, r.family, int(r.num_experts), int(r.top_k),
                     int(r.params_active_nonembedding), float(r.loss_nats), *comparison))
    return Table("ablations", TABLES["ablations"], cols, tuple(rows))


EXPERTIZATION_KINDS = (DENSE_EXPERTIZATION, "selective", "comprehensive")  # the table's columns, in order
# (a, b) pairs of the table's differences a - b
EXPERTIZATION_DIFFS = (("selective", DENSE_EXPERTIZATION), ("comprehensive", DENSE_EXPERTIZATION),
                       ("comprehensive", "selective"))
NO_EXPERTIZATION_RUNS = "no such runs in this study"
# Config fields in which the runs of one comparison may differ (besides name, role and seed): the layer pattern
# and the RoM settings are what the table compares.
_EXPERTIZATION_FREE = (("model", "pattern"), ("model", "hybrid_ssm"), ("model", "rom"))


@dataclass(frozen=True)
class KindRuns:
    """The seed replicates of one expertization at one model shape (one row of ``expertization_table``)."""

    kind: str  # a value of EXPERTIZATION_KINDS
    family: str
    names: tuple[str, ...]  # every replicate, diverged ones included
    params_active: int
    params_total: int
    losses: tuple[float, ...]  # validation losses at the training length of the replicates that did not diverge
    noise: NoiseEstimate  # the family's seed noise (analysis.noise)

    @property
    def mean(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over the seeds (None with fewer than two)."""
        n = len(self.losses)
        if n < 2:
            return None
        m = sum(self.losses) / n
        return math.sqrt(sum((x - m) ** 2 for x in self.losses) / (n - 1))


@dataclass(frozen=True)
class ExpertizationRow:
    architecture: str  # the dense family of the shape (e.g. mamba2, hybrid-gated-deltanet)
    d_model: int
    n_layer: int
    train_seq_len: int
    train_tokens: int
    kinds: dict[str, KindRuns]  # the kinds present (at least two)
    note: str

    def diff(self, a: str, b: str) -> Est | None:
        """Mean loss of ``a`` minus that of ``b``, ± the seed noise of that difference: sqrt(s_a^2 / n_a +
        s_b^2 / n_b) with each family's seed s.d. (None where either kind is absent or has no finite loss)."""
        ka, kb = self.kinds.get(a), self.kinds.get(b)
        if ka is None or kb is None or ka.mean is None or kb.mean is None:
            return None
        sa, sb = ka.noise.sigma_nats, kb.noise.sigma_nats
        known = ka.noise.dof > 0 and kb.noise.dof > 0 and math.isfinite(sa) and math.isfinite(sb)
        se = math.sqrt(sa * sa / len(ka.losses) + sb * sb / len(kb.losses)) if known else None
        return Est(ka.mean - kb.mean, se)


def _setting_key(config_json: str) -> str:
    """The run's configuration without name, role, seed and the fields in ``_EXPERTIZATION_FREE``: equal keys
    are runs of one comparison (same shape, data, budget, schedule)."""
    return config_key(config_json, _EXPERTIZATION_FREE)


def expertization_rows(df: pd.DataFrame) -> list[ExpertizationRow]:
    """One row per model shape with runs of more than one of dense / selective / comprehensive RoM.

    A shape is the dense family (architecture, pattern, MLPs), width, depth and the rest of the configuration
    but the layer pattern and the RoM settings (``_setting_key``: training length, budget, rate, ...). Within a
    shape each expertization's runs are grouped into seed replicates (``analysis.noise.config_key``); where one
    expertization has several configurations (an ablation of another setting), the group holding a scaling run
    is compared (else the largest) and the note names the others. RoM runs with a custom projection list are not
    compared (the note names them). Losses: validation loss at the training length; diverged runs are left out
    of the mean and named in the note."""
    runs = runs_at_train_length(df)
    if runs.empty or "expertization" not in runs.columns:
        return []
    fams = families_in(runs)
    noise = estimate_noise(df)
    runs = runs.assign(_arch=[fams[f].dense_counterpart().name for f in runs["family"]],
                       _setting=[_setting_key(c) for c in runs["config_json"]],
                       _replicate=[config_key(c) for c in runs["config_json"]])
    out = []
    for (arch, d_model, n_layer, seq_len, tokens, _), shape in runs.groupby(
            ["_arch", "d_model", "n_layer", "train_seq_len", "train_tokens", "_setting"], sort=True):
        kinds: dict[str, KindRuns] = {}
        notes = []
        for kind in EXPERTIZATION_KINDS:
            mine = shape[shape["expertization"] == kind]
            if mine.empty:
                continue
            groups = [g.sort_values("name") for _, g in mine.groupby("_replicate", sort=True)]
            groups.sort(key=lambda g: (not (g["role"] == "scaling").any(), -len(g), str(g["name"].iloc[0])))
            chosen, others = groups[0], groups[1:]
            if others:
                notes.append(f"{kind}: other configurations not compared: "
                             + ", ".join(n for g in others for n in g["name"].astype(str)))
            ok = chosen[~chosen["diverged"].astype(bool) & chosen["loss_nats"].astype(float).map(math.isfinite)]
            bad = sorted(set(chosen["name"].astype(str)) - set(ok["name"].astype(str)))
            if bad:
                notes.append(f"{kind}: diverged or without a loss, left out: {', '.join(bad)}")
            family = str(chosen["family"].iloc[0])
            kinds[kind] = KindRuns(kind, family, tuple(chosen["name"].astype(str)),
                                   int(chosen["params_active"].iloc[0]), int(chosen["params_total"].iloc[0]),
                                   tuple(float(x) for x in ok["loss_nats"]),
                                   noise.get(family, NoiseEstimate.none(family)))
        if len(kinds) < 2:
            continue
        custom = sorted(shape.loc[~shape["expertization"].isin(EXPERTIZATION_KINDS), "name"].astype(str))
        if custom:
            notes.append(f"custom expert projections, not compared: {', '.join(custom)}")
        out.append(ExpertizationRow(str(arch), int(d_model), int(n_layer), int(seq_len), int(tokens), kinds,
                                    "; ".join(notes)))
    out.sort(key=lambda r: (r.architecture, r.d_model, r.n_layer, r.train_seq_len, r.train_tokens))
    return out


def _noise_words(row: ExpertizationRow) -> str:
    seen: dict[str, NoiseEstimate] = {}
    for k in row.kinds.values():
        seen.setdefault(k.family, k.noise)
    parts = []
    for fam, n in sorted(seen.items()):
        parts.append(f"{fam}: {n.sigma_nats:.2g} nats ({n.source}, dof {n.dof})"
                     if n.dof > 0 and math.isfinite(n.sigma_nats) else f"{fam}: none")
    return "; ".join(parts)


def expertization_table(df: pd.DataFrame, rows: Sequence[ExpertizationRow] | None = None) -> Table:
    """Dense vs selective vs comprehensive RoM per model shape (``expertization_rows``): parameters, the mean
    validation loss over seed replicates with their s.d. and count, and the differences of the means ± the seed
    noise of each difference. Without such runs: one row saying so (the file is one of the fixed outputs)."""
    rows = expertization_rows(df) if rows is None else rows
    per_kind = tuple(c for k in EXPERTIZATION_KINDS for c in (
        f"{k} active params", f"{k} total params", f"{k} val loss (nats, mean over seeds)", f"{k} seed s.d.",
        f"{k} seeds"))
    diffs = tuple(f"{a} − {b} (nats)" for a, b in EXPERTIZATION_DIFFS)
    cols = ("architecture", "shape", "train tokens", *per_kind, *diffs, "beyond 2x the seed noise",
            "seed noise (std of the loss)", "runs", "note")
    caption = TABLES["expertization"]
    if not rows:
        empty = (NO_EXPERTIZATION_RUNS, *(None,) * (len(cols) - 2),
                 "no model shape has runs of more than one of dense / selective / comprehensive RoM (RoM runs with "
                 "a custom projection list are not compared)")
        return Table("expertization", caption + f" ({NO_EXPERTIZATION_RUNS})", cols, (empty,))
    body = []
    for r in rows:
        cells: list[Any] = []
        for kind in EXPERTIZATION_KINDS:
            k = r.kinds.get(kind)
            cells += ([None] * 5 if k is None else [k.params_active, k.params_total, k.mean, k.sd, len(k.losses)])
        ests = [r.diff(a, b) for a, b in EXPERTIZATION_DIFFS]
        beyond = [f"{a} − {b}" for (a, b), e in zip(EXPERTIZATION_DIFFS, ests)
                  if e is not None and e.se is not None and e.se > 0 and abs(e.value) > 2 * e.se]
        known = [e for e in ests if e is not None and e.se is not None and e.se > 0]
        names = "; ".join(f"{k}: {', '.join(v.names)}" for k, v in r.kinds.items())
        body.append((r.architecture, f"d_model {r.d_model}, {r.n_layer} layers, seq {r.train_seq_len}",
                     r.train_tokens, *cells, *ests,
                     (", ".join(beyond) or "none") if known else "no seed noise estimate",
                     _noise_words(r), names, r.note))
    return Table("expertization", caption, cols, tuple(body))


def all_tables(df: pd.DataFrame, fits: Sequence[FitResult], claims: Sequence[Claim],
               pooled: Sequence[PooledFit] = ()) -> list[Table]:
    """Every table of ``analysis.outputs.TABLES``, in that order."""
    builders = {"runs": lambda: runs_table(df), "fits": lambda: fits_table(fits),
                "pooled": lambda: pooled_table(pooled),
                "claims": lambda: claims_table(claims), "downstream": lambda: downstream_results_table(df),
                "ablations": lambda: ablations_table(df), "lr_check": lambda: Table("lr_check", *lr_check_rows(df)),
                "expertization": lambda: expertization_table(df)}
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
