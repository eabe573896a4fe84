"""The trained model file of a run: ``RUN_DIR/model.safetensors``, written at the end of training, read by
evaluation.

``model.safetensors`` holds the weights (the tied LM head is stored once, as ``embedding.weight``) and, as
string metadata, the run's config (``rom_config``: the JSON of ``to_dict(RunConfig)``) and the file format
version (``rom_format``), plus what the caller passes as ``metadata`` (``rom_metadata``, JSON). Runs trained before safetensors have ``model.pt``, a pickled
``{"config": to_dict(RunConfig), "state_dict": ...}``; ``load_trained_model`` still reads it (safetensors first
when both exist). Training (``rom.train``) and evaluation (``rom.eval``) both use this module, so it lives below
both; neither imports the other for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rom.config import ConfigError, RunConfig, run_config_from_dict, to_dict
from rom.errors import RomError
from rom.io import atomic_path

MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # runs trained before safetensors; read, never written
FORMAT_VERSION = "1"
TIED_HEAD = "lm_head.weight"  # stored as embedding.weight when the config ties embeddings
EMBEDDING = "embedding.weight"
METADATA_KEY = "rom_metadata"  # save_model(metadata=...), JSON


class CheckpointError(RomError, RuntimeError):
    """A checkpoint or model file is missing, truncated, corrupt, or belongs to another run."""


def model_file(run_dir: str | Path) -> Path | None:
    """The model file of RUN_DIR: model.safetensors, else the legacy model.pt, else None."""
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        path = Path(run_dir) / name
        if path.exists():
            return path
    return None


def _tensors_to_store(cfg: RunConfig, state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, the tied head dropped (safetensors refuses tensors that share memory)."""
    out = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        out[name] = t.detach().to("cpu").contiguous()
    if cfg.model.tie_embeddings and TIED_HEAD in out and EMBEDDING in out:
        head, emb = out.pop(TIED_HEAD), out[EMBEDDING]
        same = head.shape == emb.shape and bool(((head == emb) | (head.isnan() & emb.isnan())).all())
        if not same:  # NaNs count as equal: a diverged run's weights are still written
            raise CheckpointError(f"{path}: model.tie_embeddings is true but {TIED_HEAD} differs from {EMBEDDING}")
    # torch.equal-identical but separate tensors are fine; views of one storage are not: clone those
    seen: dict[tuple[int, int], str] = {}
    for name, t in out.items():
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            out[name] = t.clone()
        seen.setdefault(key, name)
    return out


def save_model(run_dir: str | Path, cfg: RunConfig, state_dict: dict[str, torch.Tensor],
               metadata: dict[str, Any] | None = None) -> Path:
    """Write RUN_DIR/model.safetensors (atomically) and return its path.

    ``metadata``: JSON-serialisable facts about the model stored beside the config (``rom_metadata``), read back
    with ``read_model_metadata``."""
    from safetensors.torch import save_file

    path = Path(run_dir) / MODEL_FILE
    tensors = _tensors_to_store(cfg, state_dict, path)
    header = {"format": "pt", "rom_format": FORMAT_VERSION, "rom_config": json.dumps(to_dict(cfg))}
    if metadata:
        header[METADATA_KEY] = json.dumps(metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_model_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The ``metadata`` given to ``save_model`` for RUN_DIR's model file ({} when none; legacy model.pt: its
    'metadata' entry, if any). No model file in RUN_DIR: CheckpointError, as for loading the model."""
    path = model_file(run_dir)
    if path is None:
        raise CheckpointError(f"{Path(run_dir)}: no trained model here ({MODEL_FILE} or {LEGACY_MODEL_FILE})")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw = (f.metadata() or {}).get(METADATA_KEY)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON ({e})") from None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
    return dict(blob.get("metadata") or {}) if isinstance(blob, dict) else {}


def read_model_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict on CPU) of a model file, model.safetensors or the legacy model.pt.

    The tied LM head is not restored here (``load_trained_model`` does it); raises CheckpointError naming
    the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                state_dict = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
        if "rom_config" not in metadata:
            raise CheckpointError(f"{path}: no 'rom_config' metadata: not a model file written by this toolkit "
                                  f"(a Hugging Face model directory is read by rom.interop / `rom import-hf`)")
        try:
            config = json.loads(metadata["rom_config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: metadata 'rom_config' is not valid JSON ({e})") from None
        return config, state_dict
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise CheckpointError(f"{path}: expected a dict with 'config' and 'state_dict'")
    return blob["config"], blob["state_dict"]


def load_state_dict(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The trained weights of RUN_DIR by parameter name (the tied head included), on CPU."""
    path = model_file(run_dir)
    if path is None:
        raise CheckpointError(f"{Path(run_dir)}: no trained model here ({MODEL_FILE} or {LEGACY_MODEL_FILE})")
    config, state_dict = read_model_file(path)
    return _with_tied_head(config, state_dict)


def _with_tied_head(config: dict, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tied = (config.get("model") or {}).get("tie_embeddings", True)
    if tied and TIED_HEAD not in state_dict and EMBEDDING in state_dict:
        state_dict = {**state_dict, TIED_HEAD: state_dict[EMBEDDING]}
    return state_dict


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode on ``device``, RunConfig) from RUN_DIR/model.safetensors (or the legacy model.pt)."""
    from rom.models.lm import build_model

    path = model_file(run_dir)
    if path is None:
        raise CheckpointError(f"{Path(run_dir)}: no trained model here ({MODEL_FILE} or {LEGACY_MODEL_FILE}; "
                              f"run `rom train --out {run_dir}` first)")
    config, state_dict = read_model_file(path)
    try:
        cfg = run_config_from_dict(config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored config is invalid: {e}") from None
    state_dict = _with_tied_head(config, state_dict)
    backend = cfg.train.backend.value
    if torch.device(device).type == "cpu" and backend not in ("auto", "reference"):
        backend = "auto"  # a GPU kernel choice of training does not bind evaluation on CPU
    model = build_model(cfg.model, backend=backend)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored model config: {e}") from None
    return model.to(device).eval(), cfg
