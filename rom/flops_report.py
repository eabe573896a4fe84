"""What ``rom flops`` reports: the analytic summary of a preset or config, and the flops part of a trained run.

The numbers come from ``rom.accounting`` (analytic, the one source of truth); the part of a run also carries
the matmul FLOPs that torch's FlopCounterMode and fvcore measure on one forward pass (``rom.flop_counters``).
Torch is imported only when measuring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rom.accounting import summary
from rom.config import ConfigError, load_model_config, run_config_from_dict
from rom.records import load_part, make_part

DEFAULT_SEQ_LEN = 2048


def config_seq_len(spec: str) -> int:
    """``train.seq_len`` of a YAML config file, or 0 when ``spec`` is not a file or sets none."""
    p = Path(spec)
    if not p.is_file():
        return 0
    import yaml

    data = yaml.safe_load(p.read_text()) or {}
    return int((data.get("train") or {}).get("seq_len", 0)) if isinstance(data, dict) else 0


def spec_summary(spec: str | None, overrides: list[str], seq_len: int = 0) -> dict[str, Any]:
    """``rom.accounting.summary`` of a preset name or config file (plus dotted model overrides).

    The sequence length (for attention FLOPs) is ``seq_len``, else the config's ``train.seq_len``, else 2048.
    """
    if not spec:
        raise ConfigError("rom flops needs a preset name or config file (or --run RUN_DIR)")
    cfg = load_model_config(spec, overrides)
    return summary(cfg, seq_len or config_seq_len(spec) or DEFAULT_SEQ_LEN)


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a text table: totals, then parameters and forward FLOPs per token by component."""
    lines = [
        f"family                      {s['family']}",
        f"params total                {s['params_total']:>16,d}",
        f"params active               {s['params_active']:>16,d}",
        f"params active non-embedding {s['params_active_nonembedding']:>16,d}",
        f"FLOPs/token forward         {s['flops_per_token_fwd']:>16,.0f}  (seq_len {s['seq_len']})",
        f"FLOPs/token training        {s['flops_per_token_train']:>16,.0f}",
        "",
        f"{'parameters by component':<28}{'total':>16}{'active':>16}",
    ]
    for name, c in s["components"]["params"].items():
        lines.append(f"  {name:<26}{c['total']:>16,d}{c['active']:>16,d}")
    lines += ["", f"{'forward FLOPs/token by component':<34}{'':>10}"]
    for name, v in s["components"]["flops_fwd"].items():
        lines.append(f"  {name:<32}{v:>16,.0f}")
    return "\n".join(lines)


def flops_part(run_dir: str | Path, measure_seq_len: int = 256, measure: bool = True) -> dict:
    """The flops part of a trained run (RUN_DIR/train.json): analytic counts, and measured ones if ``measure``.

    The measured forward pass uses ``min(measure_seq_len, train.seq_len)`` tokens (per-token matmul FLOPs do
    not depend on it).
    """
    train = load_part(Path(run_dir) / "train.json", "train")
    cfg = run_config_from_dict(train["config"])
    s = summary(cfg.model, cfg.train.seq_len)
    tokens = int(train["training"]["tokens"])
    flops = {
        "seq_len": cfg.train.seq_len,
        "per_token_fwd": s["flops_per_token_fwd"],
        "per_token_train": s["flops_per_token_train"],
        "per_token_matmul_fwd": s["flops_per_token_matmul_fwd"],
        "train_total": s["flops_per_token_train"] * tokens,
        "components": s["components"]["flops_fwd"],
        "torch_counter_fwd": None,
        "fvcore_fwd": None,
        "measured": {},
    }
    if measure:
        from rom.flop_counters import measure as measure_model

        measured = measure_model(cfg.model, min(measure_seq_len, cfg.train.seq_len))
        flops["measured"] = measured
        flops["torch_counter_fwd"] = measured["torch"].get("matmul_per_token")
        flops["fvcore_fwd"] = measured["fvcore"].get("matmul_per_token")
    return make_part("flops", train["run_id"], {"flops": flops})
