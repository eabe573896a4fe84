"""Model directories: this toolkit's own format, and conversion of runs and Hugging Face checkpoints into it.

A model directory of this toolkit (what ``rom export-hf`` writes for RoM and hybrid runs, and ``rom import-hf``
for a Hugging Face Mamba) holds:
- ``model.safetensors``: the weights and the run config as metadata (``rom.models.files``), so ``rom eval
  --run DIR`` and ``rom downstream --run DIR`` take the directory as they take a trained run;
- ``config.json``: ``{"rom_format": 1, "family": ..., "run_config": {...}, "source": {...}}`` (readable
  without torch; ``source`` says where the weights came from);
- ``tokenizer.json``: the tokenizer, when one is known.

``load_pretrained(DIR)`` reads either that format or a transformers MambaForCausalLM / Mamba2ForCausalLM
directory.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from rom.config import DataConfig, RunConfig, TokenizerConfig, TokenizerKind, TrainConfig, to_dict
from rom.interop.hf_mamba import (HF_CONFIG, HF_WEIGHTS, InteropError, hf_config_from_model,
                                  load_hf_mamba_with_source, source_kind, state_dict_to_hf)
from rom.io import atomic_path, atomic_write_json
from rom.models.files import load_trained_model, read_model_metadata, save_model

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
IMPORT_SEQ_LEN = 2048  # context the state-spaces Mamba models were trained with (the default eval length)


def _copy_tokenizer(src: Path | None, out: Path) -> Path | None:
    if src is None:
        return None
    from rom.data.tokenizer import load_tokenizer

    load_tokenizer(src)  # a tokenizer this toolkit reads, or a DataError naming it
    target = out / TOKENIZER_FILE
    if src.resolve() != target.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    return target


def save_pretrained(model_or_state: Any, cfg: RunConfig, out: str | Path, tokenizer: str | Path | None = None,
                    source: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Write a model directory of this toolkit (any architecture): model.safetensors, config.json, tokenizer.

    ``metadata`` goes into the model file (``rom.models.files.save_model``); with a tokenizer, its SHA-256 is
    recorded there as the tokenizer identity (rom.data.identity) that rom eval / rom downstream check."""
    from rom.data.identity import TOKENIZER_KEY
    from rom.data.tokenizer import load_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tok = _copy_tokenizer(Path(tokenizer) if tokenizer else None, out)
    metadata = dict(metadata or {})
    if tok is not None:
        metadata[TOKENIZER_KEY] = load_tokenizer(tok).file_hash
    save_model(out, cfg, state, metadata=metadata)
    atomic_write_json(out / CONFIG_FILE, {
        "rom_format": FORMAT_VERSION,
        "family": cfg.model.family,
        "run_id": cfg.run_id,
        "run_config": to_dict(cfg),
        "tokenizer": TOKENIZER_FILE if tok else None,
        "source": source or {},
    })
    return out


def is_hf_directory(path: Path) -> bool:
    config = path / HF_CONFIG
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False


def load_pretrained(path: str | Path, device: str | torch.device = "cpu"):
    """A rom ``LanguageModel`` (eval mode) from a model directory of this toolkit, a trained run directory, or a
    transformers MambaForCausalLM directory / hub repo id."""
    p = Path(path)
    if p.is_dir() and (p / "model.safetensors").is_file() and not is_hf_directory(p):
        return load_trained_model(p, device)[0]
    if p.is_dir() and (p / "model.pt").is_file():
        return load_trained_model(p, device)[0]
    return load_hf_mamba_with_source(path, device=device)[0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def import_hf(src: str | Path, out: str | Path, name: str | None = None, seq_len: int = IMPORT_SEQ_LEN,
              revision: str | None = None) -> tuple[Path, RunConfig]:
    """Convert a transformers MambaForCausalLM or Mamba2ForCausalLM (directory or repo id) into a model directory
    of this toolkit."""
    model, directory = load_hf_mamba_with_source(src, revision=revision)
    tok_src = directory / TOKENIZER_FILE
    tok_src = tok_src if tok_src.is_file() else None
    cfg = RunConfig(
        name=name or _slug(f"hf-{Path(str(src)).name}"),
        study="imported",
        model=model.cfg,
        data=DataConfig(tokenizer=TokenizerConfig(kind=TokenizerKind.FILE, path=TOKENIZER_FILE)),
        train=TrainConfig(seq_len=seq_len),
    ).validate()
    save_pretrained(model, cfg, out, tokenizer=tok_src,
                    source={"kind": source_kind(directory), "from": str(src), "revision": revision,
                            "hf_config": json.loads((directory / HF_CONFIG).read_text(encoding="utf-8"))})
    return Path(out), cfg


def _token_string(tokenizer_json: Path, token_id: int) -> str:
    """The spelling of a token id in a tokenizer.json (added tokens first, then the model's vocabulary)."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    for added in data.get("added_tokens") or []:
        if added.get("id") == token_id:
            return added["content"]
    for token, i in ((data.get("model") or {}).get("vocab") or {}).items():
        if i == token_id:
            return token
    raise InteropError(f"{tokenizer_json}: no token with id {token_id}")


def export_run(run_dir: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> tuple[Path, str]:
    """A trained run (or model directory) as a transformers MambaForCausalLM (Mamba2ForCausalLM) directory when it
    is dense Mamba (Mamba-2), else as this toolkit's model directory. Returns (out, "transformers" | "rom")."""
    from rom.data.tokenizer import load_tokenizer
    from rom.eval.scorer import ScorerError, find_tokenizer

    model, cfg = load_trained_model(run_dir, "cpu")
    try:
        tok_path = find_tokenizer(run_dir, tokenizer)
    except ScorerError:
        if tokenizer:
            raise
        tok_path = None
    out = Path(out)
    try:
        hf_config = hf_config_from_model(cfg.model, eos_id=load_tokenizer(tok_path).eos_id if tok_path else None)
    except InteropError:
        save_pretrained(model, cfg, out, tokenizer=tok_path, metadata=read_model_metadata(run_dir),
                        source={"kind": "rom-run", "from": str(run_dir), "run_id": cfg.run_id})
        return out, "rom"
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / HF_WEIGHTS) as tmp:
        save_file(state_dict_to_hf(model.state_dict(), cfg.model), str(tmp), metadata={"format": "pt"})
    atomic_write_json(out / HF_CONFIG, {**hf_config, "rom_run_id": cfg.run_id})
    if tok_path is not None:
        tok = load_tokenizer(tok_path)
        if tok.kind == "hf":  # a tokenizer.json transformers reads as PreTrainedTokenizerFast
            _copy_tokenizer(tok_path, out)
            eos = _token_string(tok_path, tok.eos_id)
            atomic_write_json(out / "tokenizer_config.json", {
                "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": eos,
                "pad_token": eos, "model_max_length": cfg.train.seq_len, "clean_up_tokenization_spaces": False})
    return out, "transformers"
