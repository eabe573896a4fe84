"""`rom train`: train one run from a config (plus dotted overrides) on tokenized shards."""

from __future__ import annotations

import argparse
import sys

HELP = "train a model on token shards; writes RUN_DIR/{train.json, metrics.jsonl, train.log, model.safetensors}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=False, default=None, help="run config YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. --set train.tokens=2e6 (repeatable)")
    parser.add_argument("--data", required=True, help="directory with train.bin/.json and val.bin/.json")
    parser.add_argument("--out", required=True, help="run directory (resumes when it holds this run's checkpoint)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--on-divergence", choices=("fail", "exclude"), default="fail",
                        help="a run whose loss became non-finite writes train.json (diverged, with the reason) "
                             "and exits with status 3 (fail, the default), or 0 (exclude: the pipeline keeps "
                             "going and the analysis leaves the run out)")


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def run(args: argparse.Namespace) -> int:
    from rom.config import load_run_config
    from rom.models.files import CheckpointError
    from rom.train.loop import DIVERGED_EXIT_CODE, TrainingInterrupted, train

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
    if tr["diverged"]:
        excluded = args.on_divergence == "exclude"
        print(f"rom train: error: run {part['run_id']} DIVERGED: {tr.get('divergence')}; recorded in "
              f"{args.out}/train.json (training.diverged); "
              + ("--on-divergence exclude: exiting 0, the analysis leaves the run out" if excluded else
                 f"exit status {DIVERGED_EXIT_CODE}; lower train.lr, raise train.warmup_fraction or set "
                 f"train.grad_clip, then train again in a new --out (or --on-divergence exclude to keep going)"),
              file=sys.stderr)
        return 0 if excluded else DIVERGED_EXIT_CODE
    loss = tr["final_train_loss"]
    print(f"rom train: done {part['run_id']}: {tr['steps']} steps, {tr['tokens']} tokens, "
          f"final train loss {loss if loss is None else format(loss, '.4f')}, {tr['tokens_per_s']:.0f} tokens/s "
          f"-> {args.out}", file=sys.stderr)
    return 0
