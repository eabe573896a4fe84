"""`rom flops`: analytic parameters and FLOPs of a preset or config, or the flops part of a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "parameters and FLOPs by component (analytic; with --run also torch FlopCounterMode and fvcore)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="preset name (e.g. rom-mamba-1.3b-e8) or a YAML config file")
    p.add_argument("--seq-len", type=int, default=0, help="sequence length for attention FLOPs (default: the "
                   "config's train.seq_len, else 2048)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted model override")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--run", type=Path, help="run directory holding train.json: write its flops part")
    p.add_argument("--out", type=Path, help="with --run: where to write the flops part (JSON)")
    p.add_argument("--measure-seq-len", type=int, default=256,
                   help="with --run: sequence length of the measured forward pass (per-token matmul FLOPs do not "
                        "depend on it; default 256)")
    p.add_argument("--no-measure", action="store_true", help="with --run: skip the torch/fvcore counts")


def _table(s: dict) -> str:
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


def run(args: argparse.Namespace) -> int:
    from rom.accounting import summary
    from rom.config import ConfigError, load_model_config

    if args.run is not None:
        return _run_part(args)
    if not args.spec:
        raise ConfigError("rom flops needs a preset name or config file (or --run RUN_DIR)")
    cfg = load_model_config(args.spec, args.set)
    seq_len = args.seq_len or _config_seq_len(args.spec) or 2048
    s = summary(cfg, seq_len)
    print(json.dumps(s, indent=2) if args.json else _table(s))
    return 0


def _config_seq_len(spec: str) -> int:
    p = Path(spec)
    if not p.is_file():
        return 0
    import yaml

    data = yaml.safe_load(p.read_text()) or {}
    return int((data.get("train") or {}).get("seq_len", 0)) if isinstance(data, dict) else 0


def _run_part(args: argparse.Namespace) -> int:
    from rom.accounting import summary
    from rom.config import ConfigError, run_config_from_dict
    from rom.io import atomic_write_json
    from rom.records import load_part, make_part

    if args.out is None:
        raise ConfigError("rom flops --run needs --out FILE")
    train = load_part(args.run / "train.json", "train")
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
    if not args.no_measure:
        from rom.flop_counters import measure

        measured = measure(cfg.model, min(args.measure_seq_len, cfg.train.seq_len))
        flops["measured"] = measured
        flops["torch_counter_fwd"] = measured["torch"].get("matmul_per_token")
        flops["fvcore_fwd"] = measured["fvcore"].get("matmul_per_token")
    atomic_write_json(args.out, make_part("flops", train["run_id"], {"flops": flops}))
    print(f"wrote {args.out}")
    return 0
