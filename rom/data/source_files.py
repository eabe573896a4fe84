"""Local files: globs of ``.jsonl`` / ``.jsonl.gz`` (text in ``data.text_field``), ``.txt`` (one document per
file) and ``.parquet`` (column ``data.text_field``, needs pyarrow).

Every error names the file (and the line for jsonl): a file that is not UTF-8, a line that is not JSON, a line
without the text field, a glob that matches nothing.
"""

from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path
from typing import Iterator

from rom.config import DataConfig
from rom.data.document import DataError, Document

SOURCE = "files"
SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".parquet")


def expand_paths(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Files matched by the globs, each pattern's matches sorted, duplicates dropped, order kept."""
    seen: set[Path] = set()
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise DataError(f"data.paths entry {pattern!r} matches no file")
        for f in files:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in SUFFIXES:
        if name.endswith(s):
            return s
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(SUFFIXES)}")


def iter_jsonl(path: Path, text_field: str, source: str) -> Iterator[Document]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or text_field not in obj:
                    keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise DataError(
                        f"{path}:{lineno}: no text field {text_field!r} (found: {keys}); set data.text_field"
                    )
                text = obj[text_field]
                if not isinstance(text, str):
                    raise DataError(
                        f"{path}:{lineno}: field {text_field!r} must be a string, got {type(text).__name__}"
                    )
                doc_id = obj.get("id")
                yield Document(id=f"{path.name}/{doc_id if doc_id is not None else lineno}", text=text, source=source)
    except (OSError, EOFError) as e:  # e.g. a truncated .gz
        raise DataError(f"{path}: cannot read ({e}) near line {lineno}") from None


def iter_txt(path: Path, source: str) -> Iterator[Document]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    yield Document(id=path.name, text=text, source=source)


def iter_parquet(path: Path, text_field: str, source: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)})")
    row = 0
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            row += 1
            if text is None:
                continue
            if not isinstance(text, str):
                raise DataError(f"{path}: row {row}: column {text_field!r} must hold strings")
            yield Document(id=f"{path.name}/{row}", text=text, source=source)


def iter_files(cfg: DataConfig) -> Iterator[Document]:
    for path in expand_paths(cfg.paths):
        kind = _suffix(path)
        if kind in (".jsonl", ".jsonl.gz"):
            yield from iter_jsonl(path, cfg.text_field, SOURCE)
        elif kind == ".txt":
            yield from iter_txt(path, SOURCE)
        else:
            yield from iter_parquet(path, cfg.text_field, SOURCE)
