"""The eval and downstream parts of a run record: score a trained run and assemble the part.

``rom eval`` and ``rom downstream`` (rom/commands/) parse their arguments and call these; ``rom record`` merges
the parts into the final record.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Sequence

import torch

from rom.config import ConfigError, run_config_from_dict, to_dict
from rom.data.shards import open_shard
from rom.env import package_versions
from rom.eval.perplexity import bytes_per_token, evaluate
from rom.eval import scorer as scorer_lib  # looked up at call time: tests substitute load_scorer
from rom.eval.tasks import TaskDataError, load_manifest, parse_task_list
from rom.models.files import load_trained_model
from rom.records import make_part

def default_device(device: str | None) -> str:
    """``device`` when given, else cuda when available, else cpu."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def eval_part(run_dir: str | Path, data_dir: str | Path, overrides: Sequence[str] = (), device: str | None = None,
              progress: bool = True) -> dict:
    """The eval part of a trained run: loss / perplexity / bits per byte on DIR/val at the configured lengths.

    ``overrides`` may change ``eval.*`` settings only (any other key would describe another run).
    """
    device = default_device(device)
    for item in overrides:
        if not item.startswith("eval."):
            raise ConfigError(f"rom eval --set {item!r}: only eval.* keys can be overridden (others change the run)")
    model, cfg = load_trained_model(run_dir, device)
    run_id = cfg.run_id
    if overrides:
        cfg = run_config_from_dict(to_dict(cfg), list(overrides))
    shard = open_shard(data_dir, "val")
    lengths = cfg.eval.lengths(cfg.train.seq_len)
    rows = evaluate(model, cfg, shard, lengths, cfg.eval.max_tokens, progress=progress)
    return make_part("eval", run_id, {
        "eval": {"tokenizer_bytes_per_token": bytes_per_token(shard), "results": rows,
                 "max_tokens": cfg.eval.max_tokens, "device": str(device),
                 # the scoring host's packages: a run may be scored elsewhere than it trained (provenance is the
                 # training host's)
                 "packages": package_versions()},
    })


def resolve_engine(engine: str) -> str:
    """``auto`` -> lm-eval when importable, else builtin; ``lm-eval`` must be importable."""
    have_lm_eval = importlib.util.find_spec("lm_eval") is not None
    if engine == "auto":
        return "lm-eval" if have_lm_eval else "builtin"
    if engine == "lm-eval" and not have_lm_eval:
        raise RuntimeError("--engine lm-eval, but lm-eval is not installed (pip install 'lm-eval>=0.4.5'); "
                           "or use --engine builtin, which computes the same metrics")
    return engine


def lm_eval_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except Exception:  # noqa: BLE001 - not installed or no metadata
        return None


def downstream_part(run_dir: str | Path, tasks_dir: str | Path, task_list: str = "all", engine: str = "auto",
                    limit: int | None = None, device: str | None = None, batch_size: int = 8,
                    max_length: int | None = None, tokenizer: str | Path | None = None) -> dict:
    """The downstream part of a trained run: zero-shot metrics on the tasks exported by ``rom export-tasks``.

    Scored through lm-eval (``engine`` lm-eval, or auto when it is installed) or the built-in scorer (same
    requests, same metrics). ``downstream_meta.n`` holds the number of documents scored per task.
    """
    engine = resolve_engine(engine)
    names = parse_task_list(task_list)
    manifest = load_manifest(tasks_dir)
    missing = [n for n in names if n not in manifest["tasks"]]
    if missing:
        raise TaskDataError(f"{tasks_dir}: tasks {missing} were not exported; run rom export-tasks")
    if limit is not None and limit < 1:
        raise TaskDataError(f"--limit must be >= 1, got {limit}")
    device = default_device(device)
    scorer, cfg = scorer_lib.load_scorer(run_dir, device=device, batch_size=batch_size, max_length=max_length,
                              tokenizer=tokenizer)
    if engine == "lm-eval":
        from rom.eval.lm_eval_model import evaluate_with_lm_eval

        results, counts = evaluate_with_lm_eval(scorer, tasks_dir, names, limit)
    else:
        results, counts = scorer_lib.evaluate_builtin(scorer, tasks_dir, names, limit)
    return make_part("downstream", cfg.run_id, {
        "downstream": results,
        "downstream_meta": {
            "engine": engine,
            "limit": limit,
            "n": counts,
            "lm_eval_version": lm_eval_version() if engine == "lm-eval" else None,
            "num_fewshot": 0,
            "device": str(device),
            "max_length": scorer.max_length,
            "batch_size": scorer.batch_size,
            "tasks_source": manifest.get("source"),
        },
    })
