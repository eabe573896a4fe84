"""`rom train`: train one run from a config (plus dotted overrides) on tokenized shards."""

from __future__ import annotations

import argparse
import sys

HELP = "train a model on token shards; writes RUN_DIR/{train.json, metrics.jsonl, train.log, model.pt}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=False, default=None, help="run config YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. --set train.tokens=2e6 (repeatable)")
    parser.add_argument("--data", required=True, help="directory with train.bin/.json and val.bin/.json")
    parser.add_argument("--out", required=True, help="run directory (resumes when it holds this run's checkpoint)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def run(args: argparse.Namespace) -> int:
    from rom.config import load_run_config
    from rom.models.files import CheckpointError
    from rom.train.loop import TrainingInterrupted, train

    cfg = load_run_config(args.config, args.overrides)
    try:
        part = train(cfg, args.data, args.out, device=args.device)
    except TrainingInterrupted as e:
        if _is_main_process():
            print(f"rom train: {e}", file=sys.stderr)
        return e.exit_code
    except CheckpointError as e:
        print(f"rom train: {e}", file=sys.stderr)
        return 1
    tr = part["training"]
    if not _is_main_process():
        return 0
    status = "DIVERGED" if tr["diverged"] else "done"
    print(f"rom train: {status} {part['run_id']}: {tr['steps']} steps, {tr['tokens']} tokens, "
          f"final train loss {tr['final_train_loss']:.4f}, {tr['tokens_per_s']:.0f} tokens/s -> {args.out}",
          file=sys.stderr)
    return 0
