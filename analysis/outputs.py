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
    "context_ppl": "Perplexity at evaluation length L relative to the training length T, ppl(L) / ppl(T), one "
                   "panel per training length (the paper's Figure 3, normalised): RoM solid, dense dashed, darker "
                   "= larger; a seed group is its mean with a bar of +-1 std; 1 = as good as at T.",
    "loss_vs_active_params": "Validation loss at the training length against active parameters (the fits' "
                             "parameter convention) with each family's own L(N) fit and its bootstrap band (95% "
                             "percentile over runs); fits with a parameter at a bound are grey and say which. "
                             "Seed groups: mean +- std; open markers: runs no fit uses. The arrow is the "
                             "per-family read-off of claim (a); the box gives the claim's headline.",
    "prediction_at_paper_scale": "The pooled dense + RoM fit behind claim (a)'s prediction, carried to the "
                                 "paper's 1.3B active parameters: left, both families' laws with the envelope "
                                 "of the run and noise bootstrap bands (grey: beyond the data); right, the "
                                 "equivalence ratio N_eq / N_rom against size with its band, the paper's value "
                                 "and the prediction with its interval.",
    "loss_vs_flops": "Validation loss against training FLOPs with each family's L(C) fit and band (as in the "
                     "active-parameter figure); the arrow marks the per-family FLOPs saving of claim (b), the "
                     "box the claim's headline.",
    "loss_vs_total_params": "Validation loss against total parameters (experts included): lines join each "
                            "family's scaling runs only (a seed group's mean standing for its run); ablations "
                            "and other training lengths are named open markers.",
    "training_curves": "Training cross-entropy (without the auxiliary router losses) against tokens, one panel "
                       "per family, darker = larger, line style by role; dots: validation loss; crosses: the "
                       "final validation loss of WSD cooldown branches, which stay off the main curve.",
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
    "fits": "Per-family scaling-law fits (least squares on log residuals, L-BFGS-B); intervals: percentile "
            "bootstrap over runs",
    "pooled": "Pooled dense + RoM fits (E shared, A per family; exponent shared or per family) and what they "
              "read off (equivalence ratio, saving, slope of the ratio with size); intervals: each bootstrap's "
              "percentile interval and their envelope (the headline)",
    "claims": "The paper's claims against this study, and the read-off carried to the paper's scale (each "
              "interval column names its convention)",
    "downstream": "Downstream accuracy (lm-eval, zero-shot) in the paper's column order, ± lm-eval's standard "
                  "error; the first row is the accuracy of guessing",
    "ablations": "Ablations and seeds against the scaling run of the same family and shape (validation loss at "
                 "the training length; seed std over that run and its seed replicates)",
    "lr_check": "Learning-rate check (analysis.lr_check): validation loss at the training length of runs at a "
                "quarter of the main token budget trained at 0.5x / 2x the study's rate, against the same model's "
                "cooldown branch at that budget (the 1x rate, same WSD schedule).",
    "expertization": "Expertization: dense vs selective vs comprehensive RoM at each model shape that has runs of "
                     "more than one (analysis.tables.expertization_rows): active and total parameters, validation "
                     "loss at the training length as the mean over seed replicates with their s.d. and count, and "
                     "the differences of the means ± their seed noise, sqrt(s_a^2/n_a + s_b^2/n_b) from each "
                     "family's seed s.d. (analysis.noise); a difference beyond twice that is outside seed noise.",
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
