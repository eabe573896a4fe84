"""`rom corpus --config C [--set k=v] --out DIR`: read the configured source and write the split corpus."""

from __future__ import annotations

import argparse

from rom.commands._common import add_config_arguments, load_config, run_command

HELP = "read the corpus source (data: section) and write DIR/{train,val}.jsonl.gz + DIR/corpus.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="corpus directory to write")


def run(args: argparse.Namespace) -> int:
    from rom.data.corpus import write_corpus

    cfg = load_config(args)
    return run_command("corpus", lambda: write_corpus(cfg.data, args.out, progress=not args.no_progress))
