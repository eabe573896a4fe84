"""The analysis's error, and reading its JSON inputs with it. File writes are ``rom.io``'s (atomic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rom.errors import RomError


class AnalysisError(RomError, ValueError):
    """Bad input to an analysis step; the message names the file, key or value and what was expected."""


def read_json(path: str | Path, what: str) -> Any:
    """The parsed JSON file; a missing or malformed file raises AnalysisError naming it and ``what`` it is."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnalysisError(f"{path}: {what} file does not exist") from None
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: {what} file is not valid JSON ({e})") from None
