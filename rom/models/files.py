"""The trained model file ``RUN_DIR/model.pt``: written at the end of training, read by evaluation.

It holds ``{"config": to_dict(RunConfig), "state_dict": ...}``. Training (``rom.train``) and evaluation
(``rom.eval``) both use this module, so it lives below both; neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rom.config import ConfigError, RunConfig, run_config_from_dict, to_dict
from rom.errors import RomError
from rom.io import atomic_path

MODEL_FILE = "model.pt"


class CheckpointError(RomError, RuntimeError):
    """A checkpoint or model file is missing, truncated, corrupt, or belongs to another run."""


def save_model(run_dir: str | Path, cfg: RunConfig, state_dict: dict[str, torch.Tensor]) -> Path:
    path = Path(run_dir) / MODEL_FILE
    with atomic_path(path) as tmp:
        torch.save({"config": to_dict(cfg), "state_dict": state_dict}, tmp)
    return path


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode on ``device``, RunConfig) from RUN_DIR/model.pt."""
    from rom.models.lm import build_model

    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: no trained model here (run `rom train --out {run_dir}` first)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise CheckpointError(f"{path}: expected a dict with 'config' and 'state_dict'")
    try:
        cfg = run_config_from_dict(blob["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored config is invalid: {e}") from None
    backend = cfg.train.backend.value
    if torch.device(device).type == "cpu" and backend not in ("auto", "reference"):
        backend = "auto"  # a GPU kernel choice of training does not bind evaluation on CPU
    model = build_model(cfg.model, backend=backend)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored model config: {e}") from None
    return model.to(device).eval(), cfg
