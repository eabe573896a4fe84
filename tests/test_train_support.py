"""Shared helpers of the trainer tests (tiny data dirs, configs, subprocess entry) and unit tests of the
trainer's small modules: schedule, optimizer groups, peak table, router metrics, checkpoint files.

The helpers use the real rom.models / rom.data when they work and otherwise install small private
stand-ins into rom.train.factory (the trainer's one seam to those parts), so these tests also run while the
other parts are being written. Run as a script (``python tests/test_train_support.py ARGS``) it is
``rom ARGS`` with the same choice, which lets subprocess and torchrun tests share it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rom.config import ModelConfig, TrainConfig, run_config_from_dict
from rom.train import factory

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VOCAB = 256


# ------------------------------------------------------------------------------------ stand-ins


@dataclass
class _Stats:  # the fields of rom.layers.aux.RouterStats the trainer reads
    name: str
    layer: int
    tokens_per_expert: torch.Tensor
    entropy: torch.Tensor
    load_balance_loss: torch.Tensor
    z_loss: torch.Tensor


@dataclass
class _Out:
    logits: torch.Tensor
    aux_loss: torch.Tensor
    router_stats: list


class TinyLM(nn.Module):
    """Stand-in language model: embedding, causal running-mean mixing, a routed MLP per layer."""

    def __init__(self, cfg: ModelConfig, backend: str = "auto") -> None:
        super().__init__()
        d, self.experts = cfg.d_model, 4
        self.embedding = nn.Embedding(cfg.vocab_size, d)
        self.mix = nn.ModuleList(nn.Linear(d, d) for _ in range(cfg.n_layer))
        self.router = nn.ModuleList(nn.Linear(d, self.experts, bias=False) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.A_log = nn.Parameter(torch.zeros(d, 2))
        self.A_log._no_weight_decay = True

    def forward(self, ids: torch.Tensor) -> _Out:
        x = self.embedding(ids)
        steps = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=x.dtype)[None, :, None]
        stats, aux = [], x.new_zeros(())
        for i, (mix, router) in enumerate(zip(self.mix, self.router)):
            ctx = x.cumsum(1) / steps  # causal
            probs = router(x).float().softmax(-1)
            top = probs.argmax(-1)
            counts = torch.bincount(top.flatten(), minlength=self.experts).float()
            lb = self.experts * (counts / counts.sum() * probs.mean((0, 1))).sum()
            ent = -(probs * probs.clamp_min(1e-9).log()).sum(-1).mean()
            x = x + torch.tanh(mix(ctx)) * (1 + probs.max(-1).values[..., None].to(x.dtype) * 0.1)
            aux = aux + 0.01 * lb
            stats.append(_Stats("mixer.router", i, counts.detach(), ent.detach(), lb, x.new_zeros(())))
        logits = self.head(self.norm(x) + self.A_log.sum() * 0)
        return _Out(logits, aux, stats)


class StandInShard:
    """prefix.bin (uint16) + prefix.json, the documented TokenShard shape."""

    def __init__(self, prefix: str | Path) -> None:
        self.meta = json.loads(Path(f"{prefix}.json").read_text())
        self.tokens = np.memmap(f"{prefix}.bin", dtype=np.uint16, mode="r")


class StandInLoader:
    """Packs windows of seq_len+1 tokens in a seeded per-pass order; rank r takes every world-th sequence."""

    def __init__(self, shard, seq_len, batch_size, seed, rank=0, world_size=1, position=0) -> None:
        self.shard, self.seq_len, self.batch_size, self.seed = shard, seq_len, batch_size, seed
        self.rank, self.world_size, self.position = rank, world_size, position
        self.n = (len(shard.tokens) - 1) // seq_len

    def __iter__(self):
        return self

    def __next__(self):
        rows = []
        for b in range(self.batch_size):
            g = (self.position + b) * self.world_size + self.rank  # global sequence index
            order = np.random.default_rng([self.seed, g // self.n]).permutation(self.n)
            i = int(order[g % self.n])
            rows.append(np.asarray(self.shard.tokens[i * self.seq_len:(i + 1) * self.seq_len + 1], dtype=np.int64))
        self.position += self.batch_size
        t = torch.from_numpy(np.stack(rows))
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def real_model_works() -> bool:
    try:
        cfg = run_config_from_dict({"model": {"d_model": 16, "n_layer": 1, "vocab_size": 64, "pattern": "rom",
                                              "rom": {"num_experts": 2}}})
        model = factory.make_model(cfg.model)
        model(torch.zeros(1, 4, dtype=torch.long)).logits.sum().backward()
        return True
    except Exception:  # noqa: BLE001 - any failure means: not ready yet
        return False


def real_data_works() -> bool:
    try:
        from rom.data import PackedLoader, TokenShard  # noqa: F401
        return True
    except ImportError:
        return False


_REAL_MAKE_MODEL, _REAL_OPEN_SHARD, _REAL_MAKE_LOADER = factory.make_model, factory.open_shard, factory.make_loader
USING_STANDIN_MODEL = not real_model_works()
USING_STANDIN_DATA = not real_data_works()


def install_standins() -> None:
    """Point rom.train.factory at the stand-ins for whichever real part is not usable yet."""
    if USING_STANDIN_MODEL:
        factory.make_model = lambda cfg, backend="auto": TinyLM(cfg, backend)
    if USING_STANDIN_DATA:
        def open_shard(data_dir, split):
            prefix = Path(data_dir) / split
            if not Path(f"{prefix}.bin").exists():
                raise factory.ConfigError(f"--data {data_dir}: expected {prefix}.bin and {prefix}.json")
            return StandInShard(prefix)
        factory.open_shard = open_shard
        factory.make_loader = lambda shard, seq_len, bs, seed, rank, world: StandInLoader(
            shard, seq_len, bs, seed, rank, world)


install_standins()


# ------------------------------------------------------------------------------------ data and configs


def write_tokens(prefix: Path, tokens: np.ndarray, vocab: int = VOCAB, split: str = "train") -> None:
    """One token shard in the documented format (rom.data.shards): prefix.bin (uint16) + prefix.json."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tokens.astype(np.uint16).tofile(f"{prefix}.bin")
    Path(f"{prefix}.json").write_text(json.dumps({
        "format": 1, "split": split, "tokens": int(len(tokens)), "documents": 1, "bytes": int(len(tokens) * 3),
        "dtype": "uint16", "eos_id": 0, "vocab_size": vocab, "tokenizer_sha256": "test", "source": "synthetic",
    }))


