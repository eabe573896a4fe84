"""Load a script of this repository that is not part of a package (benchmarks/*.py, scripts/*.py) by its path,
so a test can call its functions and its `main(argv)`."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The module of ROOT/relative (e.g. "benchmarks/gpu_mamba2.py"), executed afresh on each call."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
