"""Parameter and FLOP accounting of the Mamba-2 mixers (rom/layers/mixers.py) against the built modules, the
published Mamba-2 presets, and (where installed) transformers' Mamba2 models."""

from __future__ import annotations

import pytest
import torch

from rom.accounting import count_flops, count_params, summary
from rom.config import load_model_config, model_preset
from rom.layers.mixers import ssd_scan_flops
from rom.models import build_model

SMALL = ["model.ssm=mamba2", "d_model=32", "n_layer=4", "vocab_size=101", "mamba2.headdim=16", "mamba2.d_state=8"]
CONFIGS = {
    "dense": ["pattern=mamba"],
    "dense-2groups-bias": ["pattern=mamba", "mamba2.ngroups=2", "mamba2.proj_bias=true", "mamba2.conv_bias=false"],
    "selective": ["pattern=rom", "rom.num_experts=4", "rom.expertization=selective"],
    "comprehensive-top2": ["pattern=rom", "rom.num_experts=3", "rom.top_k=2", "rom.expertization=comprehensive"],
    "independent-b-out": ["pattern=rom", "rom.num_experts=3", "rom.routing=independent",
                          "rom.expert_projections=[b, out]"],
    "hybrid-rom": ["pattern=hybrid", "hybrid_ssm=rom", "mlp=dense", "d_ff=48", "attention.n_heads=4",
                   "attention.window=8", "rom.num_experts=4", "rom.expertization=comprehensive"],
    "untied": ["pattern=mamba", "tie_embeddings=false"],
}


def _cfg(name):
    return load_model_config("mamba-115m", [o.removeprefix("model.") for o in SMALL + CONFIGS[name]])


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once


@pytest.mark.parametrize("name", list(CONFIGS))
def test_count_matches_the_built_model(name):
    cfg = _cfg(name)
    torch.manual_seed(0)
    assert count_params(cfg).total == _numel(build_model(cfg, backend="reference"))


def test_active_parameters_and_flops_of_expert_banks():
    dense, sel, comp = _cfg("dense"), _cfg("selective"), load_model_config(
        "mamba-115m", [o.removeprefix("model.") for o in SMALL] + ["pattern=rom", "rom.num_experts=4",
                                                                  "rom.expertization=comprehensive"])
    pd, ps, pc = count_params(dense), count_params(sel), count_params(comp)
    E, Dm = 4, 32
    routers = dense.n_layer * E * Dm
    assert ps.active == pd.total + routers and pc.active == pd.total + routers  # top-1: one expert's worth
    in_out = dense.n_layer * (Dm * (2 * 64) + 64 * Dm)  # z, x and out_proj
    assert ps.total - ps.active == (E - 1) * in_out
    bcdt = dense.n_layer * Dm * (2 * 8 + 4)
    assert pc.total - pc.active == (E - 1) * (in_out + bcdt)
    fd, fs = count_flops(dense, 64), count_flops(sel, 64)
    assert fs.fwd - fd.fwd == pytest.approx(2 * routers)  # top-1: only the router adds FLOPs
    assert fd.components["scan"] == dense.n_layer * ssd_scan_flops(64, 4, 1, 8, 64)


def test_scan_flops_use_the_chunk_the_scan_uses():
    cfg = _cfg("dense")  # chunk_size 256 by default, longer than these sequences
    f32, f512 = count_flops(cfg, 32).components["scan"], count_flops(cfg, 512).components["scan"]
    assert f32 == cfg.n_layer * ssd_scan_flops(64, 4, 1, 8, 32)
    assert f512 == cfg.n_layer * ssd_scan_flops(64, 4, 1, 8, 256)
    assert summary(cfg, 64)["family"] == "mamba2" and summary(_cfg("selective"), 64)["family"] == "rom-mamba2"


# total parameters worked out by hand for the 130m shape (tied embeddings, vocab 50288); the other sizes are
# checked against the built model and transformers' Mamba2
PRESETS = {"mamba2-130m": 128_989_632, "mamba2-370m": None, "mamba2-780m": None, "mamba2-1.3b": None}


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_count_exactly(name):
    cfg = model_preset(name)
    cfg.validate()
    assert (cfg.mamba2.d_state, cfg.mamba2.headdim, cfg.mamba2.expand, cfg.vocab_size) == (128, 64, 2, 50288)
    with torch.device("meta"):
        model = build_model(cfg, backend="reference")
    assert count_params(cfg).total == _numel(model)
    if PRESETS[name] is not None:
        assert count_params(cfg).total == PRESETS[name]


@pytest.mark.parametrize("name", ["rom-mamba2-130m-e8-selective", "rom-mamba2-130m-e8-comprehensive"])
def test_rom_presets_count_exactly(name):
    cfg = model_preset(name)
    cfg.validate()
    with torch.device("meta"):
        model = build_model(cfg, backend="reference")
    assert count_params(cfg).total == _numel(model)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_transformers_mamba2(name):
    transformers = pytest.importorskip("transformers")
    cfg = model_preset(name)
    m = cfg.mamba2
    hf = transformers.Mamba2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer, state_size=m.d_state,
        expand=m.expand, head_dim=m.headdim, num_heads=cfg.mamba2_nheads, n_groups=m.ngroups, conv_kernel=m.d_conv,
        use_bias=m.proj_bias, use_conv_bias=m.conv_bias, tie_word_embeddings=True)
    with torch.device("meta"):
        model = transformers.Mamba2ForCausalLM(hf)
    assert count_params(cfg).total == _numel(model)


@pytest.mark.parametrize("name", ["dense", "comprehensive-top2", "independent-b-out"])
def test_matmul_flops_agree_with_torch_flop_counter(name):
    from rom.flop_counters import torch_counter

    cfg = _cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference").eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    measured = torch_counter(model, ids)["matmul_per_token"]
    analytic = count_flops(cfg, 16).matmul_fwd
    assert abs(measured - analytic) / analytic < 0.02, (measured, analytic)


@pytest.mark.parametrize("name", ["dense", "selective"])
def test_matmul_flops_agree_with_fvcore(name):
    pytest.importorskip("fvcore")
    from rom.flop_counters import fvcore_counter

    cfg = _cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference").eval()
    result = fvcore_counter(model, torch.randint(0, cfg.vocab_size, (2, 16)))
    analytic = count_flops(cfg, 16).matmul_fwd
    assert abs(result["matmul_per_token"] - analytic) / analytic < 0.02, result
