"""A shard, checkpoint, model file or tokenizer file from another tokenizer is refused, naming both files and
both hashes; files written before tokenizer identities existed are accepted with a warning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from rom.cli import main as rom_main
from rom.config import run_config_from_dict
from rom.models.files import load_state_dict, model_file, read_model_metadata, save_model
from rom.train.loop import train
from test_train_support import make_data, tiny_config, write_config


def retokenized(src: Path, dst: Path, sha: str, splits=("train", "val")) -> Path:
    """A copy of a shard directory whose metadata names another tokenizer (same tokens: only the identity
    differs, as with a second BPE of the same vocabulary size)."""
    shutil.copytree(src, dst)
    for split in splits:
        meta_path = dst / f"{split}.json"
        meta = json.loads(meta_path.read_text())
        meta["tokenizer_sha256"] = sha
        meta_path.write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def trained(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "run"
    train(run_config_from_dict(tiny_config(tokens=32 * 4 * 4, eval_every=0)), fault_data, out)
    return out


def test_identity_is_carried_into_model_file_and_train_part(trained: Path) -> None:
    assert read_model_metadata(trained)["tokenizer_sha256"] == "test"
    part = json.loads((trained / "train.json").read_text())
    assert part["data_identity"]["tokenizer_sha256"] == "test"


def test_eval_refuses_a_shard_of_another_tokenizer(trained: Path, fault_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    foreign = retokenized(fault_data, tmp_path / "foreign", "f" * 64)
    out = tmp_path / "eval.json"
    assert rom_main(["eval", "--run", str(trained), "--data", str(foreign), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer mismatch" in err and str(foreign / "val.json") in err and str(model_file(trained)) in err
    assert "f" * 64 in err and "tokenizer_sha256=test" in err and "rom tokenize" in err
    assert "Traceback" not in err and not out.exists()
    # the right shards still evaluate
    assert rom_main(["eval", "--run", str(trained), "--data", str(fault_data), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["eval"]["results"]


def test_downstream_refuses_another_tokenizer_file(trained: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other-tokenizer.json"
    other.write_text('{"model": {}, "added_tokens": []}')
    out = tmp_path / "downstream.json"
    code = rom_main(["downstream", "--run", str(trained), "--tasks", str(tmp_path / "tasks"), "--tokenizer",
                     str(other), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "tokenizer mismatch" in err and str(other) in err and str(model_file(trained)) in err
    assert "--tokenizer" in err and not out.exists()


def test_train_refuses_splits_of_two_tokenizers(fault_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    mixed = retokenized(fault_data, tmp_path / "mixed", "e" * 64, splits=("val",))
    cfg = write_config(tmp_path / "run.yaml", tiny_config())
    out = tmp_path / "run"
    assert rom_main(["train", "--config", str(cfg), "--data", str(mixed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(mixed / "val.json") in err and str(mixed / "train.json") in err and "e" * 64 in err
    assert not out.exists()  # refused before touching the output directory


def test_resume_refuses_a_shard_of_another_tokenizer(fault_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "run.yaml", tiny_config())
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--out", str(out), "--data"]
    monkeypatch.setenv("ROM_TEST_SIGNAL_AT_STEP", "4:SIGINT")
    assert rom_main([*args, str(fault_data)]) == 130
    monkeypatch.delenv("ROM_TEST_SIGNAL_AT_STEP")
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["tokenizer_sha256"] == "test"
    foreign = retokenized(fault_data, tmp_path / "foreign", "d" * 64)
    capsys.readouterr()
    assert rom_main([*args, str(foreign)]) == 2
    err = capsys.readouterr().err
    assert str(out / "checkpoint" / "meta.json") in err and str(foreign / "train.json") in err
    assert "d" * 64 in err and "resume with the --data directory" in err
    assert meta == json.loads((out / "checkpoint" / "meta.json").read_text())  # nothing touched
    assert rom_main([*args, str(fault_data)]) == 0  # the right data resumes


def test_old_model_file_without_identity_warns(trained: Path, fault_data: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Committed runs predate tokenizer identities: they must still evaluate (a warning, no refusal)."""
    old = tmp_path / "old"
    old.mkdir()
    cfg = run_config_from_dict(json.loads((trained / "train.json").read_text())["config"])
    save_model(old, cfg, load_state_dict(trained))  # no metadata, as before issue 28
    foreign = retokenized(fault_data, tmp_path / "foreign", "c" * 64)
    with caplog.at_level(logging.WARNING, logger="rom.data.identity"):
        assert rom_main(["eval", "--run", str(old), "--data", str(foreign), "--out", str(tmp_path / "e.json")]) == 0
    assert "records no tokenizer identity" in caplog.text and str(old) in caplog.text


def test_tokenize_empty_split_names_split_file_and_promise(tmp_path: Path) -> None:
    import gzip

    from rom.data.corpus import FORMAT_VERSION
    from rom.data.document import DataError
    from rom.data.shards import tokenize_corpus

    class Tok:  # the Tokenizer surface tokenize_corpus uses
        vocab_size, eos_id, file_hash, kind, path = 16, 0, "x" * 64, "hf", Path("tok.json")

        def encode_batch(self, texts):
            return [[1 + (ord(c) % 15) for c in t] for t in texts]

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(corpus / "train.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "a", "text": "hello", "source": "s"}) + "\n")
    with gzip.open(corpus / "val.jsonl.gz", "wt"):
        pass
    for promised, expected in ((3, "promises 3"), (0, "agrees: 0")):
        (corpus / "corpus.json").write_text(json.dumps({
            "format": FORMAT_VERSION, "source": "s",
            "splits": {"train": {"documents": 1}, "val": {"documents": promised}}}))
        with pytest.raises(DataError) as info:
            tokenize_corpus(corpus, Tok(), tmp_path / "tokens", progress=False)
        msg = str(info.value)
        assert "val split" in msg and str(corpus / "val.jsonl.gz") in msg and expected in msg and "rom corpus" in msg
        assert not (tmp_path / "tokens").exists()  # nothing half-written
