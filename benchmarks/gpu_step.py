"""Whole training step on one GPU: tokens/s and MFU for dense Mamba and RoM (8 experts) at three sizes.

A step = forward (bf16 autocast, fp32 parameters) + cross-entropy + aux loss + backward + AdamW update.
MFU = (training FLOPs per token from rom.accounting) x tokens/s / the measured bf16 matmul rate of this GPU
(also reported against the 989 TFLOP/s H100 SXM datasheet figure).

Kernels compared, each run eagerly and with forward+backward replayed as one CUDA graph (``+graph``, what
``train.cuda_graphs`` does; ``--no-graphs`` skips those):

- ``auto``: ours (Triton scan and conv, the mixers' fused inner path, our expert kernels);
- ``mamba_ssm_layers`` (dense models, when mamba-ssm is installed): the same model built on mamba-ssm's own
  ``Mamba`` layers, i.e. every mixer replaced by ``mamba_ssm.modules.mamba_simple.Mamba`` (same d_model,
  d_state, d_conv, expand, dt_rank), running its fused ``mamba_inner_fn``. causal-conv1d is not built here
  (~570 s for sm_90), so our Triton conv stands in for its CUDA conv (``mamba_ssm_anchor``): that is mamba-ssm's
  fastest path available, 1.25x faster than its path without causal-conv1d in the layer benchmark;
- ``mamba_ssm``: our model with mamba-ssm's ``selective_scan_fn`` as the scan (the mixers' modules called in
  turn: each mixer swapped for its twin built with ``fused_inner=False``, which shares all its weights;
  everything else ours). mamba-ssm has no RoM layer, so for RoM models this is the only anchor.

``auto`` and ``mamba_ssm`` run in the *same* model instance (the same parameters), with the same optimizer;
``mamba_ssm_layers`` is a second instance of the same config. (Until 2026-12-03 only the SelectiveScan modules were switched, which
the fused inner path added on 2026-12-02 does not read: the 2026-12-03 call that showed this compared our scan
with itself, graphed ratios 0.999-1.001, and was discarded.)

Variants are timed in alternating rounds (A B C D, D C B A, ...) of a few steps each, so that drift of this
shared host (clocks, neighbours) falls on all alike; the spread of the per-round ratios is reported with the
median.

    python benchmarks/gpu_step.py [--seq-len 2048] [--rounds 4] [--steps 4] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import device_facts, measure_matmul_tflops, print_table, write_result  # noqa: E402
from mamba_ssm_anchor import mamba_ssm_fused_with_our_conv  # noqa: E402

from rom.accounting import count_flops, count_params  # noqa: E402
from rom.config import MambaConfig, ModelConfig, Pattern, Precision, RoMConfig  # noqa: E402
from rom.layers.mamba import MambaMixer, SelectiveScan  # noqa: E402
from rom.layers.rom import RoMMixer  # noqa: E402
from rom.models import build_model  # noqa: E402
from rom.train.cuda_graph import CapturedStep, micro_batch_loss  # noqa: E402

# (name, d_model, n_layer, batch): ~15M, ~115M, ~350M dense parameters with vocab 32000
SIZES = [("15m", 256, 12, 16), ("115m", 768, 24, 8), ("350m", 1024, 48, 4)]
DATASHEET_TFLOPS = 989.0


def _cfg(d_model: int, n_layer: int, rom: bool) -> ModelConfig:
    return ModelConfig(d_model=d_model, n_layer=n_layer, vocab_size=32000,
                       pattern=Pattern.ROM if rom else Pattern.MAMBA, mamba=MambaConfig(d_state=16),
                       rom=RoMConfig(num_experts=8, top_k=1))


def _unfused_twin(mixer: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    """``mixer`` built again with ``fused_inner=False`` (its conv, projection and scan modules called in turn),
    holding the very same parameters and submodules: one optimizer and one set of gradients serve both."""
    with torch.device("meta"):  # its own weights are replaced by the mixer's below
        if isinstance(mixer, RoMMixer):
            twin = RoMMixer(cfg.d_model, cfg.mamba, cfg.rom, cfg.dt_rank, mixer.backend, fused_inner=False)
        else:
            twin = MambaMixer(cfg.d_model, cfg.mamba, cfg.dt_rank, mixer.backend, fused_inner=False)
    for name, child in mixer.named_children():
        setattr(twin, name, child)
    for name, param in mixer.named_parameters(recurse=False):
        setattr(twin, name, param)
    return twin


def _set_scan_backend(trainee: "_Trainee", backend: str) -> None:
    """Our scan ("auto") runs inside the mixers' fused inner path (rom.kernels.inner_path), which does not go
    through the SelectiveScan modules; any other scan backend runs in the mixers' unfused twins (their modules
    called in turn), where the SelectiveScan modules' backend applies and everything else stays ours."""
    for block, fused, unfused in trainee.mixers:
        block.mixer = fused if backend == "auto" else unfused
    for m in trainee.model.modules():
        if isinstance(m, SelectiveScan):
            m.backend = backend


