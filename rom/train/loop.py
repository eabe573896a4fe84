"""The training loop: token budget, micro-batches, bf16 autocast on CUDA, clip, schedule, validation, metrics,
atomic checkpoints (periodic and on SIGTERM/SIGINT), exact resume, DDP/FSDP2 under torchrun.

``train(cfg, data_dir, out_dir)`` returns the record's train part and writes, on rank 0 only:
RUN_DIR/metrics.jsonl, train.log, checkpoint/ (removed after a completed run), model.safetensors, train.json.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rom.config import ConfigError, Parallelism, RunConfig, TrainConfig, to_dict
from rom.env import package_versions
from rom.data.identity import TOKENIZER_KEY, check_tokenizer, shard_identity, tokenizer_identity
from rom.eval.perplexity import score_windows, spread_window_ids
from rom.io import atomic_write_json
from rom.models.files import MODEL_FILE, save_model
from rom.models.precision import precision_name
from rom.records import load_json, make_part, now_iso
from rom.train import distributed as D
from rom.train import factory
from rom.train.checkpoint import (CheckpointError, check_same_run, checkpoint_dir, load_checkpoint, rng_state,
                                  save_checkpoint, set_rng_state)
from rom.train.cuda_graph import GraphedMicroStep, micro_batch_loss
from rom.train.metrics import MetricsWriter, router_metrics
from rom.train.master_weights import to_working_weights
from rom.train.optim import build_optimizer
from rom.train.peaks import mfu, peak_flops
from rom.train.schedule import LRSchedule

# Passes over the training split above which a run is warned about (train.log and stderr): repeated tokens
# stop being as good as fresh ones (Muennighoff et al. 2023: up to ~4 epochs is nearly as good as unique data)
MAX_PASSES = 4
TRAIN_PART = "train.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
# Test hook: "STEP:SIGNAL" makes the process send itself SIGNAL right after optimizer step STEP.
KILL_HOOK_ENV = "ROM_TEST_SIGNAL_AT_STEP"
# The same for the steps of a cooldown branch (numbered like the main run's: the branch continues its steps).
BRANCH_KILL_HOOK_ENV = "ROM_TEST_SIGNAL_AT_BRANCH_STEP"


# `rom train`'s exit status for a run that diverged (non-finite loss): train.json is written and says why
# (training.diverged, training.divergence); docs/interfaces.md lists the exit codes
DIVERGED_EXIT_CODE = 3


class TrainingInterrupted(Exception):
    """Stopped by a signal after writing a checkpoint; ``exit_code`` = 128 + signal number."""

    def __init__(self, signum: int, step: int, path: Path) -> None:
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: checkpoint of step {step} written to {path}; run the same "
                         f"command again to resume")


# ----------------------------------------------------------------------------------------- helpers


def _setup_log(run_dir: Path, enabled: bool) -> logging.Logger:
    logger = logging.getLogger(f"rom.train.{run_dir}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if enabled:
        handler = logging.FileHandler(run_dir / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(cfg: RunConfig, device: torch.device) -> dict:
    return {
        "git_sha": _git_sha(),
        "config_hash": cfg.config_hash(),
        "packages": package_versions(),
        "device": device_name(device),
        "python": platform.python_version(),
        "created": now_iso(),
    }


def model_summary(cfg: RunConfig) -> dict:
    m = cfg.model
    rom = m.uses_rom
    out = {
        "d_model": m.d_model,
        "n_layer": m.n_layer,
        "pattern": m.pattern.value,
        "num_experts": m.rom.num_experts if rom else 1,
        "top_k": m.rom.top_k if rom else 1,
        "routing": m.rom.routing.value if rom else "none",
        "expert_projections": [p.value for p in m.rom.expert_projections] if rom else [],
        "mlp": m.mlp.value,
    }
    if m.mlp.value == "moe":
        out["moe_num_experts"], out["moe_top_k"] = m.moe.num_experts, m.moe.top_k
    return out


def param_summary(cfg: RunConfig) -> dict:
    from rom.accounting import count_params

    p = count_params(cfg.model)
    out = p.to_dict()  # components: {name: {total, active}}
    for key in ("total", "active", "total_nonembedding", "active_nonembedding", "embedding"):
        out[key] = int(out[key])
    return out


def train_flops_per_token(cfg: RunConfig) -> float | None:
    try:
        from rom.accounting import count_flops
    except ImportError:
        return None
    return float(count_flops(cfg.model, cfg.train.seq_len).train)


def _batch_layout(cfg: RunConfig, world: int) -> tuple[int, int]:
    """(micro-batch size per rank, accumulation steps) for the global batch train.batch_size."""
    t = cfg.train
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by the number of processes ({world})")
    per_rank = t.batch_size // world
    micro = t.micro_batch_size or per_rank
    if micro > per_rank or per_rank % micro:
        raise ConfigError(
            f"train.micro_batch_size={micro} must divide the per-process batch {per_rank} "
            f"(train.batch_size={t.batch_size} over {world} processes)"
        )
    return micro, per_rank // micro


def prepare_run_dir(run_dir: Path, cfg: RunConfig) -> dict | None:
    """Refuse a directory of another run (checkpoint or train part); return the checkpoint meta if any."""
    meta = check_same_run(run_dir, cfg.run_id, cfg.config_hash())
    part = run_dir / TRAIN_PART
    if meta is None and part.exists():
        try:
            other = load_json(part).get("run_id")
        except Exception:  # noqa: BLE001 - an unreadable old part is simply replaced
            other = None
        if other is not None and other != cfg.run_id:
            raise CheckpointError(
                f"{part}: this output directory holds run {other!r}, not {cfg.run_id!r}; use another --out"
            )
    return meta


class _StopFlag:
    """Records SIGTERM/SIGINT; the loop checks it between optimizer steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _test_hook(env: str = KILL_HOOK_ENV) -> tuple[int, int] | None:
    spec = os.environ.get(env)
    if not spec:
        return None
    step, name = spec.split(":")
    return int(step), int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))


