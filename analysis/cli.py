"""`python -m analysis collect|fit|claims|figures|tables|report`: every input and output is a path flag, so
each Snakemake rule is one line. See docs/analysis.md for the conventions and verdict rules.

    python -m analysis collect --records results/raw/STUDY --out table.csv
    python -m analysis fit     --table table.csv --out fits.json [--param-convention active_nonembedding]
                               [--flop-convention train_total] [--bootstrap 1000] [--seed 0] [--fix-E FAM=VALUE]
    python -m analysis claims  --table table.csv --fits fits.json --out claims.json
    python -m analysis figures --table table.csv --fits fits.json --claims claims.json --out figures/
                               [--records-dir results/raw/STUDY]
    python -m analysis tables  --table table.csv --fits fits.json --claims claims.json --out tables/
    python -m analysis report  --table table.csv --fits fits.json --claims claims.json --figures figures/
                               --out report.html [--markdown report.md]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analysis.errors import AnalysisError, read_json
from analysis.parallel import available_cores
from rom.io import atomic_write_json_safe as write_json
from rom.records import RecordError

log = logging.getLogger("analysis")


def _cmd_collect(args: argparse.Namespace) -> int:
    from analysis.collect import collect, expand_record_paths, write_table

    paths = expand_record_paths(args.records)
    df = collect(paths)
    write_table(df, args.out)
    log.info("collected %d records -> %d rows in %s", len(paths), len(df), args.out)
    return 0


def configure_logging(level: int) -> None:
    """Log lines of the ``analysis`` package to stderr at ``level`` (also run in each worker process of
    ``analysis fit``). Only our logger: the root at INFO would let matplotlib's font subsetting flood the log."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _parse_fixed(items: list[str]) -> dict[str, float]:
    fixed = {}
    for item in items:
        family, sep, value = item.partition("=")
        try:
            fixed[family] = float(value)
        except ValueError:
            sep = ""
        if not sep or not family:
            raise AnalysisError(f"--fix-E {item!r}: expected FAMILY=VALUE, e.g. mamba=1.7")
    return fixed


def _cmd_fit(args: argparse.Namespace) -> int:
    import functools

    from analysis.collect import read_table
    from analysis.families import families_in
    from analysis.fit import FlopConvention, ParamConvention, family_fit_tasks, fits_document, log_fit
    from analysis.parallel import run_tasks
    from analysis.pooled import pooled_all
    from analysis.series import series_fit_tasks, series_pooled  # claim (b)'s dense hybrid series (issue 23)

    df = read_table(args.table)
    pc, fc = ParamConvention(args.param_convention), FlopConvention(args.flop_convention)
    fixed = _parse_fixed(args.fix_E)
    common = (pc, fc, args.bootstrap, args.seed, args.ci_level)
    # Pooled dense + RoM fits (issue 24) for every routed family whose dense counterpart is in the table.
    fams = families_in(df)
    pairs = [(f.dense_counterpart().name, f.name) for f in sorted(fams.values(), key=lambda f: f.name)
             if f.routed and f.dense_counterpart().name in fams]
    # Every fit is independent (its own bootstrap seed): one task each, the long pooled ones first. A progress
    # bar only on a terminal and in one process; in a workflow log, one line per fit is enough.
    family = family_fit_tasks(df, *common, fixed, progress=sys.stderr.isatty() and args.workers == 1)
    series = series_fit_tasks(df, *common)
    pooled = [functools.partial(pooled_all, df, pairs, *common), functools.partial(series_pooled, df, *common)]
    results = run_tasks(pooled + family + series, args.workers, configure_logging, (log.level,))
    pooled_fits = [p for group in results[:len(pooled)] for p in group]
    fits = [log_fit(f) for f in results[len(pooled):]]
    settings = {"table": str(args.table), "param_convention": pc.value, "flop_convention": fc.value,
                "bootstrap": args.bootstrap, "seed": args.seed, "ci_level": args.ci_level, "fixed_E": fixed}
    doc = fits_document(fits, **settings)
    doc["pooled"] = [p.to_dict() for p in pooled_fits]
    write_json(args.out, doc)
    return 0


def _load_inputs(args: argparse.Namespace, claims: bool = True) -> tuple:
    from analysis.claims import load_claims
    from analysis.collect import read_table
    from analysis.fit import load_fits

    df = read_table(args.table)
    fits = load_fits(read_json(args.fits, "fits"), str(args.fits))
    cl = load_claims(read_json(args.claims, "claims"), str(args.claims)) if claims else None
    return df, fits, cl