def make_data(root: Path, n_train: int = 40_000, n_val: int = 5_000, vocab: int = VOCAB, seed: int = 0) -> Path:
    """A learnable synthetic corpus: a noisy repeating pattern over the vocabulary."""
    rng = np.random.default_rng(seed)

    def seq(n: int) -> np.ndarray:
        base = (np.arange(n) * 7 + (np.arange(n) // 13)) % vocab
        noise = rng.integers(0, vocab, n)
        return np.where(rng.random(n) < 0.1, noise, base)

    write_tokens(root / "train", seq(n_train), vocab, "train")
    write_tokens(root / "val", seq(n_val), vocab, "val")
    return root


def tiny_config(**train: object) -> dict:
    """Plain-dict run config of a tiny model (d_model 32, 2 layers, vocab 256, seq 32)."""
    t = {"tokens": 32 * 4 * 12, "seq_len": 32, "batch_size": 4, "lr": 3e-3, "warmup_fraction": 0.1,
         "checkpoint_every": 4, "log_every": 1, "eval_every": 6, "eval_batches": 2, "threads": 1}
    t.update(train)
    return {
        "name": "tiny", "study": "test", "role": "scaling",
        "model": {"d_model": 32, "n_layer": 2, "vocab_size": VOCAB, "pattern": "rom",
                  "rom": {"num_experts": 4, "top_k": 1}, "mamba": {"d_state": 4}},
        "train": t,
        "eval": {"context_multipliers": [1, 2, 4], "max_tokens": 1024, "batch_size": 4},
    }


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args: list[str], env: dict | None = None, timeout: float = 240,
            torchrun: int = 0) -> subprocess.CompletedProcess:
    """``rom ARGS`` in a fresh process (through this file, so stand-ins apply there too)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               str(Path(__file__).resolve()), *args]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def step_losses(run_dir: Path) -> dict[int, float]:
    from rom.train.metrics import read_metrics

    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r}


# ------------------------------------------------------------------------------------ unit tests


def test_schedule_warmup_cosine_floor() -> None:
    from rom.train.schedule import lr_at

    lrs = [lr_at(s, 100, 1.0, 0.1, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # 10 warmup steps
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_at(1000, 100, 1.0, 0.1, 0.1) == pytest.approx(0.1)
    assert lr_at(0, 10, 2.0, 0.0, 0.5) == pytest.approx(2.0)  # no warmup starts at the peak


def test_optimizer_groups_exclude_vectors_and_tagged() -> None:
    from rom.train.optim import build_optimizer

    model = TinyLM(ModelConfig(d_model=8, n_layer=1, vocab_size=16))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    groups = {g["name"]: g for g in opt.param_groups}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert id(model.A_log) in no_decay and id(model.norm.weight) in no_decay and id(model.mix[0].bias) in no_decay
    assert id(model.mix[0].weight) not in no_decay and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["decay"]["weight_decay"] == 0.1
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_peak_table_and_mfu() -> None:
    from rom.train.peaks import mfu, peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops(None) is None and peak_flops("weird accelerator") is None
    assert mfu(6e9, 1e4, 989e12, 2) == pytest.approx(6e13 / (2 * 989e12))
    assert mfu(6e9, 1e4, None, 1) is None


def test_router_metrics_per_layer() -> None:
    from rom.train.metrics import router_metrics

    z = torch.zeros(())
    stats = [_Stats("mixer.router", 0, torch.tensor([3.0, 1.0]), torch.tensor(0.5), torch.tensor(1.0), z),
             _Stats("mixer.router", 0, torch.tensor([1.0, 3.0]), torch.tensor(0.7), torch.tensor(1.0), z),
             _Stats("mixer.router", 1, torch.tensor([4.0, 0.0]), torch.tensor(0.1), torch.tensor(2.0), z)]
    m = router_metrics(stats)
    assert m["router/layer0/load_min"] == pytest.approx(0.5) and m["router/layer0/load_cv"] == pytest.approx(0.0)
    assert m["router/layer0/entropy"] == pytest.approx(0.6)
    assert m["router/layer1/load_max"] == pytest.approx(1.0) and m["router/layer1/load_cv"] == pytest.approx(1.0)
    assert m["aux/load_balance"] == pytest.approx(2.0)  # (1 + 1 + 2) over 2 passes


def test_checkpoint_roundtrip_and_validation(tmp_path: Path) -> None:
    from rom.train.checkpoint import (CheckpointError, load_checkpoint, rng_state, save_checkpoint,
                                      set_rng_state)

    state = {"step": 7, "model": {"w": torch.arange(4.0)}, "rng": rng_state()}
    path = save_checkpoint(tmp_path, state, "run-a", "hash-a")
    a = torch.rand(3)
    set_rng_state(load_checkpoint(tmp_path, "run-a", "hash-a")["rng"])
    assert torch.equal(torch.rand(3), a)  # RNG restored to the saved point
    assert load_checkpoint(tmp_path / "nothing", "run-a", "hash-a") is None

    with pytest.raises(CheckpointError, match="run 'run-a'"):
        load_checkpoint(tmp_path, "run-b", "hash-b")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=str(path.name) + ".*truncated"):
        load_checkpoint(tmp_path, "run-a", "hash-a")
    path.write_bytes(data[:-10] + b"0123456789")  # same size, corrupt bytes
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path, "run-a", "hash-a")
    (tmp_path / "checkpoint" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(tmp_path, "run-a", "hash-a")


def test_checkpoint_replaces_older_state_file(tmp_path: Path) -> None:
    from rom.train.checkpoint import read_meta, save_checkpoint

    save_checkpoint(tmp_path, {"step": 1}, "r", "h")
    save_checkpoint(tmp_path, {"step": 2}, "r", "h")
    save_checkpoint(tmp_path, {"step": 3}, "r", "h")  # the previous state file stays as a fallback (issue 28)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "meta.json", "step-00000002.pt", "step-00000003.pt"]
    assert read_meta(tmp_path)["step"] == 3 and read_meta(tmp_path)["previous"]["step"] == 2


def test_tiny_config_is_valid() -> None:
    cfg = run_config_from_dict(tiny_config())
    assert cfg.train.steps == 12 and cfg.eval.lengths(cfg.train.seq_len) == [32, 64, 128]


if __name__ == "__main__":  # `rom ARGS` with the stand-ins installed (used by subprocess / torchrun tests)
    from rom.cli import main

    sys.exit(main(sys.argv[1:]))
