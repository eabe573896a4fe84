"""Training step with and without ``train.master_weights`` on one GPU: dense Mamba and RoM (8 experts).

Both policies run the trainer's own pieces: ``rom.train.optim.build_optimizer`` (torch's AdamW on fp32
parameters; ``MasterWeightAdamW`` on fp32 masters of bf16 working weights), the micro-batch loss, and the
forward + backward replayed as one CUDA graph (``rom.train.cuda_graph``, the trainer's default on one GPU),
the optimizer eager. A step = replay + clip to norm 1 + update + in-place zeroing, as the loop runs it. One
model is built per (size, policy), timed, and freed (two RoM-350M models do not fit beside each other with
their optimizer states); graphed step times repeat to ~0.3% across calls on the H200, so the two policies are
compared across models. Then the update alone on the RoM-350M weights: ours against torch's fused AdamW
with the casts it would need. Prints tables and writes benchmarks/results/gpu_master_weights.json.

    python benchmarks/gpu_master_weights.py [--sizes 15m,115m,350m] [--seq-len 2048] [--steps 12] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, print_table, write_result  # noqa: E402
from gpu_step import SIZES, _cfg  # noqa: E402

from rom.config import Precision, TrainConfig  # noqa: E402
from rom.models import build_model  # noqa: E402
from rom.train.cuda_graph import CapturedStep, micro_batch_loss  # noqa: E402
from rom.train.master_weights import to_working_weights  # noqa: E402
from rom.train.optim import build_optimizer  # noqa: E402


def _step_ms(rom: bool, d_model: int, n_layer: int, batch: int, seq_len: int, master: bool,
             steps: int) -> list[float]:
    cfg = _cfg(d_model, n_layer, rom)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = build_model(cfg, backend="auto")
    pairs = to_working_weights(model) if master else None
    opt = build_optimizer(model, TrainConfig(lr=1e-4, master_weights=master, precision=Precision.BF16), pairs)
    static = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device="cuda")

    def forward_backward() -> None:
        micro_batch_loss(model, static[:, :-1], static[:, 1:], 1, static.device, Precision.AUTO)

    def update() -> None:
        if pairs is not None:
            opt.clip_grad_norm_(1.0)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)

    captured = CapturedStep(forward_backward, model.parameters())
    for _ in range(3):  # optimizer state allocation, the update's kernels compiled
        captured.replay()
        update()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(steps):
        start.record()
        captured.replay()
        update()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _update_alone() -> list[dict[str, Any]]:
    """The master-weight update by itself on the RoM-350M shapes (48 layers x in bank, out bank, x_proj, dt_proj:
    2.43G elements): our adamw_step op against torch's own (the gradient widened, ``torch._fused_adamw_``, the
    working copy cast), bandwidth counted as the op's 28 bytes per element."""
    from triton.testing import do_bench

    from rom.kernels.triton_adamw import adamw_step_triton

    torch.manual_seed(0)
    sizes = [8 * 1024 * 4096, 8 * 2048 * 1024, 2048 * 96, 64 * 2048] * 48
    masters = [torch.randn(n, device="cuda") for n in sizes]
    grads = [torch.randn(n, device="cuda").to(torch.bfloat16) for n in sizes]
    ms_, vs = [torch.zeros_like(t) for t in masters], [torch.zeros_like(t) for t in masters]
    works = [torch.empty_like(g) for g in grads]
    wide = [torch.empty_like(t) for t in masters]
    steps = [torch.tensor(3.0, device="cuda") for _ in sizes]

    def ours() -> None:
        adamw_step_triton(masters, grads, ms_, vs, works, 1e-4, 0.1, 0.9, 0.95, 1e-8, 3)

    def torch_fused() -> None:
        torch._foreach_copy_(wide, grads)
        torch._fused_adamw_(masters, wide, ms_, vs, [], steps, lr=1e-4, beta1=0.9, beta2=0.95, weight_decay=0.1,
                            eps=1e-8, amsgrad=False, maximize=False)
        torch._foreach_copy_(works, masters)

    total = sum(sizes)
    rows = []
    for name, fn in (("adamw_step (Triton)", ours), ("torch: widen + _fused_adamw_ + cast", torch_fused)):
        ms = do_bench(fn, warmup=50, rep=400, return_mode="median")
        rows.append({"update": name, "weights": len(sizes), "elements_G": total / 1e9, "ms": ms,
                     "TB_per_s_at_28_bytes": total * 28 / (ms * 1e-3) / 1e12})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--sizes", default="15m,115m,350m")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    facts = device_facts()
    wanted = set(args.sizes.split(","))
    rows: list[dict[str, Any]] = []
    for name, d_model, n_layer, batch in SIZES:
        if name not in wanted:
            continue
        for rom in (False, True):
            label = f"{'rom-e8' if rom else 'dense'}-{name}"
            by: dict[bool, float] = {}
            for master in (False, True):
                times = _step_ms(rom, d_model, n_layer, batch, args.seq_len, master, args.steps)
                torch.cuda.empty_cache()
                ms = statistics.median(times)
                by[master] = ms
                rows.append({"model": label, "policy": "master weights" if master else "fp32 params",
                             "batch": batch, "seq_len": args.seq_len, "step_ms": ms,
                             "tokens_per_s": batch * args.seq_len / (ms / 1e3), "step_ms_min": min(times),
                             "step_ms_max": max(times)})
                print(rows[-1], flush=True)
            rows[-1]["speedup_vs_fp32_params"] = by[False] / by[True]
    update_rows = _update_alone()
    payload = {"benchmark": "master_weights_step", "device": facts, "results": rows, "update_alone": update_rows,
               "note": "graphed forward+backward, eager clip + update + zeroing; the trainer's optimizers; "
                       f"median of {args.steps} steps after 3 warm-up steps; one model per (size, policy)"}
    path = write_result("gpu_master_weights", payload, args.out_dir)
    print(f"\nwrote {path}; {facts['gpu']} torch {facts['torch']} triton {facts['triton']}")
    print_table(rows, ["model", "policy", "batch", "step_ms", "tokens_per_s", "speedup_vs_fp32_params"])
    print_table(update_rows, ["update", "weights", "elements_G", "ms", "TB_per_s_at_28_bytes"])


if __name__ == "__main__":
    main()
