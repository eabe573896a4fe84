"""Token shards: one flat memmap of token ids per split (``DIR/train.bin``) plus metadata (``DIR/train.json``).

The stream is ``doc1 EOS doc2 EOS ...``; ids are uint16 when the vocabulary has at most 65535 entries, else
uint32. The metadata holds tokens, documents, bytes (UTF-8 bytes of the texts, for bits per byte), dtype,
the tokenizer's SHA-256, eos_id, vocab_size, the source and the split.

Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rom.config import ConfigError
from rom.data.corpus import SPLITS, DataError, file_sha256, iter_split, progress_bar, read_corpus_meta
from rom.data.tokenizer import Tokenizer
from rom.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BATCH_CHARS = 4_000_000  # characters handed to the tokenizer at once (bounded memory, parallel encoding)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


class TokenShard:
    """A read-only memmap of one split: ``.tokens`` (np.uint16 / np.uint32) and ``.meta`` (the JSON)."""

    def __init__(self, path_prefix: str | Path):
        prefix = Path(path_prefix)
        if prefix.suffix in (".bin", ".json"):
            prefix = prefix.with_suffix("")
        self.prefix = prefix
        self.meta_path = prefix.with_name(prefix.name + ".json")
        self.bin_path = prefix.with_name(prefix.name + ".bin")
        if not self.meta_path.is_file():
            raise DataError(f"token shard metadata {self.meta_path} not found (run `rom tokenize` first)")
        try:
            self.meta: dict[str, Any] = json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.meta_path} is not valid JSON: {e}") from None
        for key in ("tokens", "dtype", "eos_id", "vocab_size"):
            if key not in self.meta:
                raise DataError(f"{self.meta_path} lacks {key!r}: not a token shard written by `rom tokenize`")
        self.dtype = np.dtype(self.meta["dtype"])
        if not self.bin_path.is_file():
            raise DataError(f"token shard {self.bin_path} not found")
        expected = int(self.meta["tokens"]) * self.dtype.itemsize
        actual = self.bin_path.stat().st_size
        if actual != expected:
            raise DataError(
                f"token shard {self.bin_path} has {actual} bytes, its metadata says {self.meta['tokens']} "
                f"{self.dtype} tokens ({expected} bytes): truncated or from another run"
            )
        if expected == 0:
            raise DataError(f"token shard {self.bin_path} is empty")
        self.tokens: np.ndarray = np.memmap(self.bin_path, dtype=self.dtype, mode="r")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per token (EOS included), for bits per byte = loss / ln 2 / bytes_per_token."""
        return float(self.meta["bytes"]) / len(self)

    def __repr__(self) -> str:
        return f"TokenShard({self.prefix}, tokens={len(self)}, dtype={self.dtype})"


def open_shard(data_dir: str | Path, split: str) -> TokenShard:
    """TokenShard for DIR/{split}.bin + DIR/{split}.json, with a clear error when it is missing."""
    prefix = Path(data_dir) / split
    if not Path(f"{prefix}.bin").exists() or not Path(f"{prefix}.json").exists():
        raise ConfigError(
            f"--data {data_dir}: expected {prefix}.bin and {prefix}.json (run `rom tokenize --out {data_dir}`)"
        )
    return TokenShard(prefix)


