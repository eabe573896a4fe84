"""The study report: one self-contained HTML file (CSS inline, PNGs base64-embedded) and a Markdown twin.

Sections: summary, claims with verdicts and the verdict rules, figures with captions, fit diagnostics
(status, parameters, CIs, points, residuals), per-run table, downstream table, ablations, dense vs selective vs
comprehensive RoM (studies with such runs only), provenance (git SHAs,
configs, package versions, hardware: all read from the records via the collected table).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.collect import main_rows
from analysis.errors import AnalysisError, read_json
from rom.io import atomic_write_text as write_text
from analysis.claims import Claim, Verdict, report_sections
from analysis.fit import FitResult
from analysis.outputs import FIGURES_MANIFEST
from analysis.pooled import PooledFit
from analysis.prediction import Prediction
from analysis.tables import (Table, ablations_table, claims_table, downstream_results_table, expertization_rows,
                             expertization_table, fmt, interval_columns, interval_label, pooled_table, runs_table)

# Packages that shape the analysis' numbers, figures and tables (and the pipeline that ran it), reported with the
# versions installed where the analysis ran; the runs' own packages (torch, triton, ...) come from the records.
ANALYSIS_PACKAGES = ("numpy", "pandas", "scipy", "matplotlib", "jinja2", "threadpoolctl", "snakemake", "lm_eval",
                     "torch", "triton", "tokenizers")

VERDICT_CLASS = {Verdict.SUPPORTED: "ok", Verdict.NOT_SUPPORTED: "bad", Verdict.INCONCLUSIVE: "meh"}
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #333;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
.verdict{font-weight:bold;padding:.1em .4em;border-radius:3px;white-space:nowrap}
.ok{background:#d4edda;color:#155724}.bad{background:#f8d7da;color:#721c24}.meh{background:#fff3cd;color:#856404}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
.note{font-size:.85em;color:#8a5a00}code,pre{background:#f5f5f5;font-size:.85em}pre{padding:.5em;overflow-x:auto}
.summary li{margin:.2em 0}.toc ul{list-style:none;padding-left:0}.toc li.toc3{padding-left:1.5em;font-size:.9em}
"""


def _html_table(t: Table, raw_html: dict[tuple[int, int], str] | None = None) -> str:
    raw_html = raw_html or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(f"<td>{raw_html.get((i, j), html.escape(fmt(v)))}</td>" for j, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not t.rows:
        body.append(f"<tr><td colspan='{len(t.columns)}'>no rows</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    if not rows:
        out.append("| " + " | ".join("—" for _ in columns) + " |")
    return "\n".join(out)


def _eval_devices(df: pd.DataFrame) -> dict[str, list[str]]:
    """{device: run ids} of the runs' own evaluations (cooldown branches, scored by the trainer, left out)."""
    runs = main_rows(df).drop_duplicates("run_id")
    return {str(dev): sorted(g["run_id"].astype(str)) for dev, g in runs.groupby(runs["eval_device"].astype(str))}


def _eval_devices_text(by_device: dict[str, list[str]]) -> str:
    """'cuda (37 runs)', or with several devices every device but the most used one with its runs named."""
    if not by_device:
        return "none"
    common = max(by_device, key=lambda d: len(by_device[d]))
    parts = [f"{d or 'not recorded'} ({len(ids)} run{'s' if len(ids) != 1 else ''}"
             + ("" if d == common else ": " + ", ".join(ids)) + ")" for d, ids in sorted(by_device.items())]
    return "; ".join(parts)


def _provenance(df: pd.DataFrame) -> dict[str, Any]:
    runs = df.drop_duplicates("run_id")
    packages: dict[str, set[str]] = defaultdict(set)
    for blob in runs["packages_json"]:
        try:
            for name, version in json.loads(blob).items():
                packages[name].add(str(version))
        except (TypeError, json.JSONDecodeError):
            continue
    return {
        "git_sha": sorted(set(runs["git_sha"].astype(str))),
        "devices": sorted(set(runs["device"].astype(str))),
        "eval_devices": _eval_devices(df),
        "hardware": sorted(set(runs["hardware"].astype(str))),
        "python": sorted(set(runs["python"].astype(str))),
        "packages": {k: sorted(v) for k, v in sorted(packages.items())},
        "configs": [(r.run_id, r.config_hash, r.config_json) for r in runs.itertuples()],
        "created": sorted(set(runs["created"].astype(str))),
    }


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def analysis_provenance() -> dict[str, Any]:
    """Where and when the analysis ran: the commit of the analysis code (its git working tree, with a note when
    it has uncommitted changes; "unknown" outside a git checkout), the UTC time (``SOURCE_DATE_EPOCH`` when set,
    for reproducible builds) and the versions of ``ANALYSIS_PACKAGES`` installed here. Only the report shows
    these; claims.json does not carry them (CI compares claims across regenerations)."""
    code_dir = Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], code_dir)
    if sha:
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], code_dir)
        commit = sha + (" (with uncommitted changes)" if dirty else "")
    else:
        commit = "unknown (the analysis code is not in a git checkout)"
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.timezone.utc))
    return {"commit": commit, "generated": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "packages": {name: _package_version(name) for name in ANALYSIS_PACKAGES}}


