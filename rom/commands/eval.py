"""`rom eval`: validation loss / perplexity / bits per byte of a trained run at several context lengths."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "evaluate a trained run on the validation shard at several context lengths; writes the eval part"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory holding model.pt")
    parser.add_argument("--data", required=True, help="directory with val.bin/.json")
    parser.add_argument("--out", required=True, help="eval part to write (e.g. RUN_DIR/eval.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override eval.* settings only, e.g. --set eval.max_tokens=65536")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from rom.eval.parts import eval_part
    from rom.io import atomic_write_json
    from rom.models.files import CheckpointError, model_file

    from rom.data.identity import check_tokenizer, tokenizer_identity
    from rom.data.shards import open_shard
    from rom.eval.run_info import run_divergence, run_tokenizer_identity

    diverged = run_divergence(args.run)
    if diverged is not None:
        from rom.records import make_part

        run_id, diverged = diverged
        part = make_part("eval", run_id, {
            "eval": {"tokenizer_bytes_per_token": None, "results": [], "skipped": f"training diverged: {diverged}"}})
        atomic_write_json(args.out, part)
        print(f"rom eval: warning: {args.run} diverged ({diverged}); no evaluation, wrote {args.out} with no "
              f"results (the analysis leaves the run out)", file=sys.stderr)
        return 0
    try:
        if model_file(args.run) is not None and (Path(args.data) / "val.json").is_file():  # else eval_part says
            expected, source = run_tokenizer_identity(args.run)
            val = open_shard(args.data, "val")
            check_tokenizer(expected, source, tokenizer_identity(val.meta), val.meta_path,
                            "evaluate on shards tokenized with the run's tokenizer (`rom tokenize --tokenizer` the "
                            "tokenizer.json that made the training shards), or pass the --data directory the run "
                            "was trained on")
        part = eval_part(args.run, args.data, args.overrides, device=args.device, progress=True)
    except CheckpointError as e:
        print(f"rom eval: {e}", file=sys.stderr)
        return 1
    atomic_write_json(args.out, part)
    for r in part["eval"]["results"]:
        print(f"rom eval: {part['run_id']} L={r['context_length']}: loss {r['loss']:.4f} ppl {r['ppl']:.2f} "
              f"bpb {r['bpb']:.4f} ({r['tokens']} tokens)", file=sys.stderr)
    return 0
