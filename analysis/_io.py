"""Atomic writes for the analysis outputs (temporary file in the same directory, fsync, rename).

The analysis imports nothing from ``rom`` except ``rom.records`` (see DESIGN), so it carries its own small
copy of the atomic-write idea instead of importing ``rom.io``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class AnalysisError(ValueError):
    """Bad input to an analysis step; the message names the file, key or value and what was expected."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give outputs the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_safe(obj: Any) -> Any:
    """JSON has no inf/nan: write them as strings "inf", "-inf", "nan" (read back by ``read_json``)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnalysisError(f"{path}: {what} file does not exist") from None
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: {what} file is not valid JSON ({e})") from None


def restore_floats(obj: Any) -> Any:
    """Inverse of ``_json_safe`` for a nested structure of numbers: "inf", "-inf", "nan" -> floats."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_floats(v) for v in obj]
    return obj


def as_float(value: Any) -> float | None:
    """Inverse of ``_json_safe`` for one number: "inf"/"nan" strings back to floats; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)
    return float(value)
