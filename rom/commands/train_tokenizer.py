"""`rom train-tokenizer --config C [--set k=v] --corpus DIR --out tokenizer.json`."""

from __future__ import annotations

import argparse
import logging

from rom.commands._common import add_config_arguments, load_config, run_command

HELP = ("train a byte-level BPE on the corpus's train split (data.tokenizer.kind=bpe), or copy and check a "
        "tokenizer file (file / gpt-neox / sentencepiece), into one tokenizer.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--corpus", metavar="DIR", default=None, help="corpus directory (needed for kind=bpe)")
    parser.add_argument("--out", required=True, metavar="FILE", help="tokenizer file to write")


def run(args: argparse.Namespace) -> int:
    from rom.data.tokenizer import build_tokenizer

    cfg = load_config(args)

    def body() -> None:
        tok = build_tokenizer(cfg.data.tokenizer, args.corpus, args.out, progress=not args.no_progress)
        logging.getLogger(__name__).info("tokenizer %s: vocab_size=%d eos_id=%d sha256=%s", args.out,
                                         tok.vocab_size, tok.eos_id, tok.file_hash)

    return run_command("train-tokenizer", body)