def _fit_rows(f: FitResult) -> list[tuple[Any, ...]]:
    rows = []
    for name in f.param_names:
        value = f.params.get(name) if f.params else None
        ci = f.ci.get(name) if f.ci else None
        rows.append((name + (" (fixed)" if name in f.fixed else ""), value, ci))
    return rows


def _residual_rows(f: FitResult) -> list[tuple[Any, ...]]:
    return [(p.run_id, ", ".join(fmt(x) for x in p.x), p.loss, p.pred, p.log_residual) for p in f.points]


def _summary(df: pd.DataFrame, fits: Sequence[FitResult], claims: Sequence[Claim]) -> list[str]:
    runs = df.drop_duplicates("run_id")
    fam_counts = runs.groupby("family").size().to_dict()
    roles = runs.groupby("role").size().to_dict()
    conv = {(f.param_convention, f.flop_convention) for f in fits}
    pc, fc = next(iter(conv)) if conv else ("—", "—")
    items = [
        f"Studies: {', '.join(sorted(set(runs['study'])))}; {len(runs)} runs "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(fam_counts.items()))}); roles: "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(roles.items()))}.",
        f"Training lengths: {', '.join(str(x) for x in sorted(set(runs['train_seq_len'])))} tokens; "
        f"evaluation lengths: {', '.join(str(x) for x in sorted(set(df['context_length'])))}.",
        f"Conventions: N = parameters ({pc}); C = training FLOPs ({fc}); loss = validation loss at the training "
        "length, nats/token.",
    ]
    for c in claims:
        ours = fmt(c.ours) + (f", {c.ci_label} {fmt(c.ci)}" if c.ci else "")
        line = (f"Claim ({c.id}) {c.title}: paper {c.paper_text}; ours {ours} → {c.verdict.value}"
                + (" (extrapolated)" if c.extrapolated else "") + ".")
        if c.prediction:
            p = Prediction.from_dict(c.prediction)
            line += (f" Carried to {p.n_active:.3g} active parameters: {fmt(p.value)}"
                     + (f" [{fmt(p.interval[0])}, {fmt(p.interval[1])}]" if p.interval else "")
                     + f" ({100 * p.level:.0f}%, {p.fit_key}, {p.extrapolation:.3g}x beyond the largest RoM run).")
        items.append(line)
    return items


def _views_table(claim: Claim) -> Table | None:
    """The other views of an interval claim (per-family read-off, exponent per family, other conventions), one
    interval column per convention."""
    if not claim.views:
        return None
    cells = [(str(v.get("method", "")).split("; ")[-1],
              None if v.get("interval") is None else tuple(v["interval"])) for v in claim.views]
    headers, ivs = interval_columns(cells)
    rows = tuple((v.get("what", ""), v.get("fit_key", ""), v.get("value"), *iv, v.get("slope"),
                  None if v.get("slope_interval") is None else tuple(v["slope_interval"]), v.get("status", ""),
                  v.get("note", "")) for v, iv in zip(claim.views, ivs))
    slope_label = next((h for h in headers if "envelope" in h), "interval")
    return Table("views", f"Claim ({claim.id}): other views of the same read-off", (
        "view", "fit", "value", *headers, "slope d ln k / d ln N", f"slope: {slope_label}", "status", "note"), rows)


def _prediction_table(claims: Sequence[Claim]) -> Table:
    preds = [(c, Prediction.from_dict(c.prediction)) for c in claims if c.prediction]
    cells = [(interval_label(p.level, "envelope of run and noise bootstraps" if "envelope" in p.method
                             else "bootstrap"), p.interval) for _, p in preds]
    headers, ivs = interval_columns(cells)
    rows = tuple((f"({c.id})", p.quantity, p.n_active, p.value, *iv, p.extrapolation, p.fit_key, p.method, p.note)
                 for (c, p), iv in zip(preds, ivs))
    return Table("prediction", "Read-offs carried to the paper's scale", (
        "claim", "quantity", "RoM active parameters", "predicted", *headers, "x beyond the largest RoM run",
        "fit", "method", "note"), rows)


