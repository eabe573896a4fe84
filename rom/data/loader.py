"""PackedLoader: fixed-length training sequences from a token shard, in a deterministic, resumable order.

Windows: the stream is cut into ``n = (tokens - 1) // seq_len`` windows of ``seq_len + 1`` tokens starting at
``i * seq_len``; inputs are the first ``seq_len`` tokens and targets the last ``seq_len``, so the target spans
of the windows do not overlap and every token after the first is a target exactly once per epoch (windows
cross document boundaries; EOS separates documents).

Order: epoch ``e`` visits the windows in ``permutation(n)`` drawn from ``numpy.random.default_rng([seed, e])``;
epochs follow each other without a gap, so the global stream of sequences is a pure function of (seed,
position) and a batch may straddle two epochs. Global batch ``j`` is sequences ``[j*B, (j+1)*B)`` of that
stream (B = batch_size). Rank ``r`` of ``w`` takes global batches ``r, r+w, r+2w, ...`` after the start, so
the union of what the ranks see in one round equals ``w`` consecutive batches of a single process.

``position`` counts global sequences consumed by all ranks together; it advances by ``B * w`` per batch on
every rank, and ``state_dict()`` / ``load_state_dict()`` (or the ``position`` argument) resume exactly.
Per batch the cost is one fancy-indexed read of ``B * (seq_len + 1)`` tokens from the memmap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rom.data.corpus import DataError
from rom.data.shards import TokenShard


class PackedLoader:
    def __init__(self, shard: TokenShard, seq_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, position: int = 0):
        if seq_len <= 0 or batch_size <= 0:
            raise ValueError(f"seq_len and batch_size must be > 0, got {seq_len}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.shard = shard
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_windows = (len(shard) - 1) // seq_len
        if self.num_windows < 1:
            raise DataError(
                f"token shard {shard.bin_path} has {len(shard)} tokens; seq_len={seq_len} needs at least "
                f"{seq_len + 1}"
            )
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)
        self._perm_cache: dict[int, np.ndarray] = {}
        self.position = 0
        self._set_position(position)

    # ----------------------------------------------------------------------------------- progress

    @property
    def epoch(self) -> int:
        """Index of the epoch the next global sequence belongs to."""
        return self.position // self.num_windows

    @property
    def passes(self) -> float:
        """Passes over the data so far (global sequences consumed / windows per epoch)."""
        return self.position / self.num_windows

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    # ----------------------------------------------------------------------------------- order

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perm_cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            # keep the current and next epoch only: a batch straddles at most two
            self._perm_cache = {e: p for e, p in self._perm_cache.items() if e >= epoch - 1}
            self._perm_cache[epoch] = perm
        return perm

    def window_indices(self, start: int, count: int) -> np.ndarray:
        """Window ids of global sequences ``[start, start + count)``."""
        out = np.empty(count, dtype=np.int64)
        filled = 0
        while filled < count:
            seq = start + filled
            epoch, offset = divmod(seq, self.num_windows)
            take = min(count - filled, self.num_windows - offset)
            out[filled:filled + take] = self._permutation(epoch)[offset:offset + take]
            filled += take
        return out

    def batch_at(self, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of global batch ``global_batch``, each int64 (batch_size, seq_len)."""
        windows = self.window_indices(global_batch * self.batch_size, self.batch_size)
        index = windows[:, None] * self.seq_len + self._offsets[None, :]
        block = torch.from_numpy(self.shard.tokens[index].astype(np.int64))
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()

    # ----------------------------------------------------------------------------------- iteration

    def __iter__(self) -> "PackedLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch_at(self.position // self.batch_size + self.rank)
        self.position += self.batch_size * self.world_size
        return batch

    # ----------------------------------------------------------------------------------- resume

    def _set_position(self, position: int) -> None:
        if position < 0 or position % self.batch_size:
            raise ValueError(f"position must be a non-negative multiple of batch_size={self.batch_size}, "
                             f"got {position}")
        self.position = int(position)

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "num_windows": self.num_windows,
            "tokens": len(self.shard),
            "tokenizer_sha256": self.shard.meta.get("tokenizer_sha256"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state['position']``; the data and order must be the same ones (checked)."""
        for key in ("seed", "seq_len", "batch_size", "num_windows", "tokens"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise DataError(
                    f"loader state does not match this loader: {key}={state[key]!r} in the checkpoint, {mine!r} "
                    f"here ({self.shard.bin_path}); resuming would change the data order"
                )
        self._set_position(int(state["position"]))
