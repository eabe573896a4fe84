"""`rom` command line: one subcommand per module (see docs/interfaces.md).

Subcommand modules expose HELP, add_arguments(parser) and run(args) -> int, and import torch only inside
run, so `rom --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rom.config import ConfigError
from rom.errors import RomError

COMMANDS: dict[str, str] = {
    "env": "rom.env_command",  # outside rom.kernels: that package imports torch
    "flops": "rom.accounting_command",
    "corpus": "rom.data.command_corpus",
    "train-tokenizer": "rom.data.command_tokenizer",
    "tokenize": "rom.data.command_tokenize",
    "train": "rom.train.command",
    "eval": "rom.eval.command",
    "record": "rom.records_command",
    "export-tasks": "rom.eval.export_command",
    "downstream": "rom.eval.downstream_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rom", description="Routing Mamba toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # command not installed in this build
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except ConfigError as e:
        print(f"rom {args.command}: configuration error: {e}", file=sys.stderr)
        return 2
    except RomError as e:  # any other error the toolkit raises on purpose: one line, not a traceback
        print(f"rom {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
