"""Validation loss, perplexity and bits per byte on held-out tokens at several context lengths.

Each context length L scores non-overlapping windows of the validation shard: window i feeds tokens
[i*L, (i+1)*L) and predicts tokens [i*L+1, (i+1)*L+1), so every scored token sees the window's own prefix
only (the paper's length-extrapolation view: the same text, longer contexts). ``max_tokens`` bounds the
scored tokens per length (0 = the whole shard); a bounded evaluation scores windows spread evenly over the
whole shard (``spread_window_ids``), never a prefix. Bits per byte use the shard's bytes per token (meta
``bytes`` / ``tokens``), so runs with different tokenizers compare.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rom.config import ConfigError, Precision, RunConfig
from rom.models.precision import autocast_context


def num_windows(n_tokens: int, context_length: int, max_tokens: int) -> int:
    n = max(0, (n_tokens - 1) // context_length)
    if max_tokens:
        n = min(n, max(1, max_tokens // context_length))
    return n


def spread_window_ids(n_tokens: int, context_length: int, n_wanted: int) -> list[int]:
    """``n_wanted`` window ids spread evenly over all windows of the shard, first and last included.

    The validation shard is the held-out documents of every source one after another, so its first windows
    come from one or two sources only; a prefix of it is not a sample of the split (the `gpu` study's
    `rom eval`, which scored the first 60% of the windows, came out 0.22-0.29 nats below the trainer's
    loss over the whole split). Evenly spaced windows span every document group.
    """
    available = max(0, (n_tokens - 1) // context_length)
    n = min(max(0, n_wanted), available)
    if n == 0:
        return []
    if n == available:
        return list(range(available))
    if n == 1:
        return [0]
    # integer spacing: window k of n at floor(k * (available - 1) / (n - 1)); strictly increasing since n <= available
    return [k * (available - 1) // (n - 1) for k in range(n)]


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def score_windows(model: nn.Module, tokens: np.ndarray, context_length: int, window_ids: Sequence[int],
                  batch_size: int, device: torch.device, precision: Precision) -> tuple[float, int]:
    """(sum of token losses in nats, number of scored tokens) over the given windows."""
    total, count = 0.0, 0
    L = context_length
    for start in range(0, len(window_ids), batch_size):
        ids = window_ids[start:start + batch_size]
        rows = np.stack([np.asarray(tokens[i * L:(i + 1) * L + 1], dtype=np.int64) for i in ids])
        batch = torch.from_numpy(rows).to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        with autocast_context(device, precision):
            logits = _logits(model(x))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        total += float(loss)
        count += y.numel()
    return total, count


def bytes_per_token(val_shard: Any, name: str = "validation shard") -> float:
    meta = getattr(val_shard, "meta", {}) or {}
    n_bytes, n_tokens = meta.get("bytes"), meta.get("tokens")
    if not isinstance(n_bytes, (int, float)) or not isinstance(n_tokens, (int, float)) or n_tokens <= 0:
        raise ConfigError(
            f"{name}: metadata needs numeric 'bytes' (UTF-8 bytes of the text) and 'tokens' to compute bits "
            f"per byte; found bytes={n_bytes!r}, tokens={n_tokens!r}"
        )
    return float(n_bytes) / float(n_tokens)


def evaluate(model: nn.Module, cfg: RunConfig, val_shard: Any, context_lengths: Sequence[int],
             max_tokens: int, progress: bool = False) -> list[dict]:
    """Rows of the record's ``eval.results``: {context_length, loss, ppl, bpb, tokens} per length."""
    device = next(model.parameters()).device
    tokens = val_shard.tokens
    bpt = bytes_per_token(val_shard)
    was_training = model.training
    model.eval()
    # Keep tokens per forward about constant across lengths (memory of the logits grows with batch * L).
    budget = cfg.eval.batch_size * cfg.train.seq_len
    rows = []
    lengths = list(context_lengths)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(lengths), desc="eval", unit="length")
    try:
        for L in lengths:
            n = num_windows(len(tokens), L, max_tokens)
            if n == 0:
                raise ConfigError(
                    f"validation shard has {len(tokens)} tokens, too few for one window of context length {L} "
                    f"(needs {L + 1}); lower eval.context_multipliers / eval.context_lengths or use more data"
                )
            batch = max(1, min(cfg.eval.batch_size, budget // L))
            ids = spread_window_ids(len(tokens), L, n)
            loss_sum, count = score_windows(model, tokens, L, ids, batch, device, cfg.train.precision)
            loss = loss_sum / count
            rows.append({
                "context_length": int(L),
                "loss": loss,
                "ppl": math.exp(loss) if loss < 700 else float("inf"),
                "bpb": loss / (math.log(2) * bpt),
                "tokens": int(count),
            })
            if bar is not None:
                bar.update(1)
                bar.set_postfix(L=L, loss=f"{loss:.4f}")
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return rows
