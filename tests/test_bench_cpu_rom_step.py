"""benchmarks/cpu_rom_step.py on tiny settings: every RoM model is stepped beside its dense twin and read
against it, the JSON is written whole, and a wrong model name is refused by name. Claims no timing."""
from __future__ import annotations

import json

import pytest

from script_loader import load_script

TINY = ["--steps", "1", "--warmup", "0", "--batch", "1", "--length", "16"]


def _load():
    return load_script("benchmarks/cpu_rom_step.py")


def test_each_rom_model_is_read_against_its_dense_twin(tmp_path):
    bench = _load()
    out = tmp_path / "step.json"
    result = bench.main([*TINY, "--models", "mamba2 rom-e8 selective,gdn rom-e8 comprehensive", "--out", str(out)])
    assert set(result["results"]) == {"mamba2 rom-e8 selective", "gdn rom-e8 comprehensive", "mamba2", "gdn"}
    assert set(result["ratios_rom_over_dense"]) == {"mamba2 rom-e8 selective", "gdn rom-e8 comprehensive"}
    r = result["results"]
    assert result["ratios_rom_over_dense"]["gdn rom-e8 comprehensive"] == pytest.approx(
        r["gdn rom-e8 comprehensive"]["median_s"] / r["gdn"]["median_s"])
    assert "ratio_rom_over_mamba" not in result  # only with the Mamba-1 pair
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert not list(tmp_path.glob("*.tmp"))


def test_every_architecture_and_expertization_has_a_row():
    bench = _load()
    twins = {name: dense for name, (_, dense) in bench.SHAPES.items()}
    assert twins == {"mamba": None, "rom-e8": "mamba", "mamba2": None, "mamba2 rom-e8 comprehensive": "mamba2",
                     "mamba2 rom-e8 selective": "mamba2", "gdn": None, "gdn rom-e8 comprehensive": "gdn",
                     "gdn rom-e8 selective": "gdn"}


def test_an_unknown_model_is_refused_by_name(tmp_path):
    bench = _load()
    with pytest.raises(SystemExit, match=r"--models: unknown \['mamba3'\]"):
        bench.main([*TINY, "--models", "mamba3", "--out", str(tmp_path / "x.json")])
