"""Model families, read from a record's typed fields; the analysis never parses a family name back.

A family is (layer pattern: pure or hybrid, SSM mixer, FFN-MoE or not). It comes from the record's fields
``model.pattern``, ``config.model.ssm`` (the architecture; "mamba" when absent), ``config.model.hybrid_ssm``
(hybrids) and ``model.mlp``; its name (``mamba``, ``rom``, ``hybrid-mamba``, ``hybrid-rom``, ``mamba2``,
``rom-mamba2``, ``hybrid-mamba2``, ..., each possibly ``+moe``) is derived from those fields, and the record's own
``family`` string must agree with it. Fits are keyed by that name; everything that depends on what a family
*is* (routed or dense, its dense counterpart, its plot style) asks the typed ``Family``.

The analysis knows the layer patterns in ``PATTERNS`` and the SSM mixers in ``SSM_MIXERS``. A record with
another pattern or mixer (say a new Mamba-2 mixer) is an error naming the record file and the value, so a new
mixer never silently joins another family's curve: add one row to ``SSM_MIXERS`` (and a pattern, if it has
one) to analyse it; a new architecture (``config.model.ssm``) is one row of ``SSM_KINDS``.
``tests/test_analysis_collect.py`` checks these tables against ``rom.config``'s enums.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from analysis.errors import AnalysisError


@dataclass(frozen=True)
class SsmMixer:
    """What the analysis needs to know about one SSM mixer (``rom.config.Mixer`` value)."""

    name: str  # the Mixer value, e.g. "rom"
    routed: bool  # the mixer holds experts: its runs are read off against a dense counterpart (claims a-d)
    dense: str  # the dense mixer it is read against (itself when not routed)


SSM_MIXERS: dict[str, SsmMixer] = {
    "mamba": SsmMixer("mamba", routed=False, dense="mamba"),
    "rom": SsmMixer("rom", routed=True, dense="mamba"),
    "mamba2": SsmMixer("mamba2", routed=False, dense="mamba2"),
    "rom-mamba2": SsmMixer("rom-mamba2", routed=True, dense="mamba2"),
    "gated-deltanet": SsmMixer("gated-deltanet", routed=False, dense="gated-deltanet"),
    "rom-gated-deltanet": SsmMixer("rom-gated-deltanet", routed=True, dense="gated-deltanet"),
}

# rom.config.SsmKind value (the record's config.model.ssm; absent in records made before it: "mamba") ->
# (dense mixer, routed mixer), as rom.config.SSM_MIXERS. The pattern's "mamba" / "rom" and a hybrid's
# hybrid_ssm "mamba" / "rom" mean the dense / routed mixer of that architecture.
SSM_KINDS: dict[str, tuple[str, str]] = {
    "mamba": ("mamba", "rom"),
    "mamba2": ("mamba2", "rom-mamba2"),
    "gated-deltanet": ("gated-deltanet", "rom-gated-deltanet"),
}
GENERIC_SSM = SSM_KINDS["mamba"]  # the names that mean "dense" and "routed" of whatever model.ssm is

# rom.config.Pattern value -> (hybrid, SSM mixer); None: the hybrid's SSM mixer is config.model.hybrid_ssm.
PATTERNS: dict[str, tuple[bool, str | None]] = {
    "mamba": (False, "mamba"),
    "rom": (False, "rom"),
    "hybrid": (True, None),
}
MLP_KINDS = ("none", "dense", "moe")  # rom.config.Mlp values; "moe" makes a "+moe" family


@dataclass(frozen=True)
class Family:
    hybrid: bool  # SSM mixers alternate with sliding-window attention
    ssm: str  # key of SSM_MIXERS
    moe: bool  # the MLPs are FFN-MoE

    def __post_init__(self) -> None:
        if self.ssm not in SSM_MIXERS:
            raise AnalysisError(f"unknown SSM mixer {self.ssm!r}; the analysis knows {sorted(SSM_MIXERS)} "
                                "(add it to SSM_MIXERS in analysis/families.py)")

    @property
    def base(self) -> str:
        """The name without the FFN-MoE suffix: mamba, rom, hybrid-mamba, hybrid-rom."""
        return f"hybrid-{self.ssm}" if self.hybrid else self.ssm

    @property
    def name(self) -> str:
        """The family name (the key of its fits); what ``rom.config.ModelConfig.family`` writes."""
        return self.base + ("+moe" if self.moe else "")

    @property
    def routed(self) -> bool:
        return SSM_MIXERS[self.ssm].routed

    def dense_counterpart(self) -> "Family":
        """The family a routed one is read against: same pattern and MLPs, the dense mixer."""
        return replace(self, ssm=SSM_MIXERS[self.ssm].dense)


def _field(record: Mapping[str, Any], dotted: str, source: str | Path) -> str:
    node: Any = record
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise AnalysisError(f"{source}: missing field '{dotted}' (needed to tell the model family)")
        node = node[key]
    if not isinstance(node, str):
        raise AnalysisError(f"{source}: field '{dotted}' must be a string, got {node!r}")
    return node


def _ssm_kind(record: Mapping[str, Any], source: str | Path) -> str:
    """config.model.ssm (records made before the field: "mamba"); an architecture the analysis does not know
    is an error naming the record."""
    model = record.get("config", {}).get("model", {}) if isinstance(record.get("config"), Mapping) else {}
    if not isinstance(model, Mapping) or "ssm" not in model:
        return "mamba"
    kind = model["ssm"]
    if kind not in SSM_KINDS:
        raise AnalysisError(f"{source}: field 'config.model.ssm' is {kind!r}, an SSM architecture the analysis does "
                            f"not know ({sorted(SSM_KINDS)}); add it to SSM_KINDS in analysis/families.py")
    return kind


def family_of_record(record: Mapping[str, Any], source: str | Path = "<record>") -> Family:
    """The family from the record's typed fields; the record's ``family`` string must agree."""
    pattern = _field(record, "model.pattern", source)
    if pattern not in PATTERNS:
        raise AnalysisError(f"{source}: field 'model.pattern' is {pattern!r}, a layer pattern the analysis does "
                            f"not know ({sorted(PATTERNS)}); add it to PATTERNS in analysis/families.py")
    hybrid, ssm = PATTERNS[pattern]
    kind = _ssm_kind(record, source)
    if ssm is None:
        ssm = _field(record, "config.model.hybrid_ssm", source)
        where = "config.model.hybrid_ssm"
    else:
        where = "model.pattern"
    if ssm in GENERIC_SSM:  # the dense or routed mixer of config.model.ssm
        ssm = SSM_KINDS[kind][GENERIC_SSM.index(ssm)]
        where = f"{where} with config.model.ssm"
    if ssm not in SSM_MIXERS:
        raise AnalysisError(f"{source}: field '{where}' names the SSM mixer {ssm!r}, which the analysis does not "
                            f"know ({sorted(SSM_MIXERS)}); add it to SSM_MIXERS in analysis/families.py")
    mlp = _field(record, "model.mlp", source)
    if mlp not in MLP_KINDS:
        raise AnalysisError(f"{source}: field 'model.mlp' is {mlp!r}, an MLP kind the analysis does not know "
                            f"({list(MLP_KINDS)})")
    family = Family(hybrid=hybrid, ssm=ssm, moe=mlp == "moe")
    if record.get("family") != family.name:
        raise AnalysisError(f"{source}: field 'family' is {record.get('family')!r} but the model fields "
                            f"(pattern {pattern!r}, SSM mixer {ssm!r}, mlp {mlp!r}) make {family.name!r}")
    return family


def family_columns(family: Family, pattern: str) -> dict[str, Any]:
    """The table columns that carry a run's family (see ``analysis.collect.COLUMNS``)."""
    return {"family": family.name, "pattern": pattern, "ssm_mixer": family.ssm, "base_family": family.base,
            "ffn_moe": family.moe, "uses_rom": family.routed}


def families_in(df: pd.DataFrame) -> dict[str, Family]:
    """Family name -> Family for every family of a collected table, from its typed columns."""
    out: dict[str, Family] = {}
    cols = ["family", "pattern", "ssm_mixer", "ffn_moe"]
    for name, pattern, ssm, moe in df[cols].drop_duplicates().itertuples(index=False):
        if pattern not in PATTERNS:
            raise AnalysisError(f"table: layer pattern {pattern!r} of family {name!r} is not one the analysis "
                                f"knows ({sorted(PATTERNS)})")
        fam = Family(hybrid=PATTERNS[pattern][0], ssm=str(ssm), moe=bool(moe))
        if fam.name != name or out.setdefault(name, fam) != fam:
            raise AnalysisError(f"table: family {name!r} disagrees with its columns pattern={pattern!r}, "
                                f"ssm_mixer={ssm!r}, ffn_moe={bool(moe)} (was the table edited?)")
    return out
