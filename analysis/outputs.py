"""The one list of the analysis outputs: figure and table names with their captions, and the claim ids.

The Snakemake rules (``workflow/rules/analysis.smk``) import this module to declare their outputs and report
captions; the analysis imports it to write them. Nothing else names a figure, a table or a claim, so adding
one starts here (see docs/extending.md). Plain Python with no third-party imports: the Snakefile imports it
at parse time.
"""

from __future__ import annotations

from pathlib import Path

# Figure name -> caption (order = order in the report). Each name has a builder in ``analysis.figures``.
FIGURES: dict[str, str] = {
    "context_ppl": "Validation perplexity against evaluation context length, one panel per training length "
                   "(the paper's Figure 3): RoM (solid) vs dense (dashed); the open marker is the training length.",
    "loss_vs_active_params": "Validation loss at the training length against active parameters (the fits' "
                             "parameter convention) with each family's L(N) fit, its bootstrap band, and the "
                             "equivalence read-off of claim (a) for the headline RoM run.",
    "loss_vs_flops": "Validation loss against training FLOPs with each family's L(C) fit and band; the arrow "
                     "marks the FLOPs saving of claim (b) at the headline run's loss.",
    "loss_vs_total_params": "Validation loss against total parameters (experts included): RoM's extra "
                            "capacity is visible as a shift to the right.",
    "training_curves": "Training loss (lines) and validation loss (markers) against training tokens, per run, "
                       "from each run's metrics JSONL.",
    "expert_load": "Per-layer expert load of RoM runs at the last logged step: coefficient of variation of "
                   "tokens per expert (left) and the most and least loaded expert's share as logged (right; "
                   "dotted: the uniform share 1/E when the trainer logs fractions).",
}
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
FIGURES_MANIFEST = "figures.json"

# Table name -> caption (a table may append run-specific notes to it). Each name has a builder in
# ``analysis.tables``.
TABLES: dict[str, str] = {
    "runs": "Per-run results at the training context length",
    "fits": "Scaling-law fits (log-space Huber, L-BFGS-B; CIs: percentile bootstrap over runs)",
    "claims": "The paper's claims against this study",
    "downstream": "Downstream accuracy (lm-eval defaults) in the paper's column order",
    "ablations": "Ablations and seeds against the scaling run of the same family and shape (validation loss at "
                 "the training length; seed std over that run and its seed replicates)",
}
TABLE_FORMATS: tuple[str, ...] = ("csv", "md", "tex")

# Claim id -> the module of ``analysis.claims`` that holds the whole claim (rule, read-off, details, report
# section). The order is the order of claims.json, the claims table and the report.
CLAIMS: dict[str, str] = {
    "a": "equivalence",
    "b": "saving",
    "c": "context",
    "d": "downstream",
}



def claim_id(module: str) -> str:
    """The id of the claim held by ``analysis.claims.<module>`` (for code that refers to one claim)."""
    ids = [cid for cid, mod in CLAIMS.items() if mod == module]
    if len(ids) != 1:
        raise KeyError(f"no claim module {module!r} in analysis.outputs.CLAIMS ({sorted(CLAIMS.values())})")
    return ids[0]


# The step outputs besides figures and tables (file names inside the study's analysis directory).
TABLE_CSV = "table.csv"
FITS_JSON = "fits.json"
CLAIMS_JSON = "claims.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"


def figure_files(figures_dir: str | Path, fmt: str) -> list[str]:
    """Paths of every figure in one format, in the order of ``FIGURES``."""
    return [str(Path(figures_dir) / f"{name}.{fmt}") for name in FIGURES]


def table_files(tables_dir: str | Path, fmt: str) -> list[str]:
    """Paths of every table in one format, in the order of ``TABLES``."""
    return [str(Path(tables_dir) / f"{name}.{fmt}") for name in TABLES]


def all_files(analysis_dir: str | Path) -> list[str]:
    """Every file the analysis of one study writes (what the pipeline's final target asks for)."""
    d = Path(analysis_dir)
    return ([str(d / REPORT_HTML), str(d / REPORT_MD)]
            + [p for name in FIGURES for p in (str(d / "figures" / f"{name}.{e}") for e in FIGURE_FORMATS)]
            + [p for name in TABLES for p in (str(d / "tables" / f"{name}.{e}") for e in TABLE_FORMATS)])


def caption_rst(captions: dict[str, str]) -> str:
    """The captions as an RST definition list (what the Snakemake report shows beside each figure or table)."""
    return "\n".join(f"``{name}``\n    {text}\n" for name, text in captions.items())
