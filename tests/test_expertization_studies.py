"""config/studies/mamba2.yaml and gdn.yaml: valid, and each holds the comparison issue 27 asks for (dense vs
comprehensive vs selective RoM on Mamba-2 / Gated DeltaNet at several sizes, the dense series bracketing the RoM
runs). CPU-sized: the runs are resolved and counted, and the smallest of each kind takes one training step on CPU
at a tiny length."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from rom.accounting import count_params
from rom.config import SSM_PROJECTIONS, Expertization, SsmKind

pytest.importorskip("jsonschema")
from tests.test_pipeline_studies import load_study, resolved_runs, schema_errors  # noqa: E402


@dataclass(frozen=True)
class ExpertizationStudy:
    name: str
    ssm: SsmKind
    min_rom_sizes: int  # comprehensive scaling runs, and as many selective ablations
    smallest: tuple[str, str, str]  # dense, comprehensive, selective


STUDIES = [ExpertizationStudy("mamba2", SsmKind.MAMBA2, 3, ("mamba2-xs", "rom2-comp-xs", "rom2-sel-xs")),
           ExpertizationStudy("gdn", SsmKind.GATED_DELTANET, 2, ("gdn-xs", "romgdn-comp-xs", "romgdn-sel-xs"))]


@pytest.mark.parametrize("spec", STUDIES, ids=lambda s: s.name)
def test_study_is_valid_and_compares_the_three_forms(spec):
    study = load_study(spec.name)
    assert schema_errors(study) == []
    runs = resolved_runs(study)
    assert all(r.model.ssm == spec.ssm for r in runs.values())
    projections = SSM_PROJECTIONS[spec.ssm]
    scaling: dict[str, list] = {}
    for r in runs.values():
        if r.role == "scaling":
            key = "dense" if not r.model.uses_rom else r.model.rom.expertization.value
            scaling.setdefault(key, []).append(r)
    assert set(scaling) == {"dense", "comprehensive"} and len(scaling["comprehensive"]) >= spec.min_rom_sizes
    for r in scaling["comprehensive"]:
        assert r.model.rom.expert_projections == projections.all
    selective = [r for r in runs.values() if r.model.rom.expertization == Expertization.SELECTIVE]
    assert len(selective) >= spec.min_rom_sizes and all(r.role == "ablation" for r in selective)
    for r in selective:  # each selective run has a comprehensive scaling run of its shape to be read against
        assert r.model.rom.expert_projections == projections.selective
        assert any((c.model.d_model, c.model.n_layer) == (r.model.d_model, r.model.n_layer)
                   for c in scaling["comprehensive"])
    dense = max(count_params(r.model).active_nonembedding for r in scaling["dense"])
    rom = max(count_params(r.model).active_nonembedding for r in scaling["comprehensive"])
    assert dense >= 2.5 * rom  # the dense curve brackets what it is read against
    assert len({r.run_id for r in runs.values()}) == len(runs)


@pytest.mark.parametrize("spec", STUDIES, ids=lambda s: s.name)
def test_study_smallest_models_step_on_cpu(spec):
    from rom.models import build_model

    runs = resolved_runs(load_study(spec.name))
    for name in spec.smallest:
        cfg = runs[name].model
        torch.manual_seed(0)
        model = build_model(cfg, backend="reference")
        assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total
        out = model(torch.randint(0, cfg.vocab_size, (1, 32)))
        (out.logits.float().logsumexp(-1).mean() + out.aux_loss).backward()


def test_tiny_study_has_no_mamba2_runs():
    assert all(r.model.ssm == SsmKind.MAMBA for r in resolved_runs(load_study("tiny")).values())


@pytest.mark.parametrize("spec", STUDIES, ids=lambda s: s.name)
def test_snakemake_dry_run_builds_the_dag(tmp_path, spec):
    pytest.importorskip("snakemake")
    from tests.test_pipeline_dag import copy_pipeline, job_counts, snakemake

    work = copy_pipeline(tmp_path)
    result = snakemake(work, "-n", "--cores", "2", "--config", f"study={spec.name}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert job_counts(result.stdout)["train"] == len(load_study(spec.name)["runs"])
