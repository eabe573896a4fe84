"""The source registry, the train/validation split and the corpus directory format.

Documents and DataError are ``rom.data.document`` (below both this module and the sources).

A corpus directory holds ``train.jsonl.gz`` and ``val.jsonl.gz`` (one ``{"id", "text", "source"}`` object per
line) and ``corpus.json`` (counts, bytes, sources, the data config). Validation documents are chosen by a hash
of the document text, so a document is never split and the split is the same on every machine; because the
decision is per document, every source contributes about ``val_fraction`` of its documents.

Torch-free.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from rom.config import CorpusSource, DataConfig, to_dict
from rom.data.document import DataError, Document
from rom.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
CORPUS_META = "corpus.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------- sources


# data.source -> "module:function" of its reader, imported when used (a source may need an optional package)
SOURCES: dict[CorpusSource, str] = {
    CorpusSource.SOTU: "rom.data.source_sotu:iter_sotu",
    CorpusSource.FILES: "rom.data.source_files:iter_files",
    CorpusSource.HF: "rom.data.source_hf:iter_hf",
    CorpusSource.OFFLINE_MIX: "rom.data.source_offline_mix:iter_offline_mix",
}


def source_reader(source: CorpusSource) -> Callable[[DataConfig], Iterator[Document]]:
    """The reader of a ``data.source`` (its SOURCES entry), imported now."""
    entry = SOURCES.get(source)
    if entry is None:
        raise DataError(f"data.source={source!r} has no reader")
    module, function = entry.split(":")
    return getattr(importlib.import_module(module), function)


def iter_documents(cfg: DataConfig) -> Iterator[Document]:
    """Documents of the configured source, in a deterministic order, bounded by ``cfg.max_documents``.

    Documents whose text is empty or whitespace only are dropped here (they carry no tokens).
    """
    it = source_reader(cfg.source)
    count = 0
    for doc in it(cfg):
        if not doc.text.strip():
            continue
        yield doc
        count += 1
        if cfg.max_documents and count >= cfg.max_documents:
            return


# --------------------------------------------------------------------------------------------- progress


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """tqdm on stderr; refreshed every 30 s instead of 10 times a second when stderr is a log file."""
    from tqdm import tqdm

    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
    return tqdm(iterable, **kwargs)


# --------------------------------------------------------------------------------------------- split


def split_value(text: str) -> float:
    """A number in [0, 1) fixed by the document text (first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_validation(doc: Document, val_fraction: float) -> bool:
    """True if the document belongs to the validation split (by a hash of its text).

    Identical texts always land in the same split, so duplicates cannot leak from train into validation.
    """
    return split_value(doc.text) < val_fraction


# --------------------------------------------------------------------------------------------- writing


def _new_stats() -> dict[str, int]:
    return {"documents": 0, "bytes": 0, "chars": 0}


def write_corpus(cfg: DataConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Read the source, split it and write the corpus directory atomically; return the corpus.json content.

    Nothing is left in ``out_dir`` when this fails (empty source, bad file, an empty split).
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    stats = {split: _new_stats() for split in SPLITS}
    per_source: dict[str, dict[str, dict[str, int]]] = {}
    renamed = False
    try:
        with contextlib.ExitStack() as stack:
            writers = {}
            for split in SPLITS:
                tmp = stack.enter_context(atomic_path(out_dir / f"{split}.jsonl.gz"))
                # mtime=0: identical input gives byte-identical output
                writers[split] = stack.enter_context(
                    gzip.GzipFile(filename="", mode="wb", fileobj=stack.enter_context(open(tmp, "wb")), mtime=0)
                )
            bar = progress_bar(iter_documents(cfg), desc=f"corpus {cfg.source.value}", unit="doc",
                               disable=not progress)
            for doc in bar:
                split = "val" if is_validation(doc, cfg.val_fraction) else "train"
                line = json.dumps({"id": doc.id, "text": doc.text, "source": doc.source}, ensure_ascii=False)
                writers[split].write(line.encode("utf-8") + b"\n")
                nbytes = len(doc.text.encode("utf-8"))
                for s in (stats[split], per_source.setdefault(doc.source, {k: _new_stats() for k in SPLITS})[split]):
                    s["documents"] += 1
                    s["bytes"] += nbytes
                    s["chars"] += len(doc.text)
            _check_splits(cfg, stats)
            for w in writers.values():
                w.close()  # flush the gzip trailer before atomic_path renames the file
            # corpus.json marks a complete corpus: drop a stale one before the new splits land
            (out_dir / CORPUS_META).unlink(missing_ok=True)
        renamed = True
        meta = {
            "format": FORMAT_VERSION,
            "source": cfg.source.value,
            "splits": stats,
            "sources": per_source,
            "val_fraction": cfg.val_fraction,
            "config": to_dict(cfg),
        }
        atomic_write_json(out_dir / CORPUS_META, meta)
    except BaseException:
        if renamed:  # a failure after the renames (writing corpus.json) must not leave half a corpus behind
            for split in SPLITS:
                (out_dir / f"{split}.jsonl.gz").unlink(missing_ok=True)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    log.info(
        "corpus %s: %d train / %d val documents (%d / %d bytes) -> %s",
        cfg.source.value, stats["train"]["documents"], stats["val"]["documents"],
        stats["train"]["bytes"], stats["val"]["bytes"], out_dir,
    )
    return meta


def _check_splits(cfg: DataConfig, stats: dict[str, dict[str, int]]) -> None:
    total = sum(s["documents"] for s in stats.values())
    if total == 0:
        where = f" (paths: {', '.join(cfg.paths)})" if cfg.paths else ""
        raise DataError(f"empty corpus: data.source={cfg.source.value}{where} yielded no non-empty document")
    for split in SPLITS:
        if stats[split]["documents"] == 0:
            raise DataError(
                f"the {split} split is empty ({total} documents, data.val_fraction={cfg.val_fraction}); "
                f"use more documents (data.max_documents) or change data.val_fraction"
            )


# --------------------------------------------------------------------------------------------- reading


def read_corpus_meta(corpus_dir: str | Path) -> dict[str, Any]:
    path = Path(corpus_dir) / CORPUS_META
    if not path.is_file():
        raise DataError(f"{path} not found: {corpus_dir} is not a corpus directory (run `rom corpus` first)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: corpus format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta


def iter_split(corpus_dir: str | Path, split: str) -> Iterator[Document]:
    """Documents of one split of a corpus directory, in written order."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    read_corpus_meta(corpus_dir)
    path = Path(corpus_dir) / f"{split}.jsonl.gz"
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                    yield Document(id=obj["id"], text=obj["text"], source=obj["source"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{lineno}: not a corpus line ({e})") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is truncated or corrupt: {e}") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
