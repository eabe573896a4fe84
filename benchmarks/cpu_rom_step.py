"""Training-step time of a 2-layer RoM LM on CPU (issue 2 speed goal: < 0.5 s per step).

d_model 64, 8 experts top-1, batch 8, length 256, vocab 4096, reference kernels, AdamW. Prints a table and
writes benchmarks/results/cpu_rom_step.json. Also times the dense Mamba LM of the same shape side by side.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from rom.config import from_dict, ModelConfig
from rom.models import build_model

SHAPES = {
    "rom-e8": {"d_model": 64, "n_layer": 2, "vocab_size": 4096, "pattern": "rom", "rom": {"num_experts": 8, "top_k": 1}},
    "mamba": {"d_model": 64, "n_layer": 2, "vocab_size": 4096, "pattern": "mamba"},
}


def time_steps(cfg: ModelConfig, batch: int, length: int, steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, cfg.vocab_size, (batch, length + 1))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        out = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        (loss + out.aux_loss).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    batch, length = 8, 256
    rows = {}
    for name, shape in SHAPES.items():
        cfg = from_dict(ModelConfig, shape, "model")
        t = time_steps(cfg, batch, length, steps=10, warmup=2)
        rows[name] = {"median_s": statistics.median(t), "min_s": min(t), "tokens_per_s": batch * length / statistics.median(t)}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    result = {"batch": batch, "length": length, "machine": machine, "results": rows,
              "ratio_rom_over_mamba": rows["rom-e8"]["median_s"] / rows["mamba"]["median_s"]}
    out = Path(__file__).parent / "results" / "cpu_rom_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {machine}")
    print(f"{'model':<10}{'median s/step':>15}{'min s/step':>12}{'tokens/s':>12}")
    for name, r in rows.items():
        print(f"{name:<10}{r['median_s']:>15.3f}{r['min_s']:>12.3f}{r['tokens_per_s']:>12.0f}")
    print(f"RoM / dense step time: {result['ratio_rom_over_mamba']:.2f}  (goal for RoM: < 0.5 s/step)")


if __name__ == "__main__":
    main()
