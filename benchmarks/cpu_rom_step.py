"""Training-step time of 2-layer RoM LMs against their dense twins on CPU (issue 2's speed goal for RoM: < 0.5 s
per step; issue 27: RoM over dense for Mamba-2 and Gated DeltaNet as for Mamba-1).

d_model 64, 8 experts top-1, batch 8, length 256, vocab 4096, reference kernels, AdamW. For each architecture
(Mamba-1, Mamba-2, Gated DeltaNet) the dense LM and its RoM forms (Mamba-1: the default expert projections;
Mamba-2 and Gated DeltaNet: comprehensive and selective expertization) are built first and then stepped in
turn, one step each per round, so that a drift of the machine touches every model alike. Prints a table and the
RoM / dense ratios of median step times, and writes benchmarks/results/cpu_rom_step.json (--out: elsewhere).
Times on CPU are this machine's only; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from rom.config import ModelConfig, from_dict
from rom.models import build_model

BASE = {"d_model": 64, "n_layer": 2, "vocab_size": 4096}
ROM = {"num_experts": 8, "top_k": 1}
# small heads for d_model 64: Mamba-2 4 heads of 32 (d_inner 128, as Mamba-1's), Gated DeltaNet 2 heads of 32
# keys and 64 values (value_dim 128)
MAMBA2 = {"ssm": "mamba2", "mamba2": {"d_state": 16, "headdim": 32, "chunk_size": 64}}
GDN = {"ssm": "gated-deltanet", "gated_deltanet": {"num_heads": 2, "head_dim": 32, "expand_v": 2}}

# name -> (model fields over BASE, the dense model it is read against or None for a dense one)
SHAPES: dict[str, tuple[dict[str, Any], str | None]] = {
    "mamba": ({"pattern": "mamba"}, None),
    "rom-e8": ({"pattern": "rom", "rom": ROM}, "mamba"),
    "mamba2": ({**MAMBA2, "pattern": "mamba"}, None),
    "mamba2 rom-e8 comprehensive": ({**MAMBA2, "pattern": "rom", "rom": {**ROM, "expertization": "comprehensive"}},
                                    "mamba2"),
    "mamba2 rom-e8 selective": ({**MAMBA2, "pattern": "rom", "rom": {**ROM, "expertization": "selective"}},
                                "mamba2"),
    "gdn": ({**GDN, "pattern": "mamba"}, None),
    "gdn rom-e8 comprehensive": ({**GDN, "pattern": "rom", "rom": {**ROM, "expertization": "comprehensive"}}, "gdn"),
    "gdn rom-e8 selective": ({**GDN, "pattern": "rom", "rom": {**ROM, "expertization": "selective"}}, "gdn"),
}


class Stepper:
    """One model with its optimizer and batch; `step()` runs and times one training step."""

    def __init__(self, cfg: ModelConfig, batch: int, length: int) -> None:
        torch.manual_seed(0)
        self.cfg = cfg
        self.model = build_model(cfg, backend="reference")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.ids = torch.randint(0, cfg.vocab_size, (batch, length + 1))

    def step(self) -> float:
        t0 = time.perf_counter()
        out = self.model(self.ids[:, :-1])
        logits = out.logits.reshape(-1, self.cfg.vocab_size)
        loss = torch.nn.functional.cross_entropy(logits, self.ids[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        (loss + out.aux_loss).backward()
        self.opt.step()
        return time.perf_counter() - t0


def run(names: list[str], batch: int, length: int, steps: int, warmup: int) -> dict[str, list[float]]:
    steppers = {name: Stepper(from_dict(ModelConfig, {**BASE, **SHAPES[name][0]}, "model"), batch, length)
                for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + steps):
        for name, stepper in steppers.items():
            t = stepper.step()
            if i >= warmup:
                times[name].append(t)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--models", default=",".join(SHAPES),
                        help=f"comma-separated subset of: {', '.join(SHAPES)} (a RoM model brings its dense twin)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cpu_rom_step.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise SystemExit(f"cpu_rom_step.py: --models: unknown {unknown}; expected names from {list(SHAPES)}")
    for n in list(names):  # a ratio needs its dense twin in the same run
        dense = SHAPES[n][1]
        if dense is not None and dense not in names:
            names.append(dense)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit(f"cpu_rom_step.py: --steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}")

    times = run(names, args.batch, args.length, args.steps, args.warmup)
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t),
                   "tokens_per_s": args.batch * args.length / statistics.median(t)} for name, t in times.items()}
    ratios = {name: rows[name]["median_s"] / rows[SHAPES[name][1]]["median_s"]
              for name in names if SHAPES[name][1] is not None}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    result = {"batch": args.batch, "length": args.length, "steps": args.steps, "warmup": args.warmup,
              "interleaved": True, "machine": machine, "results": rows, "ratios_rom_over_dense": ratios}
    if "rom-e8" in ratios:
        result["ratio_rom_over_mamba"] = ratios["rom-e8"]  # the key of the Mamba-1-only version of this script
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)

    print(f"machine: {machine}")
    print(f"{'model':<30}{'median s/step':>15}{'min s/step':>12}{'tokens/s':>10}{'/ dense':>9}")
    for name, r in rows.items():
        ratio = f"{ratios[name]:.2f}" if name in ratios else ""
        print(f"{name:<30}{r['median_s']:>15.3f}{r['min_s']:>12.3f}{r['tokens_per_s']:>10.0f}{ratio:>9}")
    print("RoM / dense: median step time of each RoM LM over its dense twin's, stepped in turn "
          "(goal for RoM: < 0.5 s/step)")
    return result


if __name__ == "__main__":
    main()
