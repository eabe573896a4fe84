"""`rom` command line: the table of subcommands, ``--version``, and one-line errors (see docs/interfaces.md).

Each subcommand is a module ``rom/commands/<name>.py`` (dashes become underscores) with HELP,
add_arguments(parser) and run(args) -> int; it imports torch only inside run, so `rom --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from rom.config import ConfigError
from rom.errors import RomError

DISTRIBUTION = "rom-toolkit"  # the project name in pyproject.toml

COMMANDS: dict[str, str] = {
    "env": "rom.commands.env",
    "flops": "rom.commands.flops",
    "corpus": "rom.commands.corpus",
    "train-tokenizer": "rom.commands.train_tokenizer",
    "tokenize": "rom.commands.tokenize",
    "train": "rom.commands.train",
    "eval": "rom.commands.eval",
    "record": "rom.commands.record",
    "export-tasks": "rom.commands.export_tasks",
    "downstream": "rom.commands.downstream",
    "import-hf": "rom.commands.import_hf",
    "export-hf": "rom.commands.export_hf",
    "lm-eval": "rom.commands.lm_eval",
}


def version() -> str:
    """The installed package's version; from a source checkout not installed, pyproject.toml's."""
    import importlib.metadata

    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10: the [project] table's version line
        m = re.search(r'^\[project\]$(?:(?!^\[).)*?^version\s*=\s*"([^"]+)"', text, re.MULTILINE | re.DOTALL)
        return m.group(1) if m else "unknown"
    return str(tomllib.loads(text).get("project", {}).get("version", "unknown"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rom", description="Routing Mamba toolkit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
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
