"""The `rom` command line: every subcommand registered, and `--help` fast (torch imported only inside run)."""

import subprocess
import sys

from rom.cli import COMMANDS, build_parser


def test_every_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_help_does_not_import_torch():
    code = "import sys, rom.cli; rom.cli.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
