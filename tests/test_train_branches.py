"""Warmup-stable-decay schedule and its cooldown branches (train.schedule=wsd, train.cooldown_branches).

A branch is taken from the stable phase, decays, is validated and recorded, and the main run continues from
the restored state: its weights must be bit for bit those of the run without branches, a branch's result
that of a separate run of the branch's budget, and a kill during a branch must resume to the same record.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
import yaml

from rom.cli import main as rom_main
from rom.config import ConfigError, run_config_from_dict
from rom.models.files import load_state_dict
from rom.records import load_part
from rom.train.loop import train
from rom.train.metrics import read_metrics
from rom.train.schedule import wsd_lr_at
from test_train_support import make_data, run_cli, step_losses, tiny_config, write_config

REPO = Path(__file__).resolve().parent.parent
STEPS = 40  # tiny_config: 4 x 32 tokens per step
WSD = {"tokens": 32 * 4 * STEPS, "schedule": "wsd", "decay_fraction": 0.2, "warmup_fraction": 0.1,
       "eval_every": 0, "checkpoint_every": 10, "log_every": 1}


def wsd_config(**train: object) -> dict:
    return tiny_config(**{**WSD, **train})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def plain_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    train(run_config_from_dict(wsd_config()), data_dir, out)
    return out


@pytest.fixture(scope="module")
def branched_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("branched") / "run"
    train(run_config_from_dict(wsd_config(cooldown_branches=[0.25, 0.5])), data_dir, out)
    return out


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(run_dir)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ----------------------------------------------------------------------------------------- schedule


def test_wsd_schedule_shape() -> None:
    lrs = [wsd_lr_at(s, 100, 1.0, 10, 20, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert all(lr == 1.0 for lr in lrs[9:80])  # stable
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:]))  # strictly decaying
    assert lrs[80] == pytest.approx(0.1 + 0.9 * (1 - (1 / 20) ** 0.5))  # 1-sqrt
    assert lrs[-1] == pytest.approx(0.1)  # reaches the floor on the last step


def test_branch_steps_and_validation() -> None:
    t = run_config_from_dict(wsd_config(cooldown_branches=[0.25, 0.5])).train
    assert t.steps == 40 and t.warmup_steps == 4 and t.decay_steps(40) == 8
    assert [t.branch_steps(f) for f in (0.25, 0.5)] == [10, 20]
    assert [t.decay_steps(n) for n in (10, 20)] == [2, 4]
    with pytest.raises(ConfigError, match="schedule=wsd"):
        run_config_from_dict(wsd_config(schedule="cosine", cooldown_branches=[0.5]))
    with pytest.raises(ConfigError, match="increasing fractions"):
        run_config_from_dict(wsd_config(cooldown_branches=[0.5, 0.25]))
    with pytest.raises(ConfigError, match="increasing fractions"):
        run_config_from_dict(wsd_config(cooldown_branches=[1.0]))
    with pytest.raises(ConfigError, match="before the end of the warmup"):
        run_config_from_dict(wsd_config(cooldown_branches=[0.1]))  # 4 steps, decay from step 3
    with pytest.raises(ConfigError, match="decay_fraction"):
        run_config_from_dict(wsd_config(decay_fraction=0.0))


def test_new_fields_keep_existing_run_ids() -> None:
    """Committed GPU-study runs still hash to their ids: the fields added later are dropped at default."""
    finals = sorted(glob.glob(str(REPO / "results" / "*" / "runs" / "*" / "final.json")))
    assert finals, "no committed run records to check"
    for path in finals:
        record = json.loads(Path(path).read_text())
        assert run_config_from_dict(record["config"]).run_id == record["run_id"], path
    configs = sorted(glob.glob(str(REPO / "results" / "gpu" / "runs" / "*" / "config.yaml")))
    for path in configs:
        cfg = run_config_from_dict(yaml.safe_load(Path(path).read_text()))
        assert cfg.run_id == Path(path).parent.name, path
    base = run_config_from_dict(tiny_config())
    assert run_config_from_dict(tiny_config(schedule="cosine", decay_fraction=0.2)).run_id == base.run_id
    assert run_config_from_dict(tiny_config(schedule="wsd")).run_id != base.run_id
    assert run_config_from_dict(wsd_config(cooldown_branches=[0.5])).run_id != run_config_from_dict(
        wsd_config()).run_id


# ----------------------------------------------------------------------------------------- branches


def test_branches_leave_the_main_run_bit_for_bit(plain_run: Path, branched_run: Path) -> None:
    _assert_same_weights(plain_run, branched_run)
    assert step_losses(plain_run) == step_losses(branched_run)  # branch lines do not enter the main curve
    plain = load_part(plain_run / "train.json", "train")
    part = load_part(branched_run / "train.json", "train")
    assert part["training"]["final_val_loss"] == plain["training"]["final_val_loss"]
    assert plain["branches"] == [] and part["training"]["schedule"]["kind"] == "wsd"
    assert part["training"]["schedule"]["decay_start"] == 32
    assert [b["fraction"] for b in part["branches"]] == [0.25, 0.5]
    for b, steps, start in zip(part["branches"], (10, 20), (8, 16)):
        assert b["steps"] == steps and b["tokens"] == steps * 128 and b["start_step"] == start
        assert b["schedule"]["decay_start"] == start and b["schedule"]["warmup_steps"] == 4
        assert b["val_loss"] is not None and b["val_loss"] > 0 and not b["diverged"]
        assert 0 < b["branch_time_s"] <= b["wall_time_s"]
    assert part["training"]["branch_time_s"] == pytest.approx(sum(b["branch_time_s"] for b in part["branches"]))
    rows = [r for r in read_metrics(branched_run / "metrics.jsonl") if "branch" in r]
    assert {r["branch"]["fraction"] for r in rows} == {0.25, 0.5}
    assert all("train/loss" not in r for r in rows)
    finals = [r["branch"] for r in rows if "val/loss" in r["branch"]]
    assert [f["val/loss"] for f in finals] == [b["val_loss"] for b in part["branches"]]
    lrs = [r["branch"]["lr"] for r in rows if r["branch"]["fraction"] == 0.5 and "lr" in r["branch"]]
    assert lrs[-1] == pytest.approx(3e-3 * 0.1)  # decayed to the final lr


def test_branch_equals_a_separate_run_of_its_budget(branched_run: Path, data_dir: Path, tmp_path: Path) -> None:
    part = load_part(branched_run / "train.json", "train")
    branch = part["branches"][1]
    # a run of half the tokens with the same WSD settings and the same warmup steps (4 of its 20)
    cfg = run_config_from_dict(wsd_config(tokens=32 * 4 * 20, warmup_fraction=0.2))
    assert cfg.train.warmup_steps == 4 and cfg.train.steps == branch["steps"]
    separate = train(cfg, data_dir, tmp_path / "half")
    assert separate["training"]["final_val_loss"] == pytest.approx(branch["val_loss"], rel=1e-6)
    assert separate["training"]["schedule"] == branch["schedule"]


def test_kill_during_a_branch_resumes_to_the_same_record(branched_run: Path, data_dir: Path,
                                                         tmp_path: Path) -> None:
    cfg_file = write_config(tmp_path / "run.yaml", wsd_config(cooldown_branches=[0.25, 0.5]))
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg_file), "--data", str(data_dir), "--out", str(out)]
    killed = run_cli(args, env={"ROM_TEST_SIGNAL_AT_BRANCH_STEP": "18:SIGKILL"})  # inside the 0.5 branch
    assert killed.returncode == -9, killed.stderr
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["step"] == 16 and "before-branch-0.5" in meta["file"]
    half_done = [r for r in read_metrics(out / "metrics.jsonl") if r.get("branch", {}).get("fraction") == 0.5]
    assert half_done  # the cut-short branch had logged lines

    assert rom_main(args) == 0
    _assert_same_weights(branched_run, out)
    ref = load_part(branched_run / "train.json", "train")["branches"]
    got = load_part(out / "train.json", "train")["branches"]
    assert [(b["fraction"], b["steps"], b["val_loss"]) for b in got] == [
        (b["fraction"], b["steps"], b["val_loss"]) for b in ref]
    rows = [r["branch"] for r in read_metrics(out / "metrics.jsonl") if "branch" in r]
    ref_rows = [r["branch"] for r in read_metrics(branched_run / "metrics.jsonl") if "branch" in r]
    assert [(r["fraction"], r["step"], r.get("train/loss")) for r in rows] == [
        (r["fraction"], r["step"], r.get("train/loss")) for r in ref_rows]  # the partial lines were dropped
