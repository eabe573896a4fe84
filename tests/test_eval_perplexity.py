"""Perplexity evaluation: windows, formulas, three context lengths, the `rom eval` command, short shards."""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rom.cli import main as rom_main
from rom.config import ConfigError, run_config_from_dict
from rom.eval.perplexity import spread_window_ids, evaluate, num_windows
from rom.records import load_part
from rom.data.shards import open_shard
from rom.train.loop import train
from test_train_support import make_data, tiny_config, write_tokens


class Bigram(torch.nn.Module):
    """A model whose loss we can compute by hand: logits depend on the current token only."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def test_num_windows() -> None:
    assert num_windows(101, 10, 0) == 10
    assert num_windows(100, 10, 0) == 9  # the last window needs one more target token
    assert num_windows(1001, 10, 35) == 3
    assert num_windows(5, 10, 0) == 0


def test_evaluate_matches_hand_computation(tmp_path: Path) -> None:
    tokens = np.random.default_rng(0).integers(0, 50, 2000)
    write_tokens(tmp_path / "val", tokens, vocab=50, split="val")
    shard = open_shard(tmp_path, "val")
    cfg = run_config_from_dict(tiny_config())
    model = Bigram(50)
    rows = evaluate(model, cfg, shard, [32, 64, 128], max_tokens=1024)
    assert [r["context_length"] for r in rows] == [32, 64, 128]
    with torch.no_grad():
        per_token = F.cross_entropy(model.table[torch.from_numpy(tokens[:-1])], torch.from_numpy(tokens[1:]),
                                    reduction="none")
    for r in rows:
        L = r["context_length"]
        n = 1024 // L
        assert r["tokens"] == n * L
        # the scored windows are spread over the whole shard (spread_window_ids), not its first n
        ids = spread_window_ids(len(tokens), L, n)
        assert ids[0] == 0 and ids[-1] == (len(tokens) - 1) // L - 1
        expected = torch.cat([per_token[i * L:(i + 1) * L] for i in ids]).mean()
        assert r["loss"] == pytest.approx(float(expected), rel=1e-5)
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert r["bpb"] == pytest.approx(r["loss"] / math.log(2) / 3.0)  # the shard has 3 bytes per token
    assert model.training  # mode restored


def test_evaluate_too_short_shard(tmp_path: Path) -> None:
    write_tokens(tmp_path / "val", np.arange(100) % 50, vocab=50, split="val")
    cfg = run_config_from_dict(tiny_config())
    with pytest.raises(ConfigError, match="context length 128"):
        evaluate(Bigram(50), cfg, open_shard(tmp_path, "val"), [32, 128], 0)


def test_rom_eval_three_lengths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_data(tmp_path / "data", n_train=8000, n_val=3000)
    run = tmp_path / "run"
    cfg = run_config_from_dict(tiny_config(tokens=32 * 4 * 3, eval_every=0))
    train(cfg, data, run)
    out = run / "eval.json"
    assert rom_main(["eval", "--run", str(run), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 0
    part = load_part(out, "eval")
    assert part["run_id"] == cfg.run_id
    rows = part["eval"]["results"]
    assert [r["context_length"] for r in rows] == [32, 64, 128]
    assert all(math.isfinite(r["loss"]) and r["tokens"] == 1024 for r in rows)
    assert part["eval"]["tokenizer_bytes_per_token"] == pytest.approx(3.0)
    # the scoring host's device and packages, beside the training host's provenance
    assert part["eval"]["device"] == "cpu"
    assert part["eval"]["packages"]["torch"] == importlib.metadata.version("torch")
    assert "L=128" in capsys.readouterr().err

    assert rom_main(["eval", "--run", str(run), "--data", str(data), "--out", str(out), "--set",
                     "eval.context_lengths=[16,48]"]) == 0
    assert [r["context_length"] for r in json.loads(out.read_text())["eval"]["results"]] == [16, 48]
    assert rom_main(["eval", "--run", str(run), "--data", str(data), "--out", str(out), "--set", "train.lr=1"]) == 2
    assert "only eval.* keys" in capsys.readouterr().err


def test_rom_eval_without_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert rom_main(["eval", "--run", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "e.json")]) == 1
    assert "model.pt" in capsys.readouterr().err and not (tmp_path / "e.json").exists()


def test_spread_window_ids_span_the_whole_shard():
    from rom.eval.perplexity import spread_window_ids

    # 100 windows of 10 tokens (1001 tokens): 5 wanted -> first, last and evenly between
    assert spread_window_ids(1001, 10, 5) == [0, 24, 49, 74, 99]
    assert spread_window_ids(1001, 10, 100) == list(range(100))
    assert spread_window_ids(1001, 10, 500) == list(range(100))  # capped at what exists
    assert spread_window_ids(1001, 10, 1) == [0]
    assert spread_window_ids(5, 10, 3) == []
    ids = spread_window_ids(10_001, 7, 333)
    assert len(ids) == len(set(ids)) == 333 and ids == sorted(ids) and ids[-1] == (10_000 // 7) - 1
