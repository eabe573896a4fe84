"""`rom export-hf RUN_DIR --out DIR`: a dense Mamba (Mamba-2) run as a transformers MambaForCausalLM
(Mamba2ForCausalLM) directory; RoM, Gated DeltaNet and hybrid runs (no transformers equivalent) as this toolkit's model directory (rom.interop.load_pretrained)."""

from __future__ import annotations

import argparse
import sys

HELP = ("export a trained run: dense Mamba / Mamba-2 as a transformers MambaForCausalLM / Mamba2ForCausalLM "
        "directory, others in this toolkit's format")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run (model.safetensors or model.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    parser.add_argument("--tokenizer", default=None, metavar="FILE",
                        help="tokenizer the run was trained with (default: RUN_DIR/tokenizer.json or the one "
                             "train.json names; none found: exported without a tokenizer)")


def run(args: argparse.Namespace) -> int:
    from rom.interop import export_run

    out, kind = export_run(args.run_dir, args.out, tokenizer=args.tokenizer)
    how = (f"transformers {_architecture(out)} (AutoModelForCausalLM.from_pretrained)" if kind == "transformers"
           else "this toolkit's format (rom.interop.load_pretrained; rom eval / rom downstream --run)")
    tok = "" if (out / "tokenizer.json").is_file() else "; no tokenizer found, none exported"
    print(f"rom export-hf: {args.run_dir} -> {out} as {how}{tok}", file=sys.stderr)
    return 0


def _architecture(out) -> str:
    import json

    return json.loads((out / "config.json").read_text(encoding="utf-8"))["architectures"][0]
