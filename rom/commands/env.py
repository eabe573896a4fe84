"""`rom env`: python / torch / CUDA versions, optional kernel backends, and what each op resolves to."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show python/torch/CUDA versions, optional kernel backends (with reasons) and the backend each op uses"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from rom.env import collect, format_table

    info = collect()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(info))
    return 0
