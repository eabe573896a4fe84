"""Why a prefix of the validation shard is not the validation split: loss per source block of trained runs.

The validation shard holds the held-out documents of every source one after another (shard metadata
``sources``, in file order). This script scores each trained run at its training length on:
  - the first PREFIX_TOKENS tokens (what the `gpu` study's `rom eval` scored: eval.max_tokens=262144),
  - the whole split, and evenly spread windows (what `rom eval` scores now, rom.eval.perplexity),
  - each source's block alone (windows that lie inside it),
and prints a table and writes JSON, so the gap between a prefix and the split can be traced to its sources.

    python scripts/validation_gap.py --data results/STUDY/data/tokens --out gap.json RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rom.data.shards import open_shard
from rom.eval.perplexity import score_windows, spread_window_ids
from rom.io import atomic_write_json
from rom.models.files import load_trained_model

PREFIX_TOKENS = 262_144


def source_blocks(meta: dict) -> list[tuple[str, int, int]]:
    """(source, first token, end token) of each source's block, in shard order."""
    blocks, start = [], 0
    for name, s in meta["sources"].items():
        blocks.append((name, start, start + int(s["tokens"])))
        start += int(s["tokens"])
    if start != int(meta["tokens"]):
        raise SystemExit(f"shard metadata: sources add up to {start} tokens, the shard has {meta['tokens']}")
    return blocks


def run_gap(run_dir: Path, data_dir: Path, device: torch.device) -> dict:
    model, cfg = load_trained_model(run_dir, device)
    shard = open_shard(data_dir, "val")
    tokens, L = shard.tokens, cfg.train.seq_len
    n_all = (len(tokens) - 1) // L
    batch = max(1, cfg.eval.batch_size)

    def loss(ids: list[int]) -> tuple[float, int]:
        s, c = score_windows(model, tokens, L, ids, batch, device, cfg.train.precision)
        return (s / c if c else float("nan")), c

    prefix_ids = list(range(min(n_all, PREFIX_TOKENS // L)))
    out = {"run": run_dir.name, "seq_len": L, "windows": n_all,
           "prefix": loss(prefix_ids)[0], "whole": loss(list(range(n_all)))[0],
           "spread_half": loss(spread_window_ids(len(tokens), L, n_all // 2))[0], "sources": {}}
    for name, lo, hi in source_blocks(shard.meta):
        ids = [i for i in range(n_all) if i * L >= lo and (i + 1) * L + 1 <= hi]
        value, count = loss(ids)
        in_prefix = max(0, min(hi, len(prefix_ids) * L) - lo) / max(1, hi - lo)
        out["sources"][name] = {"loss": value, "tokens": count, "fraction_in_prefix": in_prefix}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="trained run directories (holding model.safetensors or model.pt)")
    p.add_argument("--data", type=Path, required=True, help="token shard directory (val.bin, val.json)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [run_gap(r, args.data, device) for r in args.runs]
    atomic_write_json(args.out, {"prefix_tokens": PREFIX_TOKENS, "device": str(device), "runs": rows})
    print(f"{'run':<28} {'prefix':>8} {'whole':>8} {'spread':>8} {'prefix-whole':>13}")
    for r in rows:
        print(f"{r['run']:<28} {r['prefix']:8.4f} {r['whole']:8.4f} {r['spread_half']:8.4f} "
              f"{r['prefix'] - r['whole']:13.4f}")
    for r in rows[:1]:
        print(f"per source ({r['run']}):")
        for name, s in r["sources"].items():
            print(f"  {name:<20} {s['loss']:8.4f}  {s['tokens']:>7} tokens  {s['fraction_in_prefix']:5.0%} in the prefix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
