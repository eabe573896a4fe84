"""CPU training throughput of the default study's smallest models, and the share of step time outside the model.

For dense Mamba and RoM (8 experts, top-1) at d_model 64, 2 layers, vocab 4096, seq_len 128, batch 8:

* ``model step``: forward + backward + clip + AdamW on one fixed batch, timed in a bare loop (no data, no
  logging): the floor the trainer can reach;
* ``trainer step``: the real ``rom.train.loop.train`` on a synthetic token shard, its ``perf/step_time_s``
  from metrics.jsonl (first logging window dropped as warm-up);
* ``outside share``: the trainer's own ``perf/overhead_frac`` (time waiting for batches plus writing metrics,
  log and progress bar, over step wall time; measured inside one process, so robust to a shared CPU) and its
  ``perf/data_time_frac``. Goal: under 10 %. ``bare/trainer`` = 1 - model step / trainer step is a
  cross-check that is only meaningful on an otherwise idle machine.

Prints a table and writes benchmarks/results/cpu_train_throughput.json. The CPU may be shared: numbers are
medians of repeated windows, the machine is recorded.

    python benchmarks/cpu_train_throughput.py [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rom.config import run_config_from_dict
from rom.io import atomic_write_json
from rom.records import now_iso
from rom.train import factory
from rom.train.metrics import read_metrics
from rom.train.optim import build_optimizer

OUT = Path(__file__).parent / "results" / "cpu_train_throughput.json"
VOCAB, SEQ, BATCH = 4096, 128, 8
MODELS = {
    "mamba d64 L2": {"d_model": 64, "n_layer": 2, "vocab_size": VOCAB, "pattern": "mamba"},
    "rom-e8 d64 L2": {"d_model": 64, "n_layer": 2, "vocab_size": VOCAB, "pattern": "rom",
                      "rom": {"num_experts": 8, "top_k": 1}},
}


def write_shards(root: Path, n_train: int = 400_000, n_val: int = 20_000) -> Path:
    """Synthetic token shards in rom.data's format (uint16 .bin + .json)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        tokens = (rng.zipf(1.3, n) % VOCAB).astype(np.uint16)
        tokens.tofile(root / f"{split}.bin")
        (root / f"{split}.json").write_text(json.dumps({
            "format": 1, "split": split, "tokens": n, "documents": 1, "bytes": 4 * n, "dtype": "uint16",
            "eos_id": 0, "vocab_size": VOCAB, "tokenizer_sha256": "synthetic", "source": "synthetic"}))
    return root


def run_config(model: dict, steps: int, threads: int) -> dict:
    return {
        "name": "bench", "study": "bench", "model": model,
        "train": {"tokens": steps * SEQ * BATCH, "seq_len": SEQ, "batch_size": BATCH, "threads": threads,
                  "log_every": 10, "checkpoint_every": 10 ** 9, "eval_every": 0, "eval_batches": 1},
    }


def model_step_time(cfg_dict: dict, steps: int) -> list[float]:
    """Seconds per bare optimizer step (forward, backward, clip, AdamW) on one fixed batch."""
    cfg = run_config_from_dict(cfg_dict)
    torch.manual_seed(0)
    model = factory.make_model(cfg.model, cfg.train.backend.value)
    opt = build_optimizer(model, cfg.train)
    x = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x[:, :-1])
        loss = F.cross_entropy(out.logits.float().reshape(-1, VOCAB), x[:, 1:].reshape(-1)) + out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[3:]  # warm-up


def trainer_step_time(cfg_dict: dict, data: Path, out: Path) -> tuple[list[float], list[float], list[float], float]:
    from rom.train.loop import train

    part = train(run_config_from_dict(cfg_dict), data, out)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "perf/step_time_s" in r][1:]  # drop warm-up
    return ([r["perf/step_time_s"] for r in rows], [r["perf/data_time_frac"] for r in rows],
            [r["perf/overhead_frac"] for r in rows], part["training"]["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_shards(Path(tmp))
        for name, model in MODELS.items():
            cfg = run_config(model, args.steps, args.threads)
            # interleave bare and trainer measurements so both see the same background load
            bare = model_step_time(cfg, args.steps // 2)
            steps, data_frac, overhead, overall = trainer_step_time(cfg, data, Path(tmp) / name.replace(" ", "_"))
            bare += model_step_time(cfg, args.steps // 2)
            t_model, t_step = statistics.median(bare), statistics.median(steps)
            rows.append({
                "model": name, "tokens_per_step": SEQ * BATCH,
                "model_step_s": t_model, "trainer_step_s": t_step,
                "trainer_tokens_per_s": SEQ * BATCH / t_step, "model_tokens_per_s": SEQ * BATCH / t_model,
                "run_tokens_per_s": overall,
                "outside_share": statistics.median(overhead),
                "data_time_frac": statistics.median(data_frac),
                "bare_vs_trainer_share": 1.0 - t_model / t_step,
            })
    header = f"{'model':<16}{'trainer tok/s':>15}{'bare tok/s':>12}{'step ms':>10}{'bare ms':>10}" \
             f"{'outside':>9}{'data':>8}{'bare/trainer':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<16}{r['trainer_tokens_per_s']:>15.0f}{r['model_tokens_per_s']:>12.0f}"
              f"{1e3 * r['trainer_step_s']:>10.1f}{1e3 * r['model_step_s']:>10.1f}"
              f"{100 * r['outside_share']:>8.2f}%{100 * r['data_time_frac']:>7.2f}%"
              f"{100 * r['bare_vs_trainer_share']:>13.1f}%")
    atomic_write_json(args.out, {
        "benchmark": "cpu_train_throughput", "created": now_iso(),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
                    "load_average_1m": os.getloadavg()[0]},
        "setup": {"seq_len": SEQ, "batch_size": BATCH, "vocab_size": VOCAB, "steps": args.steps,
                  "goal_outside_share": 0.10},
        "results": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
