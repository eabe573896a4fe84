"""Hugging Face ``datasets`` in streaming mode (e.g. cerebras/SlimPajama-627B), bounded by data.max_documents.

Needs the optional ``datasets`` package and network access to the hub; both are reported clearly when absent.
"""

from __future__ import annotations

import os
from typing import Iterator

from rom.config import ConfigError, DataConfig
from rom.data.document import DataError, Document


def iter_hf(cfg: DataConfig) -> Iterator[Document]:
    if cfg.max_documents <= 0:
        raise ConfigError("data.max_documents must be > 0 for data.source=hf (a hub stream has no end)")
    try:
        import datasets
    except ImportError:
        raise DataError("data.source=hf needs the `datasets` package: pip install datasets") from None
    name = cfg.hf_name
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(
            f"data.source=hf ({name}) needs the Hugging Face hub, but HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set; "
            "use data.source=files with local copies instead"
        )
    try:
        stream = datasets.load_dataset(name, cfg.hf_config or None, split=cfg.hf_split, streaming=True)
        it = iter(stream)
        index = 0
        label = f"hf/{name}"
        while True:
            try:
                row = next(it)
            except StopIteration:
                return
            if cfg.text_field not in row:
                raise DataError(
                    f"{name} (split {cfg.hf_split}) row {index}: no field {cfg.text_field!r} "
                    f"(fields: {', '.join(row)}); set data.text_field"
                )
            text = row[cfg.text_field]
            if isinstance(text, str):
                yield Document(id=f"{label}/{cfg.hf_split}/{index}", text=text, source=label)
            index += 1
    except DataError:
        raise
    except (ConnectionError, OSError, TimeoutError) as e:
        raise DataError(f"cannot stream Hugging Face dataset {name!r} (offline or not reachable?): {e}") from None
    except Exception as e:  # datasets raises many types (DatasetNotFoundError, ValueError for a bad config, ...)
        raise DataError(
            f"cannot load Hugging Face dataset {name!r} config {cfg.hf_config!r}: {type(e).__name__}: {e}"
        ) from None
