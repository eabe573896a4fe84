"""Arguments and error handling shared by the data commands (corpus, train-tokenizer, tokenize)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from rom.config import RunConfig, load_run_config
from rom.data.document import DataError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="run config YAML (its data: section is used); defaults when omitted")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. data.max_documents=20 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_config(args: argparse.Namespace) -> RunConfig:
    return load_run_config(args.config, args.overrides)


def run_command(name: str, body: Callable[[], None]) -> int:
    """Run a command body with INFO logging; bad data prints one line naming the file and returns 1."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        body()
    except DataError as e:
        print(f"rom {name}: error: {e}", file=sys.stderr)
        return 1
    return 0
