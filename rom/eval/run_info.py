"""What `rom eval` and `rom downstream` need to know about a trained run before scoring it (library code
below the commands).

Whether it diverged (RUN_DIR/train.json: then they write a part marked ``skipped`` with the reason and exit 0,
so a study with ``on_divergence: exclude`` keeps going), and its tokenizer identity (rom.data.identity): the
model file's metadata holds it; a model file written before that is looked up in RUN_DIR/train.json's
``data_identity``; neither (an old run) gives None, which the checks accept with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

from rom.data.identity import tokenizer_identity


def run_tokenizer_identity(run_dir: str | Path) -> tuple[str | None, Path]:
    """(the tokenizer SHA-256 the run was trained with or None, the file it was read from)."""
    from rom.models.files import MODEL_FILE, model_file, read_model_metadata

    run_dir = Path(run_dir)
    model_path = model_file(run_dir) or run_dir / MODEL_FILE
    sha = tokenizer_identity(read_model_metadata(run_dir))
    if sha is not None:
        return sha, model_path
    part = run_dir / "train.json"
    if part.is_file():
        try:
            sha = tokenizer_identity(json.loads(part.read_text()).get("data_identity"))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            sha = None
        if sha is not None:
            return sha, part
    return None, model_path


def run_divergence(run_dir: str | Path) -> tuple[str, str] | None:
    """(run id, why it diverged) for a run in RUN_DIR whose train.json says it diverged; None for a run that did
    not (or has no readable train part). One read of train.json serves both."""
    part = Path(run_dir) / "train.json"
    if not part.is_file():
        return None
    try:
        doc = json.loads(part.read_text())
        training = doc.get("training") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if not training.get("diverged"):
        return None
    return str(doc["run_id"]), str(training.get("divergence") or "non-finite training loss")
