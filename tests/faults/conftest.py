"""Fault tests (issue 28): what a user sees when a run is killed, a checkpoint is corrupt, data comes from
another tokenizer, training diverges, or data-parallel routers need global statistics. CPU, tiny model,
in-process where the trainer allows (signals are delivered to the process itself), about a minute in all."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_train_support import make_data  # noqa: E402


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token shards of the synthetic corpus; their metadata names tokenizer 'test'."""
    return make_data(tmp_path_factory.mktemp("fault-data"))
