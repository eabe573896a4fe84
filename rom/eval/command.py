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
    import torch

    from rom.config import ConfigError, run_config_from_dict, to_dict
    from rom.eval.perplexity import bytes_per_token, evaluate
    from rom.io import atomic_write_json
    from rom.records import make_part
    from rom.data.shards import open_shard
    from rom.models.files import CheckpointError, load_trained_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for item in args.overrides:
        if not item.startswith("eval."):
            raise ConfigError(f"rom eval --set {item!r}: only eval.* keys can be overridden (others change the run)")
    try:
        model, cfg = load_trained_model(args.run, device)
    except CheckpointError as e:
        print(f"rom eval: {e}", file=sys.stderr)
        return 1
    run_id = cfg.run_id
    if args.overrides:
        cfg = run_config_from_dict(to_dict(cfg), args.overrides)
    shard = open_shard(args.data, "val")
    lengths = cfg.eval.lengths(cfg.train.seq_len)
    rows = evaluate(model, cfg, shard, lengths, cfg.eval.max_tokens, progress=True)
    part = make_part("eval", run_id, {
        "eval": {"tokenizer_bytes_per_token": bytes_per_token(shard), "results": rows,
                 "max_tokens": cfg.eval.max_tokens, "device": str(device)},
    })
    atomic_write_json(args.out, part)
    for r in rows:
        print(f"rom eval: {run_id} L={r['context_length']}: loss {r['loss']:.4f} ppl {r['ppl']:.2f} "
              f"bpb {r['bpb']:.4f} ({r['tokens']} tokens)", file=sys.stderr)
    return 0
