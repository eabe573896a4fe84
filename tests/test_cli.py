"""The `rom` command line: every subcommand registered, and `--help` fast (torch imported only inside run)."""

import ast
import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from rom import cli
from rom.cli import COMMANDS, build_parser, main
from rom.errors import RomError

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_help_does_not_import_torch():
    code = "import sys, rom.cli; rom.cli.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_commands_live_in_rom_commands_named_after_the_subcommand():
    for name, module in COMMANDS.items():
        assert module == f"rom.commands.{name.replace('-', '_')}"


def test_version_is_the_package_version(capsys, monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"rom {cli.version()}"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert cli.version() == expected  # a source checkout that is not installed reads pyproject.toml


def test_a_toolkit_error_prints_one_line(tmp_path, capsys):
    # rom flops --run on a directory without train.json: RecordError (a RomError) the command does not catch
    assert main(["flops", "--run", str(tmp_path), "--out", str(tmp_path / "flops.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rom flops: error: ") and "train.json" in err and "Traceback" not in err
    # a ConfigError keeps its own line and exit status 2
    assert main(["flops", "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("rom flops: configuration error: rom flops --run needs --out")


def test_every_error_class_derives_from_rom_error():
    found = []
    for pkg in ("rom", "analysis"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    parts = list(path.relative_to(ROOT).with_suffix("").parts)
                    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                    found.append((module, node.name))
    assert len(found) >= 9
    bad = [f"{m}.{c}" for m, c in found if not issubclass(getattr(importlib.import_module(m), c), RomError)]
    assert bad == []