def tokenize_corpus(corpus_dir: str | Path, tokenizer: Tokenizer, out_dir: str | Path,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    """Tokenize both splits of a corpus directory into ``out_dir``; all four files appear or none.

    Returns the metadata of each split.
    """
    corpus_meta = read_corpus_meta(corpus_dir)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    dtype = token_dtype(tokenizer.vocab_size)
    metas: dict[str, dict[str, Any]] = {}
    renamed = False
    try:
        with contextlib.ExitStack() as stack:
            for split in SPLITS:
                tmp = stack.enter_context(atomic_path(out_dir / f"{split}.bin"))
                n_docs = corpus_meta["splits"][split]["documents"]
                bar = progress_bar(total=n_docs, desc=f"tokenize {split}", unit="doc", disable=not progress)
                with open(tmp, "wb") as f, bar:
                    stats = _write_split(iter_split(corpus_dir, split), tokenizer, dtype, f, bar)
                if stats["documents"] == 0:
                    raise DataError(_empty_split_message(corpus_dir, split, n_docs))
                metas[split] = {
                    "format": FORMAT_VERSION,
                    "split": split,
                    **stats,
                    "dtype": dtype.name,
                    "eos_id": tokenizer.eos_id,
                    "vocab_size": tokenizer.vocab_size,
                    "tokenizer_sha256": tokenizer.file_hash,
                    "tokenizer_kind": tokenizer.kind,
                    "source": corpus_meta["source"],
                    "corpus_sha256": file_sha256(Path(corpus_dir) / f"{split}.jsonl.gz"),
                }
            for split in SPLITS:  # metadata marks a complete shard: drop stale ones before the .bin land
                (out_dir / f"{split}.json").unlink(missing_ok=True)
        renamed = True
        for split in SPLITS:
            atomic_write_json(out_dir / f"{split}.json", metas[split])
    except BaseException:
        if renamed:
            for split in SPLITS:
                for suffix in (".bin", ".json"):
                    (out_dir / f"{split}{suffix}").unlink(missing_ok=True)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    for split in SPLITS:
        m = metas[split]
        log.info("tokenize %s: %d documents -> %d tokens (%.2f bytes/token)", split, m["documents"], m["tokens"],
                 m["bytes"] / max(1, m["tokens"]))
    return metas


def _write_split(docs, tokenizer: Tokenizer, dtype: np.dtype, f, bar) -> dict[str, Any]:
    totals = {"tokens": 0, "documents": 0, "bytes": 0}
    per_source: dict[str, dict[str, int]] = {}
    batch: list = []
    batch_chars = 0

    def flush() -> None:
        nonlocal batch, batch_chars
        if not batch:
            return
        encoded = tokenizer.encode_batch([d.text for d in batch])
        flat: list[int] = []
        for doc, ids in zip(batch, encoded):
            flat.extend(ids)
            flat.append(tokenizer.eos_id)
            s = per_source.setdefault(doc.source, {"tokens": 0, "documents": 0, "bytes": 0})
            nbytes = len(doc.text.encode("utf-8"))
            for t in (totals, s):
                t["tokens"] += len(ids) + 1
                t["documents"] += 1
                t["bytes"] += nbytes
        arr = np.asarray(flat, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= tokenizer.vocab_size):
            raise DataError(f"tokenizer {tokenizer.path} produced id {int(arr.max())} outside its vocabulary")
        arr.astype(dtype).tofile(f)
        bar.update(len(batch))
        batch, batch_chars = [], 0

    for doc in docs:
        batch.append(doc)
        batch_chars += len(doc.text)
        if batch_chars >= BATCH_CHARS:
            flush()
    flush()
    return {**totals, "sources": per_source}


def _empty_split_message(corpus_dir: str | Path, split: str, promised: Any) -> str:
    """What to say when a corpus split holds no documents: where, whether corpus.json promised some, what next."""
    from rom.data.corpus import CORPUS_META

    path = Path(corpus_dir) / f"{split}.jsonl.gz"
    meta = Path(corpus_dir) / CORPUS_META
    if promised:
        return (f"the {split} split {path} holds no documents, but {meta} promises {promised}: the file was "
                f"truncated or replaced after `rom corpus` wrote it; rebuild the corpus (`rom corpus --out "
                f"{corpus_dir}`, or delete {corpus_dir} and rerun the pipeline)")
    return (f"the {split} split {path} holds no documents ({meta} agrees: 0), nothing to tokenize; the corpus is "
            f"too small for data.val_fraction (or data.max_documents is too low): raise them and rebuild it "
            f"with `rom corpus`")
