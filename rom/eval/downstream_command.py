"""`rom downstream --run RUN_DIR --tasks DIR [--limit N] [--engine ...] --out downstream.json`.

Scores a trained run on the exported downstream tasks (``rom export-tasks``) through lm-eval when it is
installed, else with the built-in scorer (same requests, same metrics), and writes the downstream record part.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

HELP = "zero-shot downstream accuracy (LAMBADA, HellaSwag, PIQA, ARC-E/C, WinoGrande) of a trained run"
ENGINES = ("auto", "lm-eval", "builtin")


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


def resolve_engine(engine: str) -> str:
    have_lm_eval = importlib.util.find_spec("lm_eval") is not None
    if engine == "auto":
        return "lm-eval" if have_lm_eval else "builtin"
    if engine == "lm-eval" and not have_lm_eval:
        raise RuntimeError("--engine lm-eval, but lm-eval is not installed (pip install 'lm-eval>=0.4.5'); "
                           "or use --engine builtin, which computes the same metrics")
    return engine


def lm_eval_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("lm_eval")
    except Exception:  # noqa: BLE001 - not installed or no metadata
        return None


def run(args: argparse.Namespace) -> int:
    import torch

    from rom.eval.scorer import ScorerError, evaluate_builtin, load_scorer
    from rom.eval.tasks import TaskDataError, load_manifest, parse_task_list
    from rom.io import atomic_write_json
    from rom.records import make_part
    from rom.models.files import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        engine = resolve_engine(args.engine)
        names = parse_task_list(args.task_list)
        manifest = load_manifest(args.tasks)
        missing = [n for n in names if n not in manifest["tasks"]]
        if missing:
            raise TaskDataError(f"{args.tasks}: tasks {missing} were not exported; run rom export-tasks")
        if args.limit is not None and args.limit < 1:
            raise TaskDataError(f"--limit must be >= 1, got {args.limit}")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        scorer, cfg = load_scorer(args.run, device=device, batch_size=args.batch_size,
                                  max_length=args.max_length, tokenizer=args.tokenizer)
        if engine == "lm-eval":
            from rom.eval.lm_eval_model import evaluate_with_lm_eval

            results, counts = evaluate_with_lm_eval(scorer, args.tasks, names, args.limit)
        else:
            results, counts = evaluate_builtin(scorer, args.tasks, names, args.limit)
    except (RuntimeError, ScorerError, TaskDataError, CheckpointError) as e:
        print(f"rom downstream: {e}", file=sys.stderr)
        return 1
    part = make_part("downstream", cfg.run_id, {
        "downstream": results,
        "downstream_meta": {
            "engine": engine,
            "limit": args.limit,
            "n": counts,
            "lm_eval_version": lm_eval_version() if engine == "lm-eval" else None,
            "num_fewshot": 0,
            "device": str(device),
            "max_length": scorer.max_length,
            "batch_size": scorer.batch_size,
            "tasks_source": manifest.get("source"),
        },
    })
    atomic_write_json(args.out, part)
    for name, metrics in results.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None and not k.endswith("stderr"))
        print(f"rom downstream: {cfg.run_id} {name} (n={counts[name]}): {shown}", file=sys.stderr)
    return 0
