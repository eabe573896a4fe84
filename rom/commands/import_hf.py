"""`rom import-hf SRC --out DIR`: a transformers MambaForCausalLM or Mamba2ForCausalLM (directory or hub repo id) as a model
directory of this toolkit, which `rom eval --run DIR` and `rom downstream --run DIR` accept."""

from __future__ import annotations

import argparse
import sys

HELP = ("convert a Hugging Face MambaForCausalLM or Mamba2ForCausalLM (local directory or repo id) into a model "
        "directory of this toolkit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="directory with config.json + model.safetensors, or a hub repo id such as "
                             "state-spaces/mamba-130m-hf (downloaded; needs network or a filled cache)")
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument("--name", default=None, help="run name recorded in the config (default: hf-<source name>)")
    parser.add_argument("--seq-len", type=int, default=2048, metavar="TOKENS",
                        help="context length recorded as train.seq_len: the default evaluation length (default "
                             "2048, what the state-spaces models were trained with)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of a repo id")


def run(args: argparse.Namespace) -> int:
    from rom.interop import import_hf

    out, cfg = import_hf(args.src, args.out, name=args.name, seq_len=args.seq_len, revision=args.revision)
    m = cfg.model
    tok = "with its tokenizer" if (out / "tokenizer.json").is_file() else "no tokenizer in the source: pass --tokenizer to rom downstream"
    print(f"rom import-hf: {args.src} -> {out} ({cfg.run_id}: {m.n_layer} layers, d_model {m.d_model}, "
          f"vocab {m.vocab_size}; {tok})", file=sys.stderr)
    return 0