class _MambaSsmMixer(torch.nn.Module):
    """mamba-ssm's ``Mamba`` in a block's mixer slot (our mixers return (output, router stats))."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        return self.layer(x), []


def _build(cfg: ModelConfig, mamba_ssm_layers: bool) -> torch.nn.Module:
    """Our LM, or (``mamba_ssm_layers``, dense only) the same LM with every mixer replaced by mamba-ssm's own
    ``Mamba`` layer: its fused ``mamba_inner_fn``, with our conv in causal-conv1d's place (mamba_ssm_anchor)."""
    torch.manual_seed(0)
    with torch.device("cuda"):  # initialise on the GPU: a 2.5B-parameter model is slow to build on the CPU
        model = build_model(cfg, backend="auto")
    if mamba_ssm_layers:
        for block in model.layers:
            layer, note = mamba_ssm_fused_with_our_conv(cfg.d_model, cfg.mamba.d_state)
            if layer is None:
                raise RuntimeError(f"mamba-ssm layers: {note}")
            block.mixer = _MambaSsmMixer(layer)
    return model


class _Trainee:
    """One model and its optimizer, stepped eagerly or through one captured graph per scan backend."""

    def __init__(self, model: torch.nn.Module, ids: list[torch.Tensor], cfg: ModelConfig) -> None:
        self.model, self.ids = model, ids
        # our mixers beside their unfused twins (the scan backend switch swaps them, see _set_scan_backend)
        self.mixers = [(block, block.mixer, _unfused_twin(block.mixer, cfg)) for block in model.layers
                       if isinstance(block.mixer, (MambaMixer, RoMMixer))]
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.static_ids = ids[0].clone()
        self.captured: dict[str, CapturedStep] = {}
        self.grads: dict[torch.nn.Parameter, torch.Tensor] = {}

    def forward_backward(self, x: torch.Tensor) -> None:  # the trainer's micro-batch (bf16 autocast on CUDA)
        micro_batch_loss(self.model, x[:, :-1], x[:, 1:], 1, x.device, Precision.AUTO)

    def eager_step(self, i: int) -> None:
        self.forward_backward(self.ids[i % 2])
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def capture(self, backend: str) -> None:  # all captures of one model share the same .grad tensors
        self.captured[backend] = CapturedStep(lambda: self.forward_backward(self.static_ids), self.model.parameters())
        self.grads = {p: p.grad for p in self.model.parameters() if p.grad is not None}

    def graph_step(self, backend: str, i: int) -> None:
        self.static_ids.copy_(self.ids[i % 2])
        self.captured[backend].replay()
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)  # in place: the graph adds into these tensors

    def restore_graph_grads(self) -> None:  # an eager round set the grads to None: hand the graph's back
        for p, g in self.grads.items():
            p.grad = g.zero_()


# a variant's kernels: (model, scan backend); "layers" = the model built on mamba-ssm's Mamba layers
KERNELS = {"auto": ("ours", "auto"), "mamba_ssm": ("ours", "mamba_ssm"),
           "mamba_ssm_layers": ("mamba_ssm_layers", "auto")}


