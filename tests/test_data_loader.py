"""TokenShard and PackedLoader: determinism, rank sharding, resume, epochs, bad shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rom.data.corpus import DataError
from rom.data.loader import PackedLoader
from rom.data.shards import TokenShard, token_dtype


def make_shard(dir_: Path, n_tokens: int, vocab: int = 60000, name: str = "train") -> TokenShard:
    """A shard whose token i is i % vocab, so every window is recognisable."""
    dtype = token_dtype(vocab)
    np.arange(n_tokens, dtype=np.int64).__mod__(vocab).astype(dtype).tofile(dir_ / f"{name}.bin")
    meta = {"format": 1, "split": name, "tokens": n_tokens, "documents": 1, "bytes": 4 * n_tokens,
            "dtype": dtype.name, "eos_id": 0, "vocab_size": vocab, "tokenizer_sha256": "x", "source": "test"}
    (dir_ / f"{name}.json").write_text(json.dumps(meta))
    return TokenShard(dir_ / name)


def take(loader: PackedLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(loader) for _ in range(n)]


def test_shapes_shift_and_dtype(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 1000)
    x, y = next(PackedLoader(shard, seq_len=16, batch_size=4, seed=0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all((x[:, 0] % 16) == 0)  # windows start at multiples of seq_len
    assert torch.equal(y - x, torch.ones_like(x))


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 5000)
    a = take(PackedLoader(shard, 32, 4, seed=1), 10)
    b = take(PackedLoader(shard, 32, 4, seed=1), 10)
    c = take(PackedLoader(shard, 32, 4, seed=2), 10)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_one_epoch_visits_every_window_once(tmp_path: Path) -> None:
    seq_len, n_tokens = 10, 401  # 40 windows
    shard = make_shard(tmp_path, n_tokens)
    loader = PackedLoader(shard, seq_len, batch_size=8, seed=3)
    assert loader.num_windows == 40
    targets = torch.cat([y for _, y in take(loader, 5)]).flatten().sort().values
    assert torch.equal(targets, torch.arange(1, n_tokens))  # every token after the first is a target once
    assert loader.position == 40 and loader.epoch == 1 and loader.passes == 1.0


def test_epochs_wrap_with_a_new_order(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 61)  # 6 windows of 10
    loader = PackedLoader(shard, 10, batch_size=4, seed=0)
    starts = torch.cat([x[:, 0] for x, _ in take(loader, 6)]).tolist()  # 24 sequences = 4 epochs
    epochs = [sorted(starts[i:i + 6]) for i in range(0, 24, 6)]
    assert all(e == list(range(0, 60, 10)) for e in epochs)
    assert len({tuple(starts[i:i + 6]) for i in range(0, 24, 6)}) > 1  # orders differ between epochs
    assert loader.epoch == 4 and loader.passes == pytest.approx(4.0)


def test_rank_union_equals_single_process(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 3000)
    single = take(PackedLoader(shard, 16, 2, seed=7), 8)
    for world in (2, 4):
        ranks = [PackedLoader(shard, 16, 2, seed=7, rank=r, world_size=world) for r in range(world)]
        for step in range(8 // world):
            for r, loader in enumerate(ranks):
                x, y = next(loader)
                sx, sy = single[step * world + r]
                assert torch.equal(x, sx) and torch.equal(y, sy)
        assert all(loader.position == 16 for loader in ranks)


def test_resume_from_state_dict_and_position(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 700)  # 43 windows of 16: resuming crosses an epoch boundary
    ref = PackedLoader(shard, 16, 4, seed=5)
    full = take(ref, 30)
    first = PackedLoader(shard, 16, 4, seed=5)
    take(first, 11)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON / checkpoint round trip
    resumed = PackedLoader(shard, 16, 4, seed=5)
    resumed.load_state_dict(state)
    by_position = PackedLoader(shard, 16, 4, seed=5, position=state["position"])
    for i in range(11, 30):
        for loader in (resumed, by_position):
            x, y = next(loader)
            assert torch.equal(x, full[i][0]) and torch.equal(y, full[i][1])
    # a 2-rank run resumes from a 1-rank position: ranks continue with the next global batches
    r0 = PackedLoader(shard, 16, 4, seed=5, rank=0, world_size=2, position=state["position"])
    r1 = PackedLoader(shard, 16, 4, seed=5, rank=1, world_size=2, position=state["position"])
    assert torch.equal(next(r0)[0], full[11][0]) and torch.equal(next(r1)[0], full[12][0])


def test_state_from_other_data_is_refused(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 700)
    state = PackedLoader(shard, 16, 4, seed=5).state_dict()
    with pytest.raises(DataError, match="seq_len"):
        PackedLoader(shard, 32, 4, seed=5).load_state_dict(state)
    with pytest.raises(DataError, match="seed"):
        PackedLoader(shard, 16, 4, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        PackedLoader(shard, 16, 4, seed=5, position=3)


def test_too_short_and_truncated_shards(tmp_path: Path) -> None:
    shard = make_shard(tmp_path, 10)
    with pytest.raises(DataError, match="seq_len=16 needs at least 17"):
        PackedLoader(shard, 16, 1, seed=0)
    with open(tmp_path / "train.bin", "r+b") as f:
        f.truncate(7)
    with pytest.raises(DataError, match="truncated"):
        TokenShard(tmp_path / "train")
    with pytest.raises(DataError, match="not found"):
        TokenShard(tmp_path / "val")


def test_uint32_for_large_vocab(tmp_path: Path) -> None:
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    shard = make_shard(tmp_path, 200_000, vocab=300_000)
    assert shard.tokens.dtype == np.uint32
    loader = PackedLoader(shard, 64, 64, seed=0)
    targets = torch.cat([y for _, y in take(loader, -(-loader.num_windows // 64))])
    assert int(targets.max()) == loader.num_windows * 64  # ids past uint16 survive the round trip
    assert shard.tokens[70_000] == 70_000
