"""Atomic file writes (a temporary name in the same directory, fsync, then rename) and JSON without inf/nan.

Plain Python, no torch: the analysis uses it too.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rom.errors import RomError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class NonFiniteJSONError(RomError, ValueError):
    """A value meant for a strict JSON file is NaN or infinite (JSON has neither)."""


def non_finite_path(obj: Any, prefix: str = "") -> str | None:
    """The dotted path of the first NaN / inf float in ``obj`` (None when every number is finite)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "<value>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = non_finite_path(v, f"{prefix}.{k}" if prefix else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = non_finite_path(v, f"{prefix}[{i}]")
            if found:
                return found
    return None


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN / inf float replaced by None (JSON null): for values where "not a number" means
    "not available" (say a standard error of one example); the caller records why where it matters."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (indented); a NaN or inf anywhere raises ``NonFiniteJSONError`` naming the
    file and the field, and nothing is written (convert first: ``finite_or_none`` or ``json_safe``)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        where = non_finite_path(obj)
        if where is None:
            raise
        raise NonFiniteJSONError(f"{path}: field {where!r} is not a finite number; JSON has no NaN or inf "
                                 f"(nothing written)") from None
    atomic_write_text(path, text + "\n")


# ------------------------------------------------------------------------------ JSON with inf / nan as strings


def json_safe(obj: Any) -> Any:
    """JSON has no inf/nan: ``obj`` with them as the strings "inf", "-inf", "nan" (undone by ``restore_floats``).

    Dict keys become strings and numpy scalars plain numbers.
    """
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def atomic_write_json_safe(path: str | Path, obj: Any) -> None:
    """Write ``json_safe(obj)`` atomically: standard JSON (inf/nan as strings), indented."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def restore_floats(obj: Any) -> Any:
    """Inverse of ``json_safe`` for a nested structure of numbers: "inf", "-inf", "nan" -> floats."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_floats(v) for v in obj]
    return obj


def as_float(value: Any) -> float | None:
    """Inverse of ``json_safe`` for one number: "inf"/"nan" strings back to floats; None stays None."""
    if value is None:
        return None
    return float(value)