def _time_rounds(cfg: ModelConfig, kernels: list[str], batch: int, seq_len: int, rounds: int,
                 steps: int, graphs: bool) -> tuple[dict[str, list[list[float]]], dict[str, str]]:
    """Step times (ms) per variant and round, and the variants that could not run (with why).

    ``kernels`` are keys of KERNELS: "auto" and "mamba_ssm" run in one model whose scan backend is switched
    between rounds; "mamba_ssm_layers" is a second model (same config, mamba-ssm's layers as mixers). With
    ``graphs`` each also runs as its step replayed as a CUDA graph (rom.train.cuda_graph, as
    ``train.cuda_graphs`` runs it): "<kernels>" and "<kernels>+graph".
    """
    ids = [torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device="cuda") for _ in range(2)]
    trainees = {name: _Trainee(_build(cfg, name == "mamba_ssm_layers"), ids, cfg)
                for name in dict.fromkeys(KERNELS[k][0] for k in kernels)}
    variants = kernels + ([f"{k}+graph" for k in kernels] if graphs else [])
    skipped: dict[str, str] = {}

    def run(variant: str, i: int) -> None:
        kernel, _, graph = variant.partition("+")
        name, backend = KERNELS[kernel]
        trainee = trainees[name]
        _set_scan_backend(trainee, backend)
        if graph:
            trainee.graph_step(backend, i)
        else:
            trainee.eager_step(i)

    for kernel in kernels:  # warm-up: compilation, allocator, cuBLAS handles
        for i in range(3):
            run(kernel, i)
    if graphs:
        for kernel in kernels:
            name, backend = KERNELS[kernel]
            _set_scan_backend(trainees[name], backend)
            try:
                trainees[name].capture(backend)
            except Exception as err:  # noqa: BLE001 - e.g. a host synchronisation in a third-party kernel
                skipped[f"{kernel}+graph"] = f"capture failed: {type(err).__name__}: {str(err)[:200]}"
                print(f"{kernel}+graph: {skipped[f'{kernel}+graph']}", flush=True)
                torch.cuda.synchronize()
        variants = [v for v in variants if v not in skipped]
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times: dict[str, list[list[float]]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            if variant.endswith("+graph"):
                trainees[KERNELS[variant.partition("+")[0]][0]].restore_graph_grads()
            run(variant, 0)  # untimed: the switch (backend, grads) settles
            round_ms = []
            for i in range(steps):
                start.record()
                run(variant, i)
                end.record()
                end.synchronize()
                round_ms.append(start.elapsed_time(end))
            times[variant].append(round_ms)
    return times, skipped   # the models and optimizers go with this frame; the caller empties the cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--sizes", default="15m,115m,350m")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per backend")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--no-graphs", action="store_true", help="eager steps only (no CUDA-graph variants)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    facts = device_facts()
    peak = measure_matmul_tflops()
    kernels = ["auto"]
    try:
        from rom.kernels import resolve

        resolve("selective_scan", "mamba_ssm", torch.device("cuda"))
        kernels.append("mamba_ssm")
    except Exception as err:  # noqa: BLE001
        print(f"mamba_ssm backend not available: {err}")
    else:
        try:
            importlib.import_module("mamba_ssm.modules.mamba_simple")
            kernels.append("mamba_ssm_layers")
        except Exception as err:  # noqa: BLE001 - its scan can still be compared
            print(f"mamba-ssm's Mamba layer not available: {type(err).__name__}: {err}")
    rows: list[dict[str, Any]] = []
    wanted = set(args.sizes.split(","))
    t_start = time.time()
    summary: list[dict[str, Any]] = []
    for name, d_model, n_layer, batch in SIZES:
        if name not in wanted:
            continue
        for rom in (False, True):
            cfg = _cfg(d_model, n_layer, rom)
            params = count_params(cfg)
            flops_tok = count_flops(cfg, args.seq_len).train
            label = f"{'rom-e8' if rom else 'dense'}-{name}"
            bsz = batch
            while True:
                try:
                    # mamba-ssm has no RoM layer: RoM models compare scans only
                    wanted_kernels = [k for k in kernels if not (rom and k == "mamba_ssm_layers")]
                    times, skipped = _time_rounds(cfg, wanted_kernels, bsz, args.seq_len, args.rounds,
                                                  args.steps, graphs=not args.no_graphs)
                    torch.cuda.empty_cache()
                    break
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    if bsz == 1:
                        raise
                    bsz //= 2
            by_variant: dict[str, dict[str, Any]] = {}
            for variant in times:
                ms = statistics.median([t for rnd in times[variant] for t in rnd])
                tok_s = bsz * args.seq_len / (ms / 1e3)
                rows.append({"model": label, "backend": variant, "params_total_M": params.total / 1e6,
                             "params_active_M": params.active / 1e6, "batch": bsz, "seq_len": args.seq_len,
                             "step_ms": ms, "tokens_per_s": tok_s,
                             "mfu_measured_peak": flops_tok * tok_s / (peak * 1e12),
                             "mfu_datasheet": flops_tok * tok_s / (DATASHEET_TFLOPS * 1e12),
                             "train_flops_per_token": flops_tok,
                             "step_ms_per_round": [statistics.median(rnd) for rnd in times[variant]]})
                by_variant[variant] = rows[-1]
                print(rows[-1], f"[{time.time() - t_start:.0f}s]", flush=True)
            # (name, faster candidate, slower baseline): tokens/s ratios, per alternating round too
            for variant, why in skipped.items():
                rows.append({"model": label, "backend": variant, "batch": bsz, "seq_len": args.seq_len,
                             "note": why})
            pairs = [("ours/mamba_ssm layers eager", "auto", "mamba_ssm_layers"),
                     ("ours/mamba_ssm layers graphs", "auto+graph", "mamba_ssm_layers+graph"),
                     ("ours/mamba_ssm scan eager", "auto", "mamba_ssm"),
                     ("ours/mamba_ssm scan graphs", "auto+graph", "mamba_ssm+graph"),
                     ("ours graphs/eager", "auto+graph", "auto")]
            for what, a, b in pairs:
                if a in by_variant and b in by_variant:
                    per_round = [tb / ta for ta, tb in zip(by_variant[a]["step_ms_per_round"],
                                                           by_variant[b]["step_ms_per_round"])]
                    summary.append({"model": label, "ratio": what,
                                    "tokens_per_s_ratio": by_variant[b]["step_ms"] / by_variant[a]["step_ms"],
                                    "per_round_min": min(per_round), "per_round_max": max(per_round)})
    payload = {"benchmark": "train_step", "device": facts, "matmul_peak_tflops_measured": peak,
               "datasheet_tflops": DATASHEET_TFLOPS, "results": rows, "ratios": summary,
               "note": (f"bf16 autocast, fp32 params, fused AdamW; per size our model (scan backend switched) and, "
                        f"for dense models, the same model on mamba-ssm's Mamba layers, timed in "
                        f"{args.rounds} alternating rounds of {args.steps} steps (after one untimed step) "
                        f"per variant, after 3 warm-up steps per backend; '+graph' = forward+backward replayed as "
                        f"one CUDA graph (rom.train.cuda_graph), optimizer eager; median over all timed steps")}
    path = write_result("gpu_step", payload, args.out_dir)
    print(f"\nwrote {path}; measured bf16 matmul peak {peak:.0f} TFLOP/s; {facts['gpu']} torch {facts['torch']}")
    print_table(rows, ["model", "backend", "params_total_M", "params_active_M", "batch", "step_ms", "tokens_per_s",
                       "mfu_measured_peak"])
    if summary:
        print_table(summary, ["model", "ratio", "tokens_per_s_ratio", "per_round_min", "per_round_max"])


if __name__ == "__main__":
    main()
