"""`rom record`: merge the parts present in a run directory into its final record (final.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "merge RUN_DIR/{train,eval,flops,downstream}.json into one validated final record"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory holding the parts")
    parser.add_argument("--out", required=True, help="final record to write (e.g. RUN_DIR/final.json)")
    parser.add_argument("--require", default="", metavar="PARTS",
                        help="comma-separated parts that must be present besides train, e.g. eval,flops")


def collect_parts(run_dir: str | Path, require: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """Load RUN_DIR/<part>.json for every part present; train and ``require`` must exist."""
    from rom.records import PART_NAMES, RecordError, load_part

    run_dir = Path(run_dir)
    unknown = [p for p in require if p not in PART_NAMES]
    if unknown:
        raise RecordError(f"--require {','.join(unknown)}: unknown part(s); known parts: {', '.join(PART_NAMES)}")
    parts = {}
    for name in PART_NAMES:
        path = run_dir / f"{name}.json"
        if path.exists():
            parts[name] = load_part(path, name)
        elif name == "train" or name in require:
            raise RecordError(f"{path}: required part '{name}' is missing")
    return parts


def run(args: argparse.Namespace) -> int:
    from rom.io import atomic_write_json
    from rom.records import RecordError, merge_parts

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
