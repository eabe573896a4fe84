"""Parameter accounting against the paper's shapes and the real modules; FLOPs against torch and fvcore."""

import pytest
import torch

from rom.accounting import count_flops, count_params, mean_attended_keys, summary
from rom.config import ModelConfig, Pattern, Projection, load_model_config, model_preset
from rom.models import build_model


@pytest.mark.parametrize(
    "preset, total, active",
    [
        ("mamba-115m", 115.1e6, 115.1e6),
        ("mamba-370m", 352.8e6, 352.8e6),
        ("mamba-765m", 765.1e6, 765.1e6),
        ("mamba-1.3b", 1334.7e6, 1334.7e6),
        ("rom-mamba-1.3b-e8", 9.79e9, 1.335e9),
        ("samba-421m", 421.8e6, 421.8e6),
    ],
)
def test_paper_parameter_counts(preset, total, active):
    p = count_params(model_preset(preset))
    assert abs(p.total - total) / total < 0.005
    assert abs(p.active - active) / active < 0.005


# dt_rank 8 keeps every matmul dimension a multiple of 8, so no alignment padding enters the measured counts
SMALL = dict(d_model=32, n_layer=4, vocab_size=101, mamba={"dt_rank": 8})
ARCHS = {
    "mamba": dict(pattern="mamba"),
    "rom": dict(pattern="rom", rom={"num_experts": 4, "top_k": 1}),
    "rom-all-independent-top2": dict(
        pattern="rom", rom={"num_experts": 3, "top_k": 2, "routing": "independent",
                            "expert_projections": [p.value for p in Projection]}
    ),
    "hybrid": dict(pattern="hybrid", mlp="dense", d_ff=48, attention={"n_heads": 4, "window": 8}),
    "hybrid-rom-moe": dict(pattern="hybrid", hybrid_ssm="rom", mlp="moe", moe_every=2, d_ff=48,
                           attention={"n_heads": 4, "window": 8}, rom={"num_experts": 4}, moe={"num_experts": 4}),
    "untied": dict(pattern="mamba", tie_embeddings=False),
}


def _cfg(arch: str) -> ModelConfig:
    from rom.config import from_dict

    cfg = from_dict(ModelConfig, {**SMALL, **ARCHS[arch]}, "model")
    cfg.validate()
    return cfg


@pytest.mark.parametrize("arch", list(ARCHS))
def test_count_matches_real_model(arch):
    cfg = _cfg(arch)
    model = build_model(cfg, backend="reference")
    p = count_params(cfg)
    assert p.total == model.num_parameters()
    assert p.total == sum(c.total for c in p.components.values())
    assert p.active <= p.total
    if cfg.pattern == Pattern.MAMBA:
        assert p.active == p.total


def test_active_parameters_of_top1_rom_equal_dense():
    dense = count_params(load_model_config("mamba-115m"))
    rom = count_params(load_model_config("rom-mamba-115m-e8"))
    router = rom.components["mixer.router"].total
    assert rom.active - router == dense.active
    assert rom.total > 5 * dense.total


def test_mean_attended_keys():
    assert mean_attended_keys(4, 8) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert mean_attended_keys(6, 2) == pytest.approx((1 + 2 + 2 + 2 + 2 + 2) / 6)


def test_training_flops_are_three_times_forward():
    s = summary(model_preset("samba-421m"), 4096)
    assert s["flops_per_token_train"] == pytest.approx(3 * s["flops_per_token_fwd"])
    assert s["params_active_nonembedding"] == s["params_active"] - s["params_embedding"]


@pytest.mark.parametrize("arch", ["mamba", "rom", "rom-all-independent-top2", "hybrid", "hybrid-rom-moe"])
def test_matmul_flops_agree_with_torch_flop_counter(arch):
    from rom.flop_counters import torch_counter

    cfg = _cfg(arch)
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference").eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    measured = torch_counter(model, ids)["matmul_per_token"]
    analytic = count_flops(cfg, 16).matmul_fwd
    assert abs(measured - analytic) / analytic < 0.02, (measured, analytic)


@pytest.mark.parametrize("arch", ["mamba", "rom", "hybrid"])
def test_matmul_flops_agree_with_fvcore(arch):
    pytest.importorskip("fvcore")
    from rom.flop_counters import fvcore_counter

    cfg = _cfg(arch)
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference").eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    result = fvcore_counter(model, ids)
    analytic = count_flops(cfg, 16).matmul_fwd
    assert abs(result["matmul_per_token"] - analytic) / analytic < 0.02, result


@pytest.mark.parametrize("arch", list(ARCHS))
def test_measure_counts_on_meta_device_like_a_real_cpu_model(arch):
    """measure() counts on the meta device (no weights allocated) and must see what a real CPU model does."""
    from rom.flop_counters import measure, torch_counter

    cfg = _cfg(arch)
    torch.manual_seed(0)
    real = torch_counter(build_model(cfg, backend="reference").eval(), torch.randint(0, cfg.vocab_size, (1, 16)))
    out = measure(cfg, seq_len=16)
    assert out["torch"]["device"] == "meta"
    assert out["torch"]["matmul_per_token"] == real["matmul_per_token"]
    assert abs(out["torch"]["rel_diff_vs_analytic"]) < 0.02


def test_measure_skips_fvcore_past_its_size_limit_and_says_so(monkeypatch):
    import rom.flop_counters as fc

    cfg = _cfg("rom")
    monkeypatch.setattr(fc, "FVCORE_MAX_PARAMS", count_params(cfg).total - 1)
    out = fc.measure(cfg, seq_len=16)
    assert "FVCORE_MAX_PARAMS" in out["fvcore"]["skipped"] and out["fvcore"]["rel_diff_vs_analytic"] is None
    assert out["torch"]["matmul_per_token"] > 0


def test_measure_counts_the_paper_rom_model_without_its_weights():
    """9.8B parameters (39 GB in fp32) counted in seconds: the meta device allocates nothing."""
    from rom.flop_counters import measure

    cfg = model_preset("rom-mamba-1.3b-e8")
    out = measure(cfg, seq_len=64)
    assert out["torch"]["matmul_per_token"] == pytest.approx(out["analytic_matmul_per_token"], rel=0.02)
    assert "skipped" in out["fvcore"]


def test_every_mixer_has_one_entry_in_the_mixer_map():
    from rom.config import Mixer
    from rom.layers.mixers import MIXERS

    assert set(MIXERS) == set(Mixer), "each Mixer needs its constructor and accounting in rom/layers/mixers.py"


def test_a_mixer_without_an_entry_is_a_clear_error(monkeypatch):
    from rom.config import ConfigError, Mixer
    from rom.layers import mixers
    from rom.layers.block import build_mixer

    cfg = ModelConfig(d_model=64, n_layer=2, vocab_size=128)
    monkeypatch.delitem(mixers.MIXERS, Mixer.MAMBA)
    with pytest.raises(ConfigError, match="mixer 'mamba' has no entry in rom/layers/mixers.py MIXERS"):
        count_params(cfg)
    with pytest.raises(ConfigError, match="mixer 'mamba' has no entry"):
        count_flops(cfg, 64)
    with pytest.raises(ConfigError, match="mixer 'mamba' has no entry"):
        build_mixer(Mixer.MAMBA, cfg, "reference")


def test_accounting_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, rom.accounting; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
