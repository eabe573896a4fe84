"""The analysis reads the SSM architecture (config.model.ssm) of a record: old records (no field) are Mamba-1,
an architecture it does not know stops it with the record's name."""

from __future__ import annotations

import pytest

from analysis.errors import AnalysisError
from analysis.families import SSM_KINDS, family_of_record
from rom.config import SSM_MIXERS, Mixer, Mlp, ModelConfig, Pattern, SsmKind, to_dict


def _record(cfg: ModelConfig, drop_ssm: bool = False) -> dict:
    model = to_dict(cfg)
    if drop_ssm:
        model.pop("ssm")
    return {"family": cfg.family, "config": {"model": model},
            "model": {"pattern": cfg.pattern.value, "mlp": cfg.mlp.value}}


def test_analysis_architectures_match_the_config() -> None:
    assert SSM_KINDS == {k.value: (d.value, r.value) for k, (d, r) in SSM_MIXERS.items()}


@pytest.mark.parametrize("kind", list(SSM_MIXERS))
@pytest.mark.parametrize("pattern", list(Pattern))
@pytest.mark.parametrize("hybrid_ssm", [Mixer.MAMBA, Mixer.ROM])
def test_family_from_record_agrees_with_the_config(kind, pattern, hybrid_ssm) -> None:
    cfg = ModelConfig(pattern=pattern, ssm=kind, hybrid_ssm=hybrid_ssm, mlp=Mlp.DENSE)
    fam = family_of_record(_record(cfg), "run/final.json")
    assert fam.name == cfg.family
    assert fam.ssm == cfg.ssm_mixer.value
    assert fam.routed == cfg.uses_rom


def test_records_without_the_field_are_mamba1() -> None:
    cfg = ModelConfig(pattern=Pattern.ROM)
    assert family_of_record(_record(cfg, drop_ssm=True)).name == "rom"


def test_unknown_architecture_fails_loudly() -> None:
    rec = _record(ModelConfig(pattern=Pattern.ROM))
    rec["config"]["model"]["ssm"] = "retnet"
    with pytest.raises(AnalysisError, match="run/final.json: field 'config.model.ssm' is 'retnet'"):
        family_of_record(rec, "run/final.json")
    assert set(SSM_KINDS) == {k.value for k in SSM_MIXERS}  # an architecture gets a family once implemented
