"""Corpus sources, tokenizers, token shards and the packed training loader (see docs/data.md).

Names are imported lazily so that `rom --help` and the torch-free parts never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Document": "rom.data.document",
    "DataError": "rom.data.document",
    "iter_documents": "rom.data.corpus",
    "is_validation": "rom.data.corpus",
    "iter_split": "rom.data.corpus",
    "write_corpus": "rom.data.corpus",
    "Tokenizer": "rom.data.tokenizer",
    "load_tokenizer": "rom.data.tokenizer",
    "check_vocab": "rom.data.tokenizer",
    "TokenShard": "rom.data.shards",
    "tokenize_corpus": "rom.data.shards",
    "PackedLoader": "rom.data.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rom.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