def _cmd_claims(args: argparse.Namespace) -> int:
    from analysis.claims import claims_document, compute_claims

    from analysis.pooled import load_pooled

    df, fits, _ = _load_inputs(args, claims=False)
    pooled = load_pooled(read_json(args.fits, "fits"), str(args.fits))
    claims = compute_claims(df, fits, args.context_tolerance, args.downstream_margin, pooled)
    write_json(args.out, claims_document(claims, table=str(args.table), fits=str(args.fits),
                                         context_tolerance=args.context_tolerance,
                                         downstream_margin=args.downstream_margin))
    for c in claims:
        log.info("claim (%s): %s (%s)", c.id, c.verdict.value, c.reason)
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from analysis.figures import make_figures
    from analysis.pooled import load_pooled

    df, fits, claims = _load_inputs(args)
    pooled = load_pooled(read_json(args.fits, "fits"), str(args.fits))  # the prediction figure reads them
    make_figures(df, fits, claims, args.out, args.records_dir, pooled=pooled)
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    from analysis.tables import all_tables, write_tables

    from analysis.pooled import load_pooled

    df, fits, claims = _load_inputs(args)
    pooled = load_pooled(read_json(args.fits, "fits"), str(args.fits))
    written = write_tables(all_tables(df, list(fits.values()), claims, list(pooled.values())), args.out)
    log.info("wrote %d table files to %s", len(written), args.out)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    from analysis.pooled import load_pooled

    df, fits, claims = _load_inputs(args)
    pooled = load_pooled(read_json(args.fits, "fits"), str(args.fits))
    md = args.markdown or Path(args.out).with_suffix(".md")
    build_report(df, list(fits.values()), claims, args.figures, args.out, md, title=args.title,
                 pooled=list(pooled.values()))
    log.info("report written: %s (+ %s)", args.out, md)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collect", help="run records -> one tidy table (CSV)")
    p.add_argument("--records", nargs="+", required=True, help="final.json files, directories or globs")
    p.add_argument("--out", required=True, type=Path, help="table CSV to write")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("fit", help="table -> scaling-law fits (JSON)")
    p.add_argument("--table", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="fits JSON to write")
    p.add_argument("--param-convention", default="active_nonembedding",
                   choices=["active_nonembedding", "active", "total_nonembedding", "total"])
    p.add_argument("--flop-convention", default="train_total", choices=["train_total", "6ND"])
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (0: no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci-level", type=float, default=0.95)
    p.add_argument("--fix-E", action="append", default=[], metavar="FAMILY=VALUE",
                   help="hold the asymptote E of a family's L(N) and L(C) fits fixed (repeatable)")
    p.add_argument("--workers", type=_positive_int, default=available_cores(),
                   help="processes for the independent fits (default: the cores available; same numbers "
                        "with any number)")
    p.set_defaults(func=_cmd_fit)

    def inputs(p: argparse.ArgumentParser, claims: bool = True) -> None:
        p.add_argument("--table", required=True, type=Path)
        p.add_argument("--fits", required=True, type=Path)
        if claims:
            p.add_argument("--claims", required=True, type=Path)

    p = sub.add_parser("claims", help="table + fits -> the paper's claims with verdicts (JSON)")
    inputs(p, claims=False)
    p.add_argument("--out", required=True, type=Path, help="claims JSON to write")
    p.add_argument("--context-tolerance", type=float, default=0.05, help="claim (c): allowed ppl ratio - 1")
    p.add_argument("--downstream-margin", type=float, default=0.01, help="claim (d): accuracy margin")
    p.set_defaults(func=_cmd_claims)

    p = sub.add_parser("figures", help="-> PNG + PDF figures and figures.json in a directory")
    inputs(p)
    p.add_argument("--out", required=True, type=Path, help="directory for the figures")
    p.add_argument("--records-dir", type=Path, default=None,
                   help="where to look for metrics JSONL files if the records moved since collect")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("tables", help="-> runs/fits/claims/downstream tables as CSV, Markdown, LaTeX")
    inputs(p)
    p.add_argument("--out", required=True, type=Path, help="directory for the tables")
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser("report", help="-> self-contained HTML report + Markdown twin")
    inputs(p)
    p.add_argument("--figures", required=True, type=Path, help="directory written by `analysis figures`")
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--markdown", type=Path, default=None, help="Markdown twin (default: --out with .md)")
    p.add_argument("--title", default="RoM scaling study")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (AnalysisError, RecordError) as e:
        print(f"analysis {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
