"""Which tokenizer made a token stream: the SHA-256 of the tokenizer file, carried end to end.

``rom tokenize`` writes ``tokenizer_sha256`` into each shard's metadata (rom.data.shards); ``rom train`` copies
it into the checkpoint (meta.json and the state), the model file's metadata, ``train.json`` (``data_identity``)
and so the final record; ``rom train`` (also on resume), ``rom eval`` and ``rom downstream`` compare it with the
shard or tokenizer file they are given and refuse a mismatch (``TokenizerMismatchError``, naming both files
and both hashes and what to do). Files written before the field existed carry no hash: they are accepted with
a warning (``check_tokenizer`` returns the warning text and logs it), so committed records still load.

Torch-free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from rom.data.document import DataError

log = logging.getLogger(__name__)

TOKENIZER_KEY = "tokenizer_sha256"


class TokenizerMismatchError(DataError):
    """Two files that must come from the same tokenizer name different tokenizer hashes."""


def tokenizer_identity(meta: Mapping[str, Any] | None) -> str | None:
    """The tokenizer SHA-256 a metadata mapping (shard meta, checkpoint meta, model metadata, train part's
    ``data_identity``) records, or None when it predates the field."""
    if not isinstance(meta, Mapping):
        return None
    value = meta.get(TOKENIZER_KEY)
    return value if isinstance(value, str) and value else None


def check_tokenizer(expected: str | None, expected_file: str | Path, actual: str | None, actual_file: str | Path,
                    next_step: str) -> str | None:
    """Refuse ``actual`` (read from ``actual_file``) unless it equals ``expected`` (from ``expected_file``).

    Either hash missing (a file written before tokenizer identities were recorded): no refusal; a warning is
    logged and returned. A mismatch raises ``TokenizerMismatchError`` naming both files, both hashes and
    ``next_step`` (what the user should do instead).
    """
    if expected is None or actual is None:
        missing = expected_file if expected is None else actual_file
        warning = (f"{missing} records no tokenizer identity (written before {TOKENIZER_KEY} was recorded); "
                   f"cannot check that {actual_file} and {expected_file} use the same tokenizer")
        log.warning(warning)
        return warning
    if expected != actual:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {actual_file} was made with tokenizer {TOKENIZER_KEY}={actual}, but "
            f"{expected_file} with {TOKENIZER_KEY}={expected}; {next_step}")
    return None


def shard_identity(shard_meta: Mapping[str, Any], corpus: bool = True) -> dict[str, Any]:
    """What a training run records about its data: the tokenizer's hash and kind (and the corpus split's hash)."""
    out: dict[str, Any] = {TOKENIZER_KEY: tokenizer_identity(shard_meta)}
    if shard_meta.get("tokenizer_kind") is not None:
        out["tokenizer_kind"] = shard_meta["tokenizer_kind"]
    if corpus and shard_meta.get("corpus_sha256") is not None:
        out["corpus_sha256"] = shard_meta["corpus_sha256"]
    return out