# ----------------------------------------------------------------------------------------- the loop


def train(cfg: RunConfig, data_dir: str | Path, out_dir: str | Path, device: str | None = None) -> dict:
    """Train ``cfg`` on the shards in ``data_dir``; write the run into ``out_dir``; return the train part."""
    info = D.init_distributed(device)
    try:
        with deterministic_mode(cfg.train.deterministic):
            return _train(cfg, Path(data_dir), Path(out_dir), info)
    finally:
        D.shutdown(info)


CUBLAS_WORKSPACE = ":4096:8"  # the cuBLAS workspace setting that makes its GEMMs deterministic


@contextlib.contextmanager
def deterministic_mode(on: bool):
    """train.deterministic: deterministic torch algorithms (warn_only: an op that has no deterministic version
    warns instead of failing), cuDNN without autotuning, cuBLAS with a fixed workspace (set before the first
    CUDA matmul of the process, unless the environment already sets it); attention then takes a deterministic
    path on CUDA (rom.layers.attention.sdpa). The previous settings are restored on exit."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def cuda_graphs_decision(t: TrainConfig, info: D.DistInfo) -> tuple[bool, str]:
    """(replay the micro-batch step as a CUDA graph?, why) for ``train.cuda_graphs`` on this run's process.

    Unset means "wherever it can run"; true raises where it cannot, except on CPU (a warning, so one config
    serves both); false never captures.
    """
    if t.cuda_graphs is False:
        return False, "train.cuda_graphs=false"
    if info.device.type != "cuda":
        return False, f"device {info.device} is not CUDA"
    if info.distributed:
        if t.cuda_graphs is True:
            raise ConfigError(f"train.cuda_graphs=true runs one CUDA process; this run has {info.world_size} "
                              f"(torchrun): set train.cuda_graphs=false or leave it unset")
        return False, f"{info.world_size} processes (DDP / FSDP hooks are not captured)"
    if t.compile:
        return False, "train.compile is on (torch.compile has its own CUDA graphs, mode='reduce-overhead')"
    return True, "one CUDA process" + ("" if t.cuda_graphs else " (train.cuda_graphs unset)")


def check_master_weights(t: TrainConfig, info: D.DistInfo) -> None:
    """train.master_weights needs bf16 autocast (the working weights are bf16) and no FSDP (which shards and
    casts parameters itself: its MixedPrecisionPolicy is the equivalent)."""
    if precision_name(info.device, t.precision) != "bf16":
        raise ConfigError(f"train.master_weights=true needs bf16 autocast, but train.precision={t.precision.value} "
                          f"is fp32 on {info.device}; set train.precision: bf16")
    if info.distributed and t.parallelism == Parallelism.FSDP:
        raise ConfigError("train.master_weights=true is not supported with train.parallelism=fsdp (FSDP2 keeps "
                          "fp32 shards and casts them itself); use ddp or turn master_weights off")


def _train(cfg: RunConfig, data_dir: Path, run_dir: Path, info: D.DistInfo) -> dict:
    t = cfg.train
    main = info.is_main
    run_id, config_hash = cfg.run_id, cfg.config_hash()
    micro, accum = _batch_layout(cfg, info.world_size)
    use_graphs, graphs_reason = cuda_graphs_decision(t, info)
    total_steps = t.steps
    tokens_per_step = t.tokens_per_step
    if t.threads:
        torch.set_num_threads(t.threads)

    # Inputs first: fail before touching the output directory.
    train_shard = factory.open_shard(data_dir, "train")
    val_shard = factory.open_shard(data_dir, "val")
    factory.check_vocab(cfg.model, train_shard, f"{data_dir / 'train.json'}")
    data_identity = shard_identity(train_shard.meta)
    tokenizer_sha = data_identity[TOKENIZER_KEY]
    check_tokenizer(tokenizer_sha, train_shard.meta_path, tokenizer_identity(val_shard.meta), val_shard.meta_path,
                    "tokenize both splits with one tokenizer (`rom tokenize` writes both)")
    params = param_summary(cfg)  # fail fast if the accounting cannot describe this model
    val_windows = min(t.eval_batches * micro * info.world_size, max(0, (len(val_shard.tokens) - 1) // t.seq_len))
    val_windows -= val_windows % info.world_size
    if val_windows == 0:
        raise ConfigError(f"{data_dir / 'val.bin'}: {len(val_shard.tokens)} tokens, too few for one validation "
                          f"window of {t.seq_len + 1} tokens per process")
    flops_per_token = train_flops_per_token(cfg)

    meta = prepare_run_dir(run_dir, cfg)
    if meta is not None:  # resume: the checkpoint's data must be this data
        check_tokenizer(tokenizer_identity(meta), checkpoint_dir(run_dir) / "meta.json", tokenizer_sha,
                        train_shard.meta_path,
                        f"resume with the --data directory the run started on, or start over in another --out "
                        f"(or remove {checkpoint_dir(run_dir)})")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    log = _setup_log(run_dir, main)
    metrics = MetricsWriter(run_dir / METRICS_FILE, enabled=main)
    planned_passes = total_steps * tokens_per_step / max(1, len(train_shard.tokens))
    if planned_passes > MAX_PASSES:
        message = (f"{run_id}: {total_steps * tokens_per_step} training tokens are {planned_passes:.2f} passes over the "
                   f"{len(train_shard.tokens)}-token training split, more than {MAX_PASSES} (repeated data: the "
                   f"loss is no longer that of fresh tokens); lower train.tokens or use a larger corpus")
        log.warning(message)
        if main:
            print(f"warning: {message}", file=sys.stderr)

    torch.manual_seed(t.seed)
    np.random.seed(t.seed % (2**32))
    import random

    random.seed(t.seed)
    raw = factory.make_model(cfg.model, t.backend.value).to(info.device)
    measured = sum(p.numel() for p in raw.parameters())
    if measured != params["total"]:
        log.warning("accounting says %d parameters, the built model has %d", params["total"], measured)
    pairs = None  # train.master_weights: name -> (bf16 working weight, fp32 master)
    if t.master_weights:
        check_master_weights(t, info)
        pairs = to_working_weights(raw)
        log.info("master weights: %d projection weights in bf16, fp32 masters in the optimizer", len(pairs))
    model = D.wrap_model(raw, info, t.parallelism)
    optimizer = build_optimizer(raw, t, pairs)
    schedule = LRSchedule(optimizer, t, total_steps)
    loader = factory.make_loader(train_shard, t.seq_len, micro, t.seed, info.rank, info.world_size)
    forward = torch.compile(model) if t.compile else model
    layout = "fsdp" if (info.distributed and t.parallelism == Parallelism.FSDP) else "full"

    step, losses, elapsed, val_loss = 0, [], 0.0, None
    # per-step (loss, ce, aux, grad_norm) rows, already averaged over ranks, of steps not yet in a metrics line:
    # saved by a signal's checkpoint and restored on resume, so the resumed log equals an uninterrupted one
    carried: list[list[float]] = []
    divergence: str | None = None  # why the run stopped as diverged (train.json training.divergence)
    # cooldown branches (train.cooldown_branches): the step each one's decay starts at; the finished ones' records
    branch_start = {f: t.branch_steps(f) - t.decay_steps(t.branch_steps(f)) for f in t.cooldown_branches}
    branches: list[dict] = []

    def restore(state: dict) -> None:
        """Model, optimizer, schedule, loader and RNG exactly as ``state`` (a checkpoint) holds them."""
        D.load_full_state(raw, optimizer, state["model"], state["optimizer"], info, t.parallelism)
        schedule.load_state_dict(state["schedule"])
        loader.load_state_dict(state["loader"][info.rank])
        set_rng_state(state["rng"][info.rank])

    state = load_checkpoint(run_dir, run_id, config_hash) if meta is not None else None
    if state is not None:
        if state["layout"] != layout or state["world_size"] != info.world_size:
            raise CheckpointError(
                f"{checkpoint_dir(run_dir)}: saved with {state['world_size']} process(es) and {state['layout']} "
                f"state; resume with the same number of processes and train.parallelism"
            )
        if state.get("fallback"):
            log.warning("%s", state["fallback"])
            if main:
                print(f"warning: {state['fallback']}", file=sys.stderr)
        restore(state)
        step, losses, elapsed = int(state["step"]), list(state["losses"]), float(state["elapsed_s"])
        val_loss = state.get("val_loss")
        branches = list(state.get("branches", []))
        # steps a signal cut off before their metrics line: that line still averages them (issue 28)
        carried = [list(map(float, r)) for r in state.get("pending_rows", [])]
        metrics.truncate_after(step, [b["fraction"] for b in branches])
        log.info("resumed %s from step %d of %d (%s)", run_id, step, total_steps, checkpoint_dir(run_dir))
        del state
    else:
        metrics.reset()
        log.info("start %s: %d steps x %d tokens (batch %d = %d ranks x %d micro x %d accumulation), device %s",
                 run_id, total_steps, tokens_per_step, t.batch_size, info.world_size, micro, accum,
                 device_name(info.device))

    def checkpoint(tag: str = "", pending_rows: list[list[float]] | None = None) -> Path:
        msd, osd = D.full_state(raw, optimizer, info, t.parallelism)
        rngs = D.gather_objects(info, rng_state())
        loaders = D.gather_objects(info, loader.state_dict())
        path = checkpoint_dir(run_dir)
        if main:
            path = save_checkpoint(run_dir, {
                "step": step, "model": msd, "optimizer": osd, "schedule": schedule.state_dict(),
                "loader": loaders, "rng": rngs, "losses": losses, "elapsed_s": elapsed + (time.perf_counter() - t_session),
                "val_loss": val_loss, "layout": layout, "world_size": info.world_size, "branches": branches,
                "data_identity": data_identity, "pending_rows": pending_rows or [],
            }, run_id, config_hash, tag, extra_meta={TOKENIZER_KEY: tokenizer_sha})
            log.info("checkpoint step %d -> %s", step, path)
        D.barrier(info)
        return path

    def validate() -> float:
        ids = spread_window_ids(len(val_shard.tokens), t.seq_len, val_windows)[info.rank::info.world_size]
        s, c = score_windows(forward, val_shard.tokens, t.seq_len, ids, micro, info.device, t.precision)
        s, c = D.all_reduce_sum(info, [s, float(c)])
        return s / c

    if t.deterministic:
        log.info("deterministic algorithms on (warn_only), CUBLAS_WORKSPACE_CONFIG=%s, attention through SDPA's math "
                 "backend on CUDA", os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if t.cuda_graphs is True and not use_graphs:
        log.warning("train.cuda_graphs=true ignored: %s", graphs_reason)
    else:
        log.info("CUDA graphs %s: %s", "on" if use_graphs else "off", graphs_reason)
    graphed: GraphedMicroStep | None = None  # captured at the first micro-batch when use_graphs

    hook = _test_hook()
    branch_hook = _test_hook(BRANCH_KILL_HOOK_ENV)
    stop = _StopFlag()
    stop.install()
    bar = None
    if main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.name}", unit="step", mininterval=1.0,
                   dynamic_ncols=True, file=sys.stderr)
    peak = peak_flops(torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else None)
    raw.train()
    diverged = False
    last_lr = schedule.current_lr()
    t_session = time.perf_counter()
    pending: list[torch.Tensor] = []  # per step: (loss, ce, aux, grad_norm) on device, read at log time
    router_buffer: list[Any] = []
    # Timing of the current logging window. 'excluded' (validation, checkpoints) is not step time;
    # 'overhead' (metrics, log, progress bar) is measured after the device sync of flush().
    win = {"start": time.perf_counter(), "data": 0.0, "overhead": 0.0, "excluded": 0.0, "steps": 0}
    batches = iter(loader)

    def reduce_pending(values: list[torch.Tensor]) -> list[list[float]]:
        """Per-step rows of ``values`` (one device sync), averaged over ranks; empties ``values``."""
        vals = torch.stack(values).double()
        if info.distributed:
            import torch.distributed as dist

            dist.all_reduce(vals, op=dist.ReduceOp.SUM)
            vals /= info.world_size
        values.clear()
        return vals.cpu().tolist()

    def flush() -> dict[str, Any]:
        """Read pending per-step values (one device sync), average over ranks, append to ``losses``."""
        nonlocal diverged, divergence
        row: dict[str, Any] = {}
        if not pending and not carried:
            return row
        vals_list = carried + (reduce_pending(pending) if pending else [])
        carried.clear()
        t_synced = time.perf_counter()
        losses.extend(v[0] for v in vals_list)
        wall = t_synced - win["start"] - win["excluded"]
        tokens_per_s = tokens_per_step * win["steps"] / wall if wall > 0 else 0.0
        mean = np.mean(vals_list, axis=0)
        row.update({
            "train/loss": float(mean[0]), "train/ce": float(mean[1]), "train/aux_loss": float(mean[2]),
            "grad_norm": float(vals_list[-1][3]), "lr": float(last_lr),
            "perf/tokens_per_s": tokens_per_s, "perf/step_time_s": wall / max(1, win["steps"]),
            "perf/data_time_frac": win["data"] / wall if wall > 0 else 0.0,
            "perf/overhead_frac": (win["data"] + win["overhead"]) / wall if wall > 0 else 0.0,
            "perf/mfu": mfu(flops_per_token, tokens_per_s, peak, info.world_size),
        })
        if info.device.type == "cuda":
            # what this process holds on the card (the allocator's reserve, not only live tensors): what decides how
            # many studies' jobs share one GPU (offline_gpu_study.sh's ROM_GPU_JOB_GIB)
            row["perf/gpu_reserved_gib"] = torch.cuda.max_memory_reserved(info.device) / 2**30
        if router_buffer:
            row.update(router_metrics(router_buffer))
            router_buffer.clear()
        bad = [i for i, v in enumerate(vals_list) if not math.isfinite(v[0])]
        if bad and not diverged:
            diverged = True
            first = step - len(vals_list) + 1 + bad[0]
            divergence = (f"non-finite training loss ({vals_list[bad[0]][0]}) at step {first} "
                          f"(lr {float(last_lr):.3g}, grad norm {vals_list[bad[0]][3]:.3g})")
        # the next window starts at the sync; building this row is its first overhead
        win.update(start=t_synced, data=0.0, overhead=time.perf_counter() - t_synced, excluded=0.0, steps=0)
        return row

    def train_step(sched: LRSchedule, log_step: bool, into: list[torch.Tensor]) -> float:
        """One optimizer step under ``sched``; appends (loss, ce, aux, grad_norm) to ``into``; returns its lr.
        Router statistics are collected on ``log_step``."""
        nonlocal graphed, use_graphs, batches, last_lr
        # a captured step adds into the .grad tensors it was captured with: zero those in place
        optimizer.zero_grad(set_to_none=graphed is None)
        if graphed is not None:
            graphed.captured.check_gradients_in_place()
        ce_sum = torch.zeros((), device=info.device)
        aux_sum = torch.zeros((), device=info.device)
        for i in range(accum):
            t0 = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:  # a finite loader: start its next pass
                batches = iter(loader)
                x, y = next(batches)
            # the loader's time only: a copy from pageable host memory returns once the stream has run the
            # work queued before it, so timing it too measured the GPU's backlog as "data" (0.80-0.87 of the
            # step in every GPU run of the miniature study, against 0.001 on a CPU)
            win["data"] += time.perf_counter() - t0
            x = x.to(info.device, non_blocking=True)
            y = y.to(info.device, non_blocking=True)
            if use_graphs and graphed is None:
                t_capture = time.perf_counter()
                try:
                    graphed = GraphedMicroStep(model, tuple(x.shape), cfg.model.vocab_size, accum,
                                               info.device, t.precision)
                except RuntimeError as err:
                    if t.cuda_graphs is True:
                        raise RuntimeError(f"train.cuda_graphs=true: capturing the micro-batch step "
                                           f"failed ({err}); set train.cuda_graphs=false") from err
                    # unset: this model cannot be replayed (a host synchronisation in its step, say)
                    log.warning("CUDA graphs off: capturing the micro-batch step failed (%s); training "
                                "eagerly (set train.cuda_graphs=false to skip the attempt)", err)
                    use_graphs = False
                    optimizer.zero_grad(set_to_none=True)  # the warm-up's gradients
                else:
                    log.info("captured the micro-batch step as a CUDA graph in %.1f s",
                             time.perf_counter() - t_capture)
            if graphed is not None:
                ce, aux, stats = graphed(x, y)
                if log_step:  # the next replay overwrites them
                    stats = [s.snapshot() for s in stats]
            else:
                # master weights fold every micro-batch's gradients into fp32, so each must be reduced
                with D.set_grad_sync(model, i == accum - 1 or (pairs is not None and accum > 1)):
                    ce, aux, out = micro_batch_loss(forward, x, y, accum, info.device, t.precision)
                stats = getattr(out, "router_stats", None)
            if pairs is not None and accum > 1:
                optimizer.fold_gradients(keep_grad_tensors=graphed is not None)
            ce_sum += ce
            aux_sum += aux.to(ce_sum.device)
            if log_step and stats:
                router_buffer.extend(stats)
        last_lr = optimizer.param_groups[0]["lr"]
        max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
        if pairs is not None:  # the masters' gradients, summed in fp32
            grad_norm = optimizer.clip_grad_norm_(max_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 DTensor
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        sched.step()
        ce_mean, aux_mean = ce_sum / accum, aux_sum / accum
        into.append(torch.stack([ce_mean + aux_mean, ce_mean, aux_mean, grad_norm.float().to(ce_sum.device)]))
        return last_lr

    def run_branch(fraction: float) -> None:
        """The cooldown branch at ``fraction`` of the budget, taken at the current (stable-phase) step.

        Checkpoint (the state the branch starts from and the main run resumes from), decay over the branch's
        own decay steps, validate on the final validation's windows, record, then restore the checkpoint as a
        resume would, so the main run continues bit for bit as without the branch. A signal during the branch
        exits with that checkpoint (the branch runs again on resume); a finished branch is in the next
        checkpoint, written at once, so it is not repeated.
        """
        nonlocal t_session
        t_branch = time.perf_counter()
        if pending or carried:
            metrics.write({"step": step, "tokens": step * tokens_per_step, **flush()})
        if diverged:
            return
        checkpoint(f"-before-branch-{fraction:g}")
        elapsed_before = elapsed + (time.perf_counter() - t_session)
        total_b = t.branch_steps(fraction)
        sched = LRSchedule(optimizer, t, total_b, warmup_steps=schedule.warmup_steps)
        sched.load_state_dict({"step_count": step})
        log.info("cooldown branch at %g of the budget: steps %d-%d decay to %.3g (%s)", fraction, step, total_b,
                 t.lr * t.min_lr_ratio, sched.describe())
        b_step, b_pending, b_losses, b_diverged, lr = step, [], [], False, schedule.current_lr()
        while b_step < total_b:
            if D.any_rank(info, stop.signum is not None):
                signum = stop.signum or signal.SIGTERM
                log.warning("%s during the cooldown branch at %g: exiting; it runs again from the checkpoint of "
                            "step %d on resume", signal.Signals(signum).name, fraction, step)
                raise TrainingInterrupted(signum, step, checkpoint_dir(run_dir))
            lr = train_step(sched, False, b_pending)
            b_step += 1
            if (b_step - step) % t.log_every == 0 or b_step == total_b:
                vals = reduce_pending(b_pending)
                b_losses.extend(v[0] for v in vals)
                mean = np.mean(vals, axis=0)
                metrics.write({"step": step, "branch": {
                    "fraction": fraction, "step": b_step, "tokens": b_step * tokens_per_step,
                    "train/loss": float(mean[0]), "train/ce": float(mean[1]), "train/aux_loss": float(mean[2]),
                    "grad_norm": float(vals[-1][3]), "lr": float(lr)}})
                if not all(math.isfinite(v[0]) for v in vals):
                    b_diverged = True
                    log.error("cooldown branch at %g: non-finite loss at or before its step %d", fraction, b_step)
                    break
            if branch_hook is not None and branch_hook[0] == b_step:
                os.kill(os.getpid(), branch_hook[1])
                time.sleep(0.5)
        b_val = None if b_diverged else validate()
        if b_val is not None:
            metrics.write({"step": step, "branch": {"fraction": fraction, "step": b_step,
                                                    "tokens": b_step * tokens_per_step, "val/loss": b_val}})
        branch_time = time.perf_counter() - t_branch
        saved = load_checkpoint(run_dir, run_id, config_hash)
        if saved is None or int(saved["step"]) != step:
            raise CheckpointError(f"{checkpoint_dir(run_dir)}: the checkpoint written before the cooldown branch "
                                  f"at {fraction} (step {step}) is gone; cannot restore the main run")
        restore(saved)
        del saved
        tail = [v for v in b_losses[-max(1, len(b_losses) // 10):] if math.isfinite(v)]
        branches.append({
            "fraction": fraction,
            "tokens": b_step * tokens_per_step,
            "steps": b_step,
            "start_step": step,
            "passes": b_step * tokens_per_step / max(1, len(train_shard.tokens)),
            "val_loss": b_val,
            "final_train_loss": float(np.mean(tail)) if tail else None,
            "diverged": b_diverged,
            # the main run's time to the branch point plus the branch: what a run of this budget would take
            "wall_time_s": elapsed_before + branch_time,
            "branch_time_s": branch_time,
            "schedule": sched.describe(),
        })
        log.info("cooldown branch at %g: %d tokens, validation loss %s, %.1f s; main run restored at step %d",
                 fraction, b_step * tokens_per_step, "n/a" if b_val is None else f"{b_val:.4f}", branch_time, step)
        win["excluded"] += time.perf_counter() - t_branch
        t_session += time.perf_counter() - t_branch  # the main run's time excludes the branch
        checkpoint(f"-after-branch-{fraction:g}")

    try:
        while step < total_steps and not diverged:
            if D.any_rank(info, stop.signum is not None):
                break
            log_step = (step + 1) % t.log_every == 0 or step + 1 == total_steps
            for fraction, start in branch_start.items():
                if start == step and fraction not in {b["fraction"] for b in branches}:
                    run_branch(fraction)
            train_step(schedule, log_step, pending)
            step += 1
            win["steps"] += 1

            row: dict[str, Any] = {}
            if log_step:
                row = flush()
            t_log = time.perf_counter()
            if t.eval_every and step % t.eval_every == 0 and step < total_steps and not diverged:
                val_loss = validate()
                row["val/loss"] = val_loss
                win["excluded"] += time.perf_counter() - t_log
                t_log = time.perf_counter()
            if row:
                metrics.write({"step": step, "tokens": step * tokens_per_step, **row})
                if bar is not None and "train/loss" in row:
                    bar.set_postfix(loss=f"{row['train/loss']:.4f}", refresh=False)
                if "train/loss" in row:
                    log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3g tok/s %.0f", step, total_steps,
                             row["train/loss"], row["lr"], row["grad_norm"], row["perf/tokens_per_s"])
            if bar is not None:
                bar.update(1)
            win["overhead"] += time.perf_counter() - t_log
            if diverged:
                break
            if step % t.checkpoint_every == 0 and step < total_steps:
                if pending or carried:
                    metrics.write({"step": step, "tokens": step * tokens_per_step, **flush()})
                if diverged:  # never checkpoint a non-finite state
                    break
                t_ckpt = time.perf_counter()
                checkpoint()
                win["excluded"] += time.perf_counter() - t_ckpt
            if hook is not None and hook[0] == step:
                os.kill(os.getpid(), hook[1])
                time.sleep(0.5)  # let an asynchronous signal land before the next step

        signalled = D.any_rank(info, stop.signum is not None)
        interrupted = signalled and step < total_steps and not diverged
        rows: list[list[float]] = []
        if interrupted:
            # no metrics line at the signal's step: the unlogged steps go into the checkpoint and the next
            # line after the resume averages them, as an uninterrupted run's would
            rows = carried + (reduce_pending(pending) if pending else [])
            carried.clear()
            if not all(math.isfinite(v[0]) for v in rows):  # never checkpoint a non-finite state
                carried.extend(rows)
                interrupted = False
        if (pending or carried) and not interrupted:
            metrics.write({"step": step, "tokens": step * tokens_per_step, **flush()})
        if interrupted:
            signum = stop.signum or signal.SIGTERM
            path = checkpoint(pending_rows=rows)
            log.warning("%s at step %d: checkpoint written, exiting", signal.Signals(signum).name, step)
            raise TrainingInterrupted(signum, step, path)
    finally:
        stop.restore()
        if bar is not None:
            bar.close()

    if diverged:
        divergence = divergence or f"non-finite training loss at or before step {step}"
        log.error("non-finite loss at or before step %d: training stopped, run recorded as diverged (%s)", step,
                  divergence)
    else:
        val_loss = validate()
        metrics.write({"step": step, "tokens": step * tokens_per_step, "val/loss": val_loss})
        log.info("final validation loss %.4f", val_loss)
    elapsed += time.perf_counter() - t_session

    msd, _ = D.full_state(raw, None, info, t.parallelism)
    if pairs is not None:  # the model file holds fp32 weights under either policy
        msd = optimizer.with_masters(msd)
    tokens = step * tokens_per_step
    tail = [v for v in losses[-max(1, len(losses) // 10):] if math.isfinite(v)]
    part = make_part("train", run_id, {
        "name": cfg.name,
        "study": cfg.study,
        "role": cfg.role,
        "family": cfg.model.family,
        "config": to_dict(cfg),
        "config_hash": config_hash,
        "model": model_summary(cfg),
        "params": params,
        "training": {
            "tokens": tokens,
            "steps": step,
            "seq_len": t.seq_len,
            "batch_size": t.batch_size,
            "passes": tokens / max(1, len(train_shard.tokens)),
            "wall_time_s": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
            # null when no finite loss was logged (a run that diverged at once): train.json is strict JSON
            "final_train_loss": float(np.mean(tail)) if tail else None,
            "final_val_loss": val_loss,
            "seed": t.seed,
            "device": device_name(info.device),
            "precision": precision_name(info.device, t.precision),
            "backend": t.backend.value,
            "world_size": info.world_size,
            "parallelism": t.parallelism.value if info.distributed else "none",
            "diverged": diverged,
            "divergence": divergence,  # why it diverged (null when it did not)
            "deterministic": t.deterministic,
            "schedule": schedule.describe(),
            "branch_time_s": sum(b["branch_time_s"] for b in branches),
        },
        # cooldown branches (train.cooldown_branches): each a point of its own token budget, see docs/interfaces.md
        "branches": branches,
        "provenance": provenance(cfg, info.device),
        "metrics_file": METRICS_FILE,
        # which tokenizer (and corpus split) made the training tokens: rom.data.identity
        "data_identity": data_identity,
    })
    if main:
        save_model(run_dir, cfg, msd, metadata={"data_identity": data_identity, TOKENIZER_KEY: tokenizer_sha})
        atomic_write_json(run_dir / TRAIN_PART, part)
        import shutil

        shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
        log.info("done: %d tokens in %.1f s (%.0f tokens/s); wrote %s and %s", tokens, elapsed,
                 part["training"]["tokens_per_s"], run_dir / MODEL_FILE, run_dir / TRAIN_PART)
    D.barrier(info)
    return part
