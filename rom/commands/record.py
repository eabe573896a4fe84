"""`rom record`: merge the parts present in a run directory into its final record (final.json)."""

from __future__ import annotations

import argparse
import sys

HELP = "merge RUN_DIR/{train,eval,flops,downstream}.json into one validated final record"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory holding the parts")
    parser.add_argument("--out", required=True, help="final record to write (e.g. RUN_DIR/final.json)")
    parser.add_argument("--require", default="", metavar="PARTS",
                        help="comma-separated parts that must be present besides train, e.g. eval,flops")


def run(args: argparse.Namespace) -> int:
    from rom.io import atomic_write_json
    from rom.records import RecordError, collect_parts, merge_parts

    require = [p.strip() for p in args.require.split(",") if p.strip()]
    try:
        parts = collect_parts(args.run, require)
        record = merge_parts(parts, source=str(args.run))
    except RecordError as e:
        print(f"rom record: {e}", file=sys.stderr)
        return 1
    atomic_write_json(args.out, record)
    print(f"rom record: {record['run_id']}: merged {', '.join(parts)} -> {args.out}", file=sys.stderr)
    return 0
