"""`rom eval`: validation loss / perplexity / bits per byte of a trained run at several context lengths."""

from __future__ import annotations

import argparse
import sys

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
    from rom.models.files import CheckpointError

    try:
        part = eval_part(args.run, args.data, args.overrides, device=args.device, progress=True)
    except CheckpointError as e:
        print(f"rom eval: {e}", file=sys.stderr)
        return 1
    atomic_write_json(args.out, part)
    for r in part["eval"]["results"]:
        print(f"rom eval: {part['run_id']} L={r['context_length']}: loss {r['loss']:.4f} ppl {r['ppl']:.2f} "
              f"bpb {r['bpb']:.4f} ({r['tokens']} tokens)", file=sys.stderr)
    return 0
