"""config/studies/mamba2.yaml: valid, and it holds the comparison issue 27 asks for (dense vs comprehensive vs
selective RoM on Mamba-2 at several sizes, the dense series bracketing the RoM runs). CPU-sized: the runs are
resolved and counted, and the smallest of each kind takes one training step on CPU at a tiny length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rom.accounting import count_params
from rom.config import SSM_PROJECTIONS, Expertization, SsmKind

pytest.importorskip("jsonschema")
from tests.test_pipeline_studies import load_study, resolved_runs, schema_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_mamba2_study_is_valid_and_compares_the_three_forms():
    study = load_study("mamba2")
    assert schema_errors(study) == []
    runs = resolved_runs(study)
    assert all(r.model.ssm == SsmKind.MAMBA2 for r in runs.values())
    by = {}
    for r in runs.values():
        if r.role == "scaling":
            key = r.model.family if r.model.family == "mamba2" else r.model.rom.expertization.value
            by.setdefault(key, []).append(r)
    assert set(by) == {"mamba2", "comprehensive"} and len(by["comprehensive"]) >= 3
    selective = [r for r in runs.values() if r.model.rom.expertization == Expertization.SELECTIVE]
    assert len(selective) >= 3 and all(r.role == "ablation" for r in selective)
    for r in selective:  # each selective run has a comprehensive scaling run of its shape to be read against
        assert any((c.model.d_model, c.model.n_layer) == (r.model.d_model, r.model.n_layer)
                   for c in by["comprehensive"])
        assert r.model.rom.expert_projections == SSM_PROJECTIONS[SsmKind.MAMBA2].selective
    dense = max(count_params(r.model).active_nonembedding for r in by["mamba2"])
    rom = max(count_params(r.model).active_nonembedding for r in by["comprehensive"])
    assert dense >= 2.5 * rom  # the dense curve brackets what it is read against
    assert len({r.run_id for r in runs.values()}) == len(runs)


def test_mamba2_study_smallest_models_step_on_cpu():
    from rom.models import build_model

    runs = resolved_runs(load_study("mamba2"))
    for name in ("mamba2-xs", "rom2-comp-xs", "rom2-sel-xs"):
        cfg = runs[name].model
        torch.manual_seed(0)
        model = build_model(cfg, backend="reference")
        assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total
        out = model(torch.randint(0, cfg.vocab_size, (1, 32)))
        (out.logits.float().logsumexp(-1).mean() + out.aux_loss).backward()


def test_tiny_study_has_no_mamba2_runs():
    assert all(r.model.ssm == SsmKind.MAMBA for r in resolved_runs(load_study("tiny")).values())


def test_snakemake_dry_run_builds_the_mamba2_dag(tmp_path):
    pytest.importorskip("snakemake")
    from tests.test_pipeline_dag import copy_pipeline, job_counts, snakemake

    work = copy_pipeline(tmp_path)
    result = snakemake(work, "-n", "--cores", "2", "--config", "study=mamba2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert job_counts(result.stdout)["train"] == len(load_study("mamba2")["runs"])


def test_rom_mamba2_run_writes_its_record_part(tmp_path):
    """The training loop on a RoM Mamba-2 model: the train part carries its family and the accounting's counts."""
    from rom.config import run_config_from_dict
    from rom.records import load_part
    from rom.train.loop import train
    from tests.test_train_support import make_data, tiny_config

    data = make_data(tmp_path / "data", n_train=8_000, n_val=2_000)
    raw = tiny_config(tokens=32 * 4 * 4, eval_every=0, checkpoint_every=2)
    raw["model"].update(ssm="mamba2", mamba2={"headdim": 16, "d_state": 8, "chunk_size": 16},
                        rom={"num_experts": 4, "top_k": 1, "expertization": "comprehensive"})
    cfg = run_config_from_dict(raw)
    train(cfg, data, tmp_path / "run")
    part = load_part(tmp_path / "run" / "train.json", "train")
    assert part["family"] == "rom-mamba2" and part["run_id"] == cfg.run_id
    assert part["params"]["total"] == count_params(cfg.model).total
    assert part["training"]["steps"] == 4 and not part["training"]["diverged"]
