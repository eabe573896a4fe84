"""`rom tokenize --config C [--set k=v] --corpus DIR --tokenizer T --out DIR`: token shards for both splits."""

from __future__ import annotations

import argparse

from rom.commands._common import add_config_arguments, load_config, run_command

HELP = "tokenize a corpus directory into DIR/{train,val}.bin (uint16/uint32 memmaps) + DIR/{train,val}.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--corpus", required=True, metavar="DIR", help="corpus directory (rom corpus)")
    parser.add_argument("--tokenizer", required=True, metavar="FILE", help="tokenizer file (rom train-tokenizer)")
    parser.add_argument("--out", required=True, metavar="DIR", help="token shard directory to write")


def run(args: argparse.Namespace) -> int:
    from rom.data.shards import tokenize_corpus
    from rom.data.tokenizer import load_tokenizer

    load_config(args)  # validates the config and overrides like the other commands

    def body() -> None:
        tokenizer = load_tokenizer(args.tokenizer)
        tokenize_corpus(args.corpus, tokenizer, args.out, progress=not args.no_progress)

    return run_command("tokenize", body)
