"""`rom downstream --run RUN_DIR --tasks DIR [--limit N] [--engine ...] --out downstream.json`.

Scores a trained run on the exported downstream tasks (``rom export-tasks``) through lm-eval when it is
installed, else with the built-in scorer (same requests, same metrics), and writes the downstream record part
(``rom.eval.parts.downstream_part``).
"""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "zero-shot downstream accuracy (LAMBADA, HellaSwag, PIQA, ARC-E/C, WinoGrande) of a trained run"
ENGINES = ("auto", "lm-eval", "builtin")  # what rom.eval.parts.resolve_engine accepts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory holding model.pt")
    parser.add_argument("--tasks", required=True, metavar="DIR", help="directory written by rom export-tasks")
    parser.add_argument("--out", required=True, help="downstream part to write (e.g. RUN_DIR/downstream.json)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="score only the first N documents of each task (default: all)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="lm-eval, builtin, or auto (lm-eval when importable, else builtin)")
    parser.add_argument("--task-list", default="all", metavar="LIST",
                        help="comma-separated subset of the six tasks (default: all)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="requests per forward pass (default 8)")
    parser.add_argument("--max-length", type=int, default=None, metavar="TOKENS",
                        help="longest input; longer contexts are left-truncated (default: training seq_len)")
    parser.add_argument("--tokenizer", default=None, metavar="FILE",
                        help="tokenizer.json the run was trained with (default: RUN_DIR/tokenizer.json)")


def run(args: argparse.Namespace) -> int:
    from rom.eval.parts import downstream_part
    from rom.eval.scorer import ScorerError
    from rom.eval.tasks import TaskDataError
    from rom.io import atomic_write_json, finite_or_none
    from rom.models.files import CheckpointError, model_file

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from rom.eval.run_info import run_divergence, run_tokenizer_identity
    from rom.data.corpus import file_sha256
    from rom.data.identity import check_tokenizer
    from rom.eval.scorer import find_tokenizer

    diverged = run_divergence(args.run)
    if diverged is not None:
        from rom.records import make_part

        run_id, diverged = diverged
        atomic_write_json(args.out, make_part("downstream", run_id, {
            "downstream": {}, "downstream_meta": {"skipped": f"training diverged: {diverged}", "n": {}}}))
        print(f"rom downstream: warning: {args.run} diverged ({diverged}); not scored, wrote {args.out} with no "
              f"results", file=sys.stderr)
        return 0
    try:
        try:
            tokenizer_file = find_tokenizer(args.run, args.tokenizer)
        except ScorerError:
            tokenizer_file = None  # the scorer reports a missing tokenizer where it needs one
        if tokenizer_file is not None and model_file(args.run) is not None:
            expected, source = run_tokenizer_identity(args.run)
            check_tokenizer(expected, source, file_sha256(tokenizer_file), tokenizer_file,
                            "pass the tokenizer.json the run was trained with (--tokenizer FILE)")
        part = downstream_part(args.run, args.tasks, task_list=args.task_list, engine=args.engine,
                               limit=args.limit, device=args.device, batch_size=args.batch_size,
                               max_length=args.max_length, tokenizer=args.tokenizer)
    except (RuntimeError, ScorerError, TaskDataError, CheckpointError) as e:
        print(f"rom downstream: {e}", file=sys.stderr)
        return 1
    # lm-eval gives NaN for what it cannot compute (the standard error of a single example): JSON null
    part = finite_or_none(part)
    atomic_write_json(args.out, part)
    counts = part["downstream_meta"]["n"]
    for name, metrics in part["downstream"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None and not k.endswith("stderr"))
        print(f"rom downstream: {part['run_id']} {name} (n={counts[name]}): {shown}", file=sys.stderr)
    return 0
