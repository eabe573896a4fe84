"""`rom flops`: analytic parameters and FLOPs of a preset or config, or the flops part of a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "parameters and FLOPs by component (analytic; with --run also torch FlopCounterMode and fvcore)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="preset name (e.g. rom-mamba-1.3b-e8) or a YAML config file")
    p.add_argument("--seq-len", type=int, default=0, help="sequence length for attention FLOPs (default: the "
                   "config's train.seq_len, else 2048)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted model override")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--run", type=Path, help="run directory holding train.json: write its flops part")
    p.add_argument("--out", type=Path, help="with --run: where to write the flops part (JSON)")
    p.add_argument("--measure-seq-len", type=int, default=256,
                   help="with --run: sequence length of the measured forward pass (per-token matmul FLOPs do not "
                        "depend on it; default 256)")
    p.add_argument("--no-measure", action="store_true", help="with --run: skip the torch/fvcore counts")


def run(args: argparse.Namespace) -> int:
    from rom.config import ConfigError
    from rom.flops_report import flops_part, format_summary, spec_summary
    from rom.io import atomic_write_json

    if args.run is not None:
        if args.out is None:
            raise ConfigError("rom flops --run needs --out FILE")
        atomic_write_json(args.out, flops_part(args.run, args.measure_seq_len, measure=not args.no_measure))
        print(f"wrote {args.out}")
        return 0
    s = spec_summary(args.spec, args.set, args.seq_len)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0
