"""Atomic, validated, resumable training checkpoints.

Layout of ``RUN_DIR/checkpoint/``::

    meta.json          {run_id, config_hash, step, file, bytes, sha256, created}   (written last)
    step-00000100.pt   torch.save of the training state (model, optimizer, scheduler, RNG, loader, step)

A new state file is written under a new name, then ``meta.json`` is atomically replaced, then older state
files are removed except the previous one (``meta.json``'s ``previous``: file, step, bytes, sha256): a crash
at any point leaves a consistent (older or newer) checkpoint. Loading checks that the checkpoint belongs to the
same run (run id and config hash), that the file has the recorded size and SHA-256, and that it unpickles; when
the newest state file fails and the previous one passes, training resumes from the previous one with a
warning (the steps in between are redone, bit for bit); otherwise ``CheckpointError`` names the file and how
to start over.

The trained model file ``RUN_DIR/model.safetensors`` (older runs: ``model.pt``) (read by evaluation) is ``rom.models.files``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rom.io import atomic_path, atomic_write_json
from rom.models.files import CheckpointError
from rom.records import now_iso

CHECKPOINT_DIR = "checkpoint"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_meta(run_dir: str | Path) -> dict | None:
    """The checkpoint's meta.json, or None when the run directory holds no checkpoint."""
    ckpt = checkpoint_dir(run_dir)
    meta_path = ckpt / META_FILE
    if not meta_path.exists():
        if ckpt.is_dir() and any(ckpt.glob("step-*.pt")):
            raise CheckpointError(f"{meta_path}: missing, but {ckpt} holds state files; the checkpoint is incomplete; "
                                  f"{start_over_hint(run_dir)}")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e}); the checkpoint is corrupt; "
                              f"{start_over_hint(run_dir)}") from None
    for key in ("run_id", "config_hash", "step", "file", "bytes", "sha256"):
        if not isinstance(meta, dict) or key not in meta:
            raise CheckpointError(f"{meta_path}: missing field '{key}'; the checkpoint is corrupt; "
                                  f"{start_over_hint(run_dir)}")
    return meta


def check_same_run(run_dir: str | Path, run_id: str, config_hash: str) -> dict | None:
    """Refuse a run directory whose checkpoint belongs to a different run; return its meta (or None)."""
    meta = read_meta(run_dir)
    if meta is None:
        return None
    if meta["run_id"] != run_id or meta["config_hash"] != config_hash:
        raise CheckpointError(
            f"{checkpoint_dir(run_dir) / META_FILE}: this output directory holds a checkpoint of run "
            f"{meta['run_id']!r} (config hash {meta['config_hash']}), not of run {run_id!r} (config hash "
            f"{config_hash}); use another --out directory or remove {checkpoint_dir(run_dir)}"
        )
    return meta


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], run_id: str, config_hash: str,
                    tag: str = "", extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``state`` (must hold 'step') atomically; return the state file's path.

    ``tag`` is appended to the file name: a second checkpoint of the same step (the trainer's after a cooldown
    branch) then goes to a new file, so the old one stays valid until meta.json names the new one.
    ``extra_meta``: plain values added to meta.json (the trainer's data identity, ``tokenizer_sha256``), so a
    resume can check them before reading the state file.
    """
    ckpt = checkpoint_dir(run_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    name = f"step-{step:08d}{tag}.pt"
    target = ckpt / name
    payload = {"format_version": FORMAT_VERSION, "run_id": run_id, "config_hash": config_hash, **state}
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    previous = None
    try:
        old = read_meta(run_dir)
    except CheckpointError:
        old = None
    if old is not None and old["file"] != name and (ckpt / str(old["file"])).is_file():
        previous = {k: old[k] for k in ("file", "step", "bytes", "sha256")}
    meta = {
        "run_id": run_id,
        "config_hash": config_hash,
        "step": step,
        "file": name,
        "bytes": target.stat().st_size,
        "sha256": _sha256(target),
        "created": now_iso(),
        **(extra_meta or {}),
        "previous": previous,  # the state file kept as a fallback (None: none)
    }
    atomic_write_json(ckpt / META_FILE, meta)
    keep = {name, previous["file"] if previous else name}
    for stale in ckpt.glob("step-*.pt"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return target


def start_over_hint(run_dir: str | Path) -> str:
    """How to recover from a checkpoint that cannot be used: start the run again from step 0."""
    ckpt = checkpoint_dir(run_dir)
    return (f"to start this run over from step 0, remove {ckpt} (`rm -r {ckpt}`) and run the same `rom train` "
            f"command again, or train into another --out")


def load_checkpoint(run_dir: str | Path, run_id: str, config_hash: str, map_location: str = "cpu") -> dict | None:
    """The saved training state of this run, or None when there is no checkpoint; validated (see module doc).

    When the newest state file fails validation and the previous one (meta.json ``previous``) passes, that one
    is returned, with ``state["fallback"]`` saying why (the trainer logs it and warns).
    """
    meta = check_same_run(run_dir, run_id, config_hash)
    if meta is None:
        return None
    try:
        return _load_state(run_dir, meta, run_id, map_location)
    except CheckpointError as newest:
        previous = meta.get("previous")
        if not isinstance(previous, dict):
            raise CheckpointError(f"{newest}; no previous checkpoint to fall back to; "
                                  f"{start_over_hint(run_dir)}") from None
        try:
            state = _load_state(run_dir, previous, run_id, map_location)
        except CheckpointError as older:
            raise CheckpointError(f"{newest}; the previous checkpoint is unusable too ({older}); "
                                  f"{start_over_hint(run_dir)}") from None
        state["fallback"] = (f"{newest}; resumed from the previous checkpoint {checkpoint_dir(run_dir) / previous['file']} "
                             f"(step {previous['step']} instead of {meta['step']}; the steps in between are redone)")
        return state


def _load_state(run_dir: str | Path, entry: dict, run_id: str, map_location: str) -> dict:
    """The state file an entry of meta.json names (file, bytes, sha256, step), validated."""
    path = checkpoint_dir(run_dir) / str(entry["file"])
    if not path.exists():
        raise CheckpointError(f"{path}: named by {checkpoint_dir(run_dir) / META_FILE} but missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise CheckpointError(f"{path}: {size} bytes, expected {entry['bytes']}; the file is truncated or corrupt")
    if _sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{path}: SHA-256 differs from {META_FILE}; the file is corrupt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
    if state.get("run_id") != run_id or int(state.get("step", -1)) != int(entry["step"]):
        raise CheckpointError(f"{path}: contents disagree with {META_FILE} (run id or step)")
    return state


# ----------------------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, as tensors/ints (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    version, gauss = py[-2], py[-1]
    random.setstate((version, tuple(py[:-2]), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
