"""The trainer's seams to the other parts: model construction, token shards and the loader.

Kept in one small module so tests can substitute a stand-in model or loader in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from rom.config import ConfigError, ModelConfig
from rom.data.shards import open_shard  # noqa: F401 - the trainer calls factory.open_shard (a seam for tests)


def make_model(model_cfg: ModelConfig, backend: str = "auto") -> nn.Module:
    from rom.models import build_model

    return build_model(model_cfg, backend=backend)


def make_loader(shard: Any, seq_len: int, batch_size: int, seed: int, rank: int, world_size: int) -> Any:
    from rom.data import PackedLoader

    return PackedLoader(shard, seq_len, batch_size, seed, rank=rank, world_size=world_size)


def tokenizer_vocab_size(shard: Any) -> tuple[int, str]:
    """(vocabulary size the shard's tokens need, where that number came from)."""
    meta = getattr(shard, "meta", {}) or {}
    for key in ("vocab_size", "tokenizer_vocab_size"):
        if isinstance(meta.get(key), int):
            return int(meta[key]), f"tokenizer vocab_size in the shard metadata ('{key}')"
    tok = meta.get("tokenizer")
    if isinstance(tok, dict) and isinstance(tok.get("vocab_size"), int):
        return int(tok["vocab_size"]), "tokenizer vocab_size in the shard metadata ('tokenizer.vocab_size')"
    tokens = np.asarray(shard.tokens)
    return (int(tokens.max()) + 1 if tokens.size else 0), "largest token id in the shard + 1"


def check_vocab(model_cfg: ModelConfig, shard: Any, shard_name: str) -> None:
    """model.vocab_size must cover every token id the tokenizer can produce."""
    need, source = tokenizer_vocab_size(shard)
    if model_cfg.vocab_size < need:
        raise ConfigError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's vocabulary of {need} "
            f"({source}, {shard_name}); set model.vocab_size >= {need}"
        )