class _Doc:
    """The report built twice at once (HTML and Markdown), with a table of contents of its sections."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.h: list[str] = []
        self.md: list[str] = []
        self.toc: list[tuple[int, str, str]] = []  # (level, anchor, title)

    def section(self, anchor: str, title: str, level: int = 2) -> None:
        self.toc.append((level, anchor, title))
        self.h.append(f"<h{level} id='{html.escape(anchor)}'>{html.escape(title)}</h{level}>")
        self.md += [f"<a id='{anchor}'></a>", "", f"{'#' * level} {title}", ""]

    def table(self, t: Table, raw_html: dict[tuple[int, int], str] | None = None, caption: bool = False) -> None:
        if caption and t.caption:
            self.h.append(f"<p><b>{html.escape(t.caption)}</b></p>")
            self.md += [f"**{t.caption}**", ""]
        self.h.append(_html_table(t, raw_html))
        self.md += [_md_table(t.columns, t.rows), ""]

    def para(self, text: str, cls: str = "") -> None:
        self.h.append(f"<p{f' class={cls!r}' if cls else ''}>{html.escape(text)}</p>")
        self.md += [("> " if cls == "note" else "") + text, ""]

    def bullets(self, items: Sequence[str], cls: str = "") -> None:
        self.h.append(f"<ul{f' class={cls!r}' if cls else ''}>" +
                      "".join(f"<li>{html.escape(s)}</li>" for s in items) + "</ul>")
        self.md += [f"- {s}" for s in items] + [""]

    def render(self) -> tuple[str, str]:
        toc_h = "<nav class='toc'><h2>Contents</h2><ul>" + "".join(
            f"<li class='toc{lvl}'><a href='#{html.escape(a)}'>{html.escape(t)}</a></li>" for lvl, a, t in self.toc
        ) + "</ul></nav>"
        toc_md = ["## Contents", ""] + [f"{'  ' * (lvl - 2)}- [{t}](#{a})" for lvl, a, t in self.toc] + [""]
        head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>")
        return (head + toc_h + "\n".join(self.h) + "</body></html>\n",
                "\n".join([f"# {self.title}", ""] + toc_md + self.md) + "\n")


def build_report(df: pd.DataFrame, fits: Sequence[FitResult], claims: Sequence[Claim], figures_dir: str | Path,
                 html_path: str | Path, md_path: str | Path, title: str = "RoM scaling study",
                 pooled: Sequence[PooledFit] = ()) -> None:
    figures_dir = Path(figures_dir)
    manifest = read_json(figures_dir / FIGURES_MANIFEST, "figures manifest")
    if not isinstance(manifest, dict) or "figures" not in manifest:
        raise AnalysisError(f"{figures_dir / 'figures.json'}: not a figures manifest (run `analysis figures`)")
    prov = _provenance(df)
    here = analysis_provenance()
    doc = _Doc(title)

    doc.section("summary", "Summary")
    doc.bullets(_summary(df, fits, claims), "summary")

    # Claims.
    doc.section("claims", "Claims")
    ct = claims_table(claims)
    vcol = ct.columns.index("verdict")
    badges = {(i, vcol): f"<span class='verdict {VERDICT_CLASS[c.verdict]}'>{html.escape(c.verdict.value)}</span>"
              for i, c in enumerate(claims)}
    doc.table(ct, badges)
    heads = [f"({c.id}) the headline uses {c.headline_fit}: {c.headline}" for c in claims if c.headline_fit]
    if heads:
        doc.section("headline-fits", "Which fit each headline uses, and why", 3)
        doc.bullets(heads + ["A pooled fit (dense and RoM together, E shared) is the headline when it converged: "
                             "it uses every run of both families for one ratio with one interval; the per-family "
                             "read-off and the other conventions stay beside it as views."])
    doc.section("rules", "Verdict rules", 3)
    doc.bullets([f"({c.id}) {c.rule}" for c in claims])
    for section in report_sections(claims):  # each claim's own tables (analysis.claims.<module>)
        doc.section(f"section-{len(doc.toc)}", section.title, 3)
        doc.table(Table("section", section.title, section.columns, section.rows))
    for c in claims:
        vt = _views_table(c)
        if vt is not None:
            doc.section(f"views-{c.id}", vt.caption, 3)
            doc.table(vt)

    # The paper's scale.
    doc.section("prediction", "At the paper's scale")
    pt = _prediction_table(claims)
    if pt.rows:
        doc.para("Each read-off carried to the paper's 1.3B active parameters from its pooled fit; the interval "
                 "is the fit's parameter uncertainty (bootstrap replicates evaluated at the same size), not the "
                 "scatter of a new run. The verdicts above stand at this study's scale.")
        doc.table(pt)
    else:
        doc.para("No claim carries a prediction (no usable pooled dense + RoM fit).", "note")

    # Figures.
    doc.section("figures", "Figures")
    md_dir = Path(md_path).resolve().parent
    for i, (name, entry) in enumerate(manifest["figures"].items(), start=1):
        png = figures_dir / f"{name}.png"
        if not png.is_file():
            raise AnalysisError(f"{png}: figure listed in the manifest is missing")
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        notes = entry.get("notes", [])
        doc.toc.append((3, f"fig-{name}", f"Figure {i}: {name}"))
        note_html = "".join(f"<div class='note'>note: {html.escape(n)}</div>" for n in notes)
        doc.h.append(f"<figure id='fig-{name}'><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption><b>Figure {i}.</b> {html.escape(entry['caption'])}</figcaption>{note_html}"
                     "</figure>")
        rel = os.path.relpath(png.resolve(), md_dir)
        doc.md += [f"<a id='fig-{name}'></a>", "", f"![{name}]({rel})", "", f"*Figure {i}.* {entry['caption']}", ""]
        doc.md += [f"> note: {n}" for n in notes] + [""]

    # Fit diagnostics.
    doc.section("fits", "Fit diagnostics: per family")
    for f in fits:
        head = (f"{f.key}: {f.form} — status {f.status.value}; {f.n_points} points, {f.n_unique_x} distinct x, "
                f"dof {f.dof}; objective {fmt(f.objective)}; {f.n_starts} starts; Huber delta {f.huber_delta:g}; "
                f"N={f.param_convention}, C={f.flop_convention}")
        doc.section(f"fit-{f.key}", f.key, 3)
        doc.para(head)
        doc.para(f"{f.message}. CI: {f.ci_note} (bootstrap seed {f.bootstrap.seed}).")
        if f.params is not None:
            doc.table(Table("p", "", ("parameter", "value",
                                      interval_label(f.ci_level, "percentile bootstrap over runs")),
                            tuple(_fit_rows(f))))
        if f.points:
            doc.table(Table("r", "", ("run", "x", "loss", "fit", "log residual"), tuple(_residual_rows(f))))
        if f.excluded:
            doc.para("excluded: " + "; ".join(f"{r}: {why}" for r, why in f.excluded), "note")
    if pooled:
        doc.section("pooled", "Fit diagnostics: pooled dense + RoM")
        doc.table(pooled_table(pooled), caption=True)
        for f in pooled:
            if f.excluded:
                doc.para(f"{f.key} excluded: " + "; ".join(f"{r}: {why}" for r, why in f.excluded), "note")

    # Runs, downstream and ablations.
    for t, heading in ((runs_table(df), "Runs"), (downstream_results_table(df), "Downstream accuracy"),
                       (ablations_table(df), "Ablations and seeds")):
        doc.section(t.name, heading)
        doc.table(t, caption=True)
    expertization = expertization_rows(df)
    if expertization:  # only in studies that compare expertizations (the table file says when there are none)
        doc.section("expertization", "Expertization: dense vs selective vs comprehensive RoM")
        doc.table(expertization_table(df, expertization), caption=True)

    # Provenance.
    doc.section("provenance", "Provenance")
    doc.bullets([f"analysis regenerated at {here['generated']} from commit {here['commit']}",
                 f"runs: git SHA {', '.join(prov['git_sha'])}", f"devices: {', '.join(prov['devices'])}",
                 f"evaluation (rom eval) devices: {_eval_devices_text(prov['eval_devices'])}",
                 f"hardware: {', '.join(prov['hardware'])}", f"python (runs): {', '.join(prov['python'])}",
                 f"records created: {', '.join(prov['created'])}"])
    names = sorted(set(prov["packages"]) | set(here["packages"]))
    pkg_rows = tuple((k, ", ".join(prov["packages"].get(k, [])) or "not recorded",
                      here["packages"].get(k, "—")) for k in names)
    doc.table(Table("pkg", "", ("package", "version(s) in the run records (training, evaluation)",
                                "installed where the analysis ran"), pkg_rows))
    doc.para("The runs record the packages of training and perplexity evaluation; lm-eval's version for the "
             "downstream scores is kept in each run's downstream.json part (downstream_meta.lm_eval_version), "
             "not in final.json.", "note")
    doc.section("configs", "Run configs", 3)
    for rid, ch, cfg in prov["configs"]:
        doc.h.append(f"<details><summary>{html.escape(rid)} ({html.escape(str(ch))})</summary><pre>"
                     f"{html.escape(json.dumps(json.loads(cfg), indent=1))}</pre></details>")
        doc.md += [f"<details><summary>{rid} ({ch})</summary>", "", "```json", json.dumps(json.loads(cfg), indent=1),
                   "```", "", "</details>", ""]
    page, markdown = doc.render()
    write_text(html_path, page)
    write_text(md_path, markdown)
