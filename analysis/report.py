"""The study report: one self-contained HTML file (CSS inline, PNGs base64-embedded) and a Markdown twin.

Sections: summary, claims with verdicts and the verdict rules, figures with captions, fit diagnostics
(status, parameters, CIs, points, residuals), per-run table, downstream table, provenance (git SHAs,
configs, package versions, hardware: all read from the records via the collected table).
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.errors import AnalysisError, read_json
from rom.io import atomic_write_text as write_text
from analysis.claims import Claim, Verdict, report_sections
from analysis.fit import FitResult
from analysis.outputs import FIGURES_MANIFEST
from analysis.tables import Table, ablations_table, claims_table, downstream_results_table, fmt, runs_table

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
.summary li{margin:.2em 0}
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
        "hardware": sorted(set(runs["hardware"].astype(str))),
        "python": sorted(set(runs["python"].astype(str))),
        "packages": {k: sorted(v) for k, v in sorted(packages.items())},
        "configs": [(r.run_id, r.config_hash, r.config_json) for r in runs.itertuples()],
        "created": sorted(set(runs["created"].astype(str))),
    }


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
        items.append(f"Claim ({c.id}) {c.title}: paper {c.paper_text}; ours {ours} → {c.verdict.value}"
                     + (" (extrapolated)" if c.extrapolated else "") + ".")
    return items


def build_report(df: pd.DataFrame, fits: Sequence[FitResult], claims: Sequence[Claim], figures_dir: str | Path,
                 html_path: str | Path, md_path: str | Path, title: str = "RoM scaling study") -> None:
    figures_dir = Path(figures_dir)
    manifest = read_json(figures_dir / FIGURES_MANIFEST, "figures manifest")
    if not isinstance(manifest, dict) or "figures" not in manifest:
        raise AnalysisError(f"{figures_dir / 'figures.json'}: not a figures manifest (run `analysis figures`)")
    prov = _provenance(df)
    summary = _summary(df, fits, claims)
    h: list[str] = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
                    f"</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    md: list[str] = [f"# {title}", ""]

    h.append("<h2 id='summary'>Summary</h2><ul class='summary'>" +
             "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>")
    md += ["## Summary", ""] + [f"- {s}" for s in summary] + [""]

    # Claims.
    ct = claims_table(claims)
    badges = {(i, 4): f"<span class='verdict {VERDICT_CLASS[c.verdict]}'>{html.escape(c.verdict.value)}</span>"
              for i, c in enumerate(claims)}
    h.append("<h2 id='claims'>Claims</h2>" + _html_table(ct, badges))
    h.append("<h3>Verdict rules</h3><ul>" + "".join(
        f"<li><b>({c.id})</b> {html.escape(c.rule)}</li>" for c in claims) + "</ul>")
    md += ["## Claims", "", _md_table(ct.columns, ct.rows), "", "### Verdict rules", ""]
    md += [f"- **({c.id})** {c.rule}" for c in claims] + [""]
    for section in report_sections(claims):  # each claim's own tables (analysis.claims.<module>)
        t = Table("section", section.title, section.columns, section.rows)
        h.append(f"<h3>{html.escape(section.title)}</h3>" + _html_table(t))
        md += [f"### {section.title}", "", _md_table(section.columns, section.rows), ""]

    # Figures.
    h.append("<h2 id='figures'>Figures</h2>")
    md += ["## Figures", ""]
    md_dir = Path(md_path).resolve().parent
    for i, (name, entry) in enumerate(manifest["figures"].items(), start=1):
        png = figures_dir / f"{name}.png"
        if not png.is_file():
            raise AnalysisError(f"{png}: figure listed in the manifest is missing")
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        notes = entry.get("notes", [])
        note_html = "".join(f"<div class='note'>note: {html.escape(n)}</div>" for n in notes)
        h.append(f"<figure id='fig-{name}'><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                 f"<figcaption><b>Figure {i}.</b> {html.escape(entry['caption'])}</figcaption>{note_html}</figure>")
        rel = os.path.relpath(png.resolve(), md_dir)
        md += [f"![{name}]({rel})", "", f"*Figure {i}.* {entry['caption']}", ""] + [f"> note: {n}" for n in notes]
        md.append("")

    # Fit diagnostics.
    h.append("<h2 id='fits'>Fit diagnostics</h2>")
    md += ["## Fit diagnostics", ""]
    for f in fits:
        head = (f"{f.key}: {f.form} — status {f.status.value}; {f.n_points} points, {f.n_unique_x} distinct x, "
                f"dof {f.dof}; objective {fmt(f.objective)}; {f.n_starts} starts; Huber delta {f.huber_delta:g}; "
                f"N={f.param_convention}, C={f.flop_convention}")
        h.append(f"<h3>{html.escape(f.key)}</h3><p>{html.escape(head)}</p>"
                 f"<p>{html.escape(f.message)}. CI: {html.escape(f.ci_note)} (bootstrap seed "
                 f"{f.bootstrap.seed}).</p>")
        md += [f"### {f.key}", "", head, "", f"{f.message}. CI: {f.ci_note} (bootstrap seed {f.bootstrap.seed}).",
               ""]
        if f.params is not None:
            pcols, prow = ("parameter", "value", "CI"), _fit_rows(f)
            h.append(_html_table(Table("p", "", pcols, tuple(prow))))
            md += [_md_table(pcols, prow), ""]
        if f.points:
            rcols, rrows = ("run", "x", "loss", "fit", "log residual"), _residual_rows(f)
            h.append(_html_table(Table("r", "", rcols, tuple(rrows))))
            md += [_md_table(rcols, rrows), ""]
        if f.excluded:
            ex = "; ".join(f"{r}: {why}" for r, why in f.excluded)
            h.append(f"<p class='note'>excluded: {html.escape(ex)}</p>")
            md += [f"> excluded: {ex}", ""]

    # Runs, downstream and ablations.
    for t in (runs_table(df), downstream_results_table(df), ablations_table(df)):
        h.append(f"<h2 id='{t.name}'>{html.escape(t.caption)}</h2>" + _html_table(t))
        md += [f"## {t.caption}", "", _md_table(t.columns, t.rows), ""]

    # Provenance.
    prov_items = [("git SHA", ", ".join(prov["git_sha"])), ("devices", ", ".join(prov["devices"])),
                  ("hardware", ", ".join(prov["hardware"])),
                  ("python", ", ".join(prov["python"])), ("records created", ", ".join(prov["created"]))]
    pkg_rows = [(k, ", ".join(v)) for k, v in prov["packages"].items()]
    h.append("<h2 id='provenance'>Provenance</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in prov_items) + "</ul>")
    h.append(_html_table(Table("pkg", "", ("package", "version(s)"), tuple(pkg_rows))))
    h.append("<h3>Run configs</h3>" + "".join(
        f"<details><summary>{html.escape(rid)} ({html.escape(str(ch))})</summary><pre>"
        f"{html.escape(json.dumps(json.loads(cfg), indent=1))}</pre></details>" for rid, ch, cfg in prov["configs"]))
    md += ["## Provenance", ""] + [f"- **{k}**: {v}" for k, v in prov_items] + [""]
    md += [_md_table(("package", "version(s)"), pkg_rows), "", "### Run configs", ""]
    for rid, ch, cfg in prov["configs"]:
        md += [f"<details><summary>{rid} ({ch})</summary>", "", "```json", json.dumps(json.loads(cfg), indent=1),
               "```", "", "</details>", ""]
    h.append("</body></html>")
    write_text(html_path, "\n".join(h) + "\n")
    write_text(md_path, "\n".join(md) + "\n")
