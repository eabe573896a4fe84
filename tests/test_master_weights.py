"""train.master_weights on CPU: which weights become bf16, the AdamW update against torch's, gradient folding,
clipping, optimizer state, and whole training runs (close to the default policy, exact resume, fp32 model file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rom.cli import main as rom_main
from rom.config import ConfigError, run_config_from_dict
from rom.kernels.reference.adamw import adamw_step_one
from rom.layers.expert_linear import ExpertLinear
from rom.models.files import load_state_dict
from rom.models.lm import LanguageModel
from rom.train import factory
from rom.train.distributed import DistInfo
from rom.train.loop import check_master_weights, train
from rom.train.master_weights import (MasterWeightAdamW, master_param_groups, to_working_weights,
                                      working_weight_names)
from rom.train.optim import param_groups
from test_train_support import make_data, run_cli, step_losses, tiny_config, write_config

BF16_CPU = {"precision": "bf16", "eval_every": 0}


def _tiny_lm() -> LanguageModel:
    cfg = run_config_from_dict(tiny_config()).model
    return factory.make_model(cfg, "reference")


def test_working_weights_are_the_projections_only() -> None:
    model = _tiny_lm()
    names = working_weight_names(model)
    kinds = {type(m).__name__ for n, m in model.named_modules() if f"{n}.weight" in names}
    assert kinds == {"Linear", "ExpertLinear"}
    assert any("in_experts" in n for n in names) and any("out_experts" in n for n in names)
    assert not any("embedding" in n or "lm_head" in n or "router" in n or "conv" in n or "A_log" in n
                   for n in names)  # tied head, router, conv, A_log stay fp32
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = to_working_weights(model)
    assert list(pairs) == names
    for name, p in model.named_parameters():
        if name in pairs:
            assert p.dtype == torch.bfloat16 and pairs[name][1].dtype == torch.float32
            assert torch.equal(pairs[name][1], before[name]) and torch.equal(p, before[name].to(torch.bfloat16))
        else:
            assert p.dtype == torch.float32


def _params_and_grads(seed: int) -> tuple[nn.Module, list[list[torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(24, 40), nn.LayerNorm(40), ExpertLinear(3, 40, 16))
    grads = [[torch.randn_like(p).to(torch.bfloat16).float() for p in model.parameters()] for _ in range(4)]
    return model, grads


def test_adamw_step_reference_is_torch_adamw() -> None:
    torch.manual_seed(0)
    p = torch.randn(300)
    ours, m, v, work = p.clone(), torch.zeros(300), torch.zeros(300), torch.empty(300, dtype=torch.bfloat16)
    theirs = nn.Parameter(p.clone())
    opt = torch.optim.AdamW([theirs], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    for step in range(1, 6):
        g = torch.randn(300).to(torch.bfloat16)
        theirs.grad = g.float()
        opt.step()
        adamw_step_one(ours, g, m, v, work, 3e-3, 0.1, 0.9, 0.95, 1e-8, step)
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(m, opt.state[theirs]["exp_avg"], rtol=1e-6, atol=1e-8)
    assert torch.equal(work, ours.to(torch.bfloat16))


def _master_optimizer(model: nn.Module) -> MasterWeightAdamW:
    pairs = to_working_weights(model)
    return MasterWeightAdamW(master_param_groups(param_groups(model, 0.1), pairs), pairs, "reference", lr=3e-3,
                             betas=(0.9, 0.95), eps=1e-8)


def test_master_weight_optimizer_tracks_fp32_adamw_with_clipping() -> None:
    """Same gradients (bf16-representable) into AdamW on fp32 parameters and into the master-weight optimizer:
    masters follow the fp32 parameters, other parameters match, working copies are the rounded masters."""
    fp32_model, grads = _params_and_grads(0)
    mw_model, _ = _params_and_grads(0)
    ref = torch.optim.AdamW(param_groups(fp32_model, 0.1), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    opt = _master_optimizer(mw_model)
    for step_grads in grads:
        for p, q, g in zip(fp32_model.parameters(), mw_model.parameters(), step_grads):
            p.grad, q.grad = g.clone(), g.to(q.dtype)
        want = torch.nn.utils.clip_grad_norm_(fp32_model.parameters(), 0.5)
        got = opt.clip_grad_norm_(0.5)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        ref.step()
        opt.step()
    masters = dict(zip(opt.names, opt.masters))
    for (name, p), q in zip(fp32_model.named_parameters(), mw_model.parameters()):
        if name in masters:
            # the clipped gradient is rounded to bf16 in the working weight's .grad, hence not 1e-6
            torch.testing.assert_close(masters[name], p.detach(), rtol=2e-3, atol=2e-5)
            assert torch.equal(q.detach(), masters[name].to(torch.bfloat16))
        else:
            torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("keep_grad_tensors", [False, True])
def test_fold_gradients_sums_micro_batches_in_fp32(keep_grad_tensors: bool) -> None:
    model, _ = _params_and_grads(1)
    opt = _master_optimizer(model)
    w = opt.working[0]
    parts = [torch.randn_like(w) for _ in range(3)]
    for g in parts:
        w.grad = g.clone() if w.grad is None else w.grad.add_(g)  # as a backward would write / add
        opt.fold_gradients(keep_grad_tensors)
        assert (w.grad is not None and not w.grad.any()) if keep_grad_tensors else w.grad is None
    want = sum(g.float() for g in parts)
    torch.testing.assert_close(opt.masters[0].grad, want, rtol=0, atol=0)
    assert opt.gradients()[0] is opt.masters[0].grad
    opt.zero_grad(set_to_none=not keep_grad_tensors)
    assert (opt.masters[0].grad is None) != keep_grad_tensors


def test_optimizer_state_round_trip_restores_masters() -> None:
    model, grads = _params_and_grads(2)
    opt = _master_optimizer(model)
    for p, g in zip(model.parameters(), grads[0]):
        p.grad = g.to(p.dtype)
    opt.step()
    saved = opt.state_dict()
    other, _ = _params_and_grads(3)  # different weights
    opt2 = _master_optimizer(other)
    opt2.load_state_dict(saved)
    for m1, m2, w2 in zip(opt.masters, opt2.masters, opt2.working):
        assert torch.equal(m1, m2) and torch.equal(w2.detach(), m2.to(torch.bfloat16))
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(saved["state"][0]["exp_avg"])
    saved["master_weights"]["names"] = ["x"]
    with pytest.raises(ValueError, match="expected master weights"):
        opt2.load_state_dict(saved)


def test_master_weights_need_bf16_autocast() -> None:
    with pytest.raises(ConfigError, match="master_weights=true needs bf16 autocast"):
        run_config_from_dict(tiny_config(master_weights=True, precision="fp32"))
    t = run_config_from_dict(tiny_config(master_weights=True)).train  # precision auto: fp32 on CPU
    with pytest.raises(ConfigError, match="train.precision=auto is fp32 on cpu"):
        check_master_weights(t, DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                                         backend="none"))


def test_master_weights_enter_the_run_id_only_when_on() -> None:
    default = run_config_from_dict(tiny_config())
    assert run_config_from_dict(tiny_config(master_weights=False)).run_id == default.run_id
    assert run_config_from_dict(tiny_config(master_weights=True)).run_id != default.run_id


def test_training_with_master_weights_follows_the_default_policy(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", n_train=8_000, n_val=2_000)
    small = {"tokens": 32 * 4 * 6, "checkpoint_every": 100, **BF16_CPU}
    train(run_config_from_dict(tiny_config(**small)), data, tmp_path / "amp", device="cpu")
    train(run_config_from_dict(tiny_config(master_weights=True, **small)), data, tmp_path / "mw", device="cpu")
    train(run_config_from_dict(tiny_config(master_weights=True, micro_batch_size=2, **small)), data,
          tmp_path / "mw_accum", device="cpu")
    amp, mw, accum = (step_losses(tmp_path / d) for d in ("amp", "mw", "mw_accum"))
    assert amp.keys() == mw.keys() == accum.keys()
    assert all(mw[k] == pytest.approx(amp[k], rel=1e-3) for k in amp)
    assert all(accum[k] == pytest.approx(mw[k], rel=2e-3) for k in amp)
    assert "master weights: " in (tmp_path / "mw" / "train.log").read_text()
    state = load_state_dict(tmp_path / "mw")
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_resume_with_master_weights_is_exact(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", n_train=8_000, n_val=2_000)
    cfg = tiny_config(master_weights=True, tokens=32 * 4 * 8, **BF16_CPU)
    reference = tmp_path / "reference"
    train(run_config_from_dict(cfg), data, reference, device="cpu")
    out = tmp_path / "run"
    args = ["train", "--config", str(write_config(tmp_path / "run.yaml", cfg)), "--data", str(data), "--out",
            str(out)]
    stopped = run_cli(args, env={"ROM_TEST_SIGNAL_AT_STEP": "5:SIGTERM"})
    assert stopped.returncode == 128 + 15, stopped.stderr
    assert json.loads((out / "checkpoint" / "meta.json").read_text())["step"] == 5
    assert rom_main(args) == 0
    assert step_losses(out) == step_losses(reference)
    a = load_state_dict(out)
    b = load_state_dict(reference)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_torchrun_with_master_weights_and_accumulation_matches_one_process(tmp_path: Path) -> None:
    """Two ranks x 2 micro-batches (DDP reduces each micro-batch's bf16 gradients before they are folded into
    fp32) against one process on the full batch of 4: the same losses within bf16 gradient rounding."""
    data = make_data(tmp_path / "data", n_train=8_000, n_val=2_000)
    cfg = tiny_config(master_weights=True, tokens=32 * 4 * 4, checkpoint_every=100, **BF16_CPU)
    cfg["model"]["rom"]["load_balance_coef"] = 0.0  # nonlinear in the tokens each rank sees (test_train_loop)
    one = tmp_path / "one"
    train(run_config_from_dict(cfg), data, one, device="cpu")
    cfg["train"]["micro_batch_size"] = 1
    two = tmp_path / "two"
    result = run_cli(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg)), "--data", str(data),
                      "--out", str(two)], torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((two / "train.json").read_text())["training"]["world_size"] == 2
    a, b = step_losses(one), step_losses(two)
    assert a.keys() == b.keys() == set(range(1, 5))
    assert all(b[k] == pytest.approx(a[k], rel=2e-3) for k in a), (a, b)
