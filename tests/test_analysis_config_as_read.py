"""Records written before a config field existed match new records of the same run: the analysis reads every
record's config with the defaults of this code filled in (rom.records.config_as_read), so seed groups and the
Mamba-width series of claim (b) take old and new records together (the miniature study's sitting 6 records
carry model.mamba2, model.gated_deltanet, model.ssm and model.rom.expertization; its first records do not)."""
from __future__ import annotations

import pytest

from analysis.noise import seed_groups
from analysis.series import width_series
from analysis.synthetic import synthetic_record, table
from rom.config import ConfigError
from rom.records import config_as_read

ADDED_LATER = (("ssm",), ("mamba2",), ("gated_deltanet",), ("rom", "expertization"))


def _as_written_before(record: dict) -> dict:
    """The record as the code wrote it before the model fields of ADDED_LATER existed."""
    model = record["config"]["model"]
    for path in ADDED_LATER:
        node = model
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return record


def _full(record: dict) -> dict:
    record["config"] = config_as_read(record["config"])
    return record


def test_config_as_read_fills_defaults_and_keeps_what_was_written():
    cfg = config_as_read({"name": "r", "model": {"d_model": 96, "mamba": {"expand": 3}}})
    assert cfg["model"]["d_model"] == 96 and cfg["model"]["mamba"]["expand"] == 3
    assert cfg["model"]["ssm"] == "mamba" and cfg["model"]["mamba2"]["headdim"] == 64
    with pytest.raises(ConfigError, match="unknown key 'model.mamba3'"):
        config_as_read({"model": {"mamba3": {}}})


def test_a_seed_written_after_new_fields_joins_its_older_run():
    old = _as_written_before(_full(synthetic_record(name="m", n_active_nonembedding=1e6, loss=3.00)))
    new = _full(synthetic_record(name="m-seed1", n_active_nonembedding=1e6, loss=3.01, role="seed", seed=1))
    assert "mamba2" not in old["config"]["model"] and "mamba2" in new["config"]["model"]
    groups = seed_groups(table([old, new]))
    assert [sorted(g["run_id"]) for g in groups["mamba"]] == [sorted([old["run_id"], new["run_id"]])]


def test_the_width_series_takes_old_and_new_records_of_one_hybrid():
    recs = []
    for i, w in enumerate((1, 2, 4, 8)):
        rec = _full(synthetic_record(name=f"h-e{w}", n_active_nonembedding=1e6 * (1 + 0.4 * i), loss=3.0 - 0.05 * i,
                                     family="hybrid-mamba", model_config={"mamba": {"expand": w}}))
        recs.append(_as_written_before(rec) if w in (2, 8) else rec)  # two widths recorded before the fields
    recs.append(_as_written_before(_full(synthetic_record(
        name="rom-h-e2", n_active_nonembedding=1.2e6, loss=2.93, family="hybrid-rom", num_experts=8,
        model_config={"mamba": {"expand": 2}}))))
    series = width_series(table(recs))
    assert series is not None and series.expand == (1, 2, 4, 8)
