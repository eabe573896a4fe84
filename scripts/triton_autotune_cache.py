"""Carry Triton's autotuning results from one lent GPU machine to the next.

Each lease starts on a bare machine, and fla's chunked kernels (Mamba-2's SSD, the gated delta rule) spent most
of a 10-minute command compiling and timing every autotune config (docs/mamba2.md, 2026-12-08). Triton keeps
the winner of each tuning on disk when asked (``TRITON_CACHE_AUTOTUNING=1``, or fla's own ``cache_results``) as
``<cache dir>/<sha256 key>/<kernel>.autotune.json``. The key hashes the Triton build, the GPU target, the
kernel's source and the tuning key (shapes, dtypes), so a file made on one H100 is found again on any machine
with the same Triton wheel and GPU architecture, and a stale one (other source, other Triton) is never read.
Each file is a short JSON list (one timing per config tried), while the compiled binaries beside them were
173 MB compressed: this copies the tuning results only, so a later machine compiles one config per kernel
instead of every config.

    python scripts/triton_autotune_cache.py save    --to OUT/triton-autotune     # cache dir -> folder
    python scripts/triton_autotune_cache.py restore --from .triton-autotune      # folder -> cache dir

The cache dir is ``--cache-dir``, else ``$TRITON_CACHE_DIR``, else ``~/.triton/cache`` (Triton's default).
Files that are not whole autotune records (a torn write, a foreign file) are skipped with a warning; an existing
file at the destination is kept, since the machine's own result is at least as fresh as a carried one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

SUFFIX = ".autotune.json"
_KEY_DIR = re.compile(r"[0-9a-f]{64}")


def default_cache_dir() -> Path:
    env = os.environ.get("TRITON_CACHE_DIR")
    return Path(env) if env else Path.home() / ".triton" / "cache"


def _is_autotune_record(path: Path) -> bool:
    """A whole record as Triton's autotuner writes it: {"key": ..., "configs_timings": [[config, timing], ...]}."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(record, dict) and "key" in record and isinstance(record.get("configs_timings"), list)
            and all(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], dict)
                    for pair in record["configs_timings"]))


def autotune_records(root: Path) -> list[Path]:
    """The autotune records under `root`, as paths relative to it (`<key>/<kernel>.autotune.json`)."""
    if not root.exists():
        return []
    if not root.is_dir():
        raise SystemExit(f"{root}: expected a directory of Triton cache entries, found a file")
    found = []
    for path in sorted(root.glob(f"*/*{SUFFIX}")):
        if not _KEY_DIR.fullmatch(path.parent.name):
            print(f"warning: {path}: skipped, its folder is not a Triton cache key (64 hex digits)", file=sys.stderr)
        elif not _is_autotune_record(path):
            print(f"warning: {path}: skipped, not a whole autotune record (torn or foreign JSON)", file=sys.stderr)
        else:
            found.append(path.relative_to(root))
    return found


def copy_records(src: Path, dst: Path) -> tuple[int, int, int]:
    """Copy every autotune record of `src` into `dst` under the same key folder. Returns (copied, kept, bytes):
    `kept` counts records `dst` already had (left as they are). Each file is written to a temporary name and
    renamed, so a killed copy never leaves a torn record for Triton to read."""
    copied = kept = size = 0
    for rel in autotune_records(src):
        target = dst / rel
        if target.exists():
            kept += 1
            continue
        data = (src / rel).read_bytes()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        copied += 1
        size += len(data)
    return copied, kept, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="copy the cache dir's autotune records into a folder")
    save.add_argument("--to", type=Path, required=True)
    restore = sub.add_parser("restore", help="copy a folder's autotune records into the cache dir")
    restore.add_argument("--from", dest="source", type=Path, required=True)
    for p in (save, restore):
        p.add_argument("--cache-dir", type=Path, default=None, help="Triton's cache dir (default: $TRITON_CACHE_DIR "
                       "or ~/.triton/cache)")
    args = parser.parse_args(argv)
    cache = args.cache_dir or default_cache_dir()
    src, dst = (cache, args.to) if args.command == "save" else (args.source, cache)
    if not src.exists():
        print(f"triton autotune {args.command}: {src} does not exist, nothing to copy")
        return 0
    copied, kept, size = copy_records(src, dst)
    print(f"triton autotune {args.command}: {copied} records copied ({size / 1024:.1f} kB), {kept} already there, "
          f"{src} -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
