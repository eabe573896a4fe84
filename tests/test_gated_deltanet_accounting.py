"""Gated DeltaNet accounting (rom/layers/mixers.py entries) against the built models, FLOPs against torch's
counter, the presets' exact parameter counts, and language models with GDN mixers training on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom.accounting import count_flops, count_params
from rom.config import ModelConfig, from_dict, model_preset
from rom.kernels.reference.gated_delta import gated_delta_rule_reference
from rom.layers.mixers import gdn_recurrence_flops
from rom.models import build_model

# 8 heads: every expert bank (the decay and beta banks have one output per head) is a multiple of 8 wide, so no
# alignment padding of the grouped GEMM (rom.kernels.experts) enters the measured counts
SMALL = dict(d_model=32, n_layer=2, vocab_size=101, ssm="gated-deltanet",
             gated_deltanet={"num_heads": 8, "head_dim": 4, "chunk_size": 8})
ARCHS = {
    "gdn": dict(pattern="mamba"),
    "gdn-mlp-untied": dict(pattern="mamba", mlp="dense", d_ff=48, tie_embeddings=False,
                           gated_deltanet={"num_heads": 2, "head_dim": 8, "conv_bias": True, "expand_v": 1}),
    "rom-gdn-selective": dict(pattern="rom", rom={"num_experts": 4, "expertization": "selective"}),
    "rom-gdn-comprehensive": dict(pattern="rom", rom={"num_experts": 4, "expertization": "comprehensive"}),
    "rom-gdn-comprehensive-independent-top2": dict(
        pattern="rom", rom={"num_experts": 3, "top_k": 2, "routing": "independent", "expertization": "comprehensive"}),
    "hybrid-rom-gdn-moe": dict(pattern="hybrid", hybrid_ssm="rom", mlp="moe", moe_every=2, d_ff=48,
                               attention={"n_heads": 4, "window": 8}, rom={"num_experts": 4, "expertization": "selective"},
                               moe={"num_experts": 4}),
}


def _cfg(arch: str) -> ModelConfig:
    cfg = from_dict(ModelConfig, {**SMALL, **ARCHS[arch]}, "model")
    cfg.validate()
    return cfg


@pytest.mark.parametrize("arch", list(ARCHS))
def test_count_matches_real_model(arch):
    cfg = _cfg(arch)
    model = build_model(cfg, backend="reference")
    p = count_params(cfg)
    assert p.total == model.num_parameters() == sum(q.numel() for q in model.parameters())
    assert p.total == sum(c.total for c in p.components.values())
    assert p.active <= p.total
    if not cfg.uses_rom:
        assert p.active == p.total


def test_mixer_components_match_the_module():
    """Component by component for one layer: projections, convs, decay parameters and norm gain."""
    cfg = _cfg("rom-gdn-selective")
    mixer = build_model(cfg, backend="reference").layers[0].mixer
    counted: dict[str, int] = {}
    from rom.layers.mixers import mixer_spec

    mixer_spec(cfg.layers()[0][0]).count_params(cfg, lambda name, total, active=None: counted.__setitem__(name, total))
    by_module = {
        "mixer.router": mixer.router.weight.numel(),
        "mixer.conv1d": sum(p.numel() for n, p in mixer.core.named_parameters() if "conv1d" in n),
        "mixer.A_log_dt_bias": mixer.core.A_log.numel() + mixer.core.dt_bias.numel(),
        "mixer.o_norm": mixer.core.o_norm_weight.numel(),
        "mixer.a_proj": mixer.proj["decay"].weight.numel(),
        "mixer.b_proj": mixer.proj["beta"].weight.numel(),
        "mixer.o_proj": mixer.o_experts.weight.numel(),
    }
    for name, n in by_module.items():
        assert counted[name] == n, name
    bank = mixer.experts["shared"].weight.numel()
    assert sum(counted[f"mixer.{p}_proj"] for p in "qkvg") == bank


def test_active_parameters_of_top1_rom_equal_dense_plus_router():
    dense = count_params(model_preset("gated-deltanet-370m"))
    rom = count_params(model_preset("rom-gated-deltanet-370m-e8"))
    assert rom.active - rom.components["mixer.router"].total == dense.active
    assert rom.total > 3 * dense.total


@pytest.mark.parametrize("arch", list(ARCHS))
def test_matmul_flops_agree_with_torch_flop_counter(arch):
    from rom.flop_counters import torch_counter

    cfg = _cfg(arch)
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference").eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    measured = torch_counter(model, ids)["matmul_per_token"]
    analytic = count_flops(cfg, 16).matmul_fwd
    assert abs(measured - analytic) / analytic < 0.02, (measured, analytic)


@pytest.mark.parametrize("arch", ["gdn", "rom-gdn-comprehensive"])
def test_measure_counts_on_meta_device_like_a_real_cpu_model(arch):
    from rom.flop_counters import measure, torch_counter

    cfg = _cfg(arch)
    torch.manual_seed(0)
    real = torch_counter(build_model(cfg, backend="reference").eval(), torch.randint(0, cfg.vocab_size, (1, 16)))
    out = measure(cfg, seq_len=16)
    assert out["torch"]["device"] == "meta"
    assert out["torch"]["matmul_per_token"] == real["matmul_per_token"]
    assert abs(out["torch"]["rel_diff_vs_analytic"]) < 0.02


@pytest.mark.parametrize("L,chunk", [(256, 64), (100, 64), (20, 64), (50, 16)])
def test_recurrence_flops_are_what_the_chunked_reference_computes(L, chunk):
    """torch's counter sees the reference's batched matmuls; the triangular solve (C (K + V) per token and head)
    is the one term it does not count."""
    from torch.utils.flop_counter import FlopCounterMode

    b, H, K, V = 2, 3, 16, 24
    q, k = (F.normalize(torch.randn(b, L, H, K), dim=-1) for _ in range(2))
    v, g, beta = torch.randn(b, L, H, V), -torch.rand(b, L, H), torch.rand(b, L, H)
    counter = FlopCounterMode(display=False)
    with counter:
        gated_delta_rule_reference(q, k, v, g, beta, chunk=chunk)
    C = min(chunk, L)
    padded = -(-L // C) * C / L
    solve = H * padded * C * (K + V)
    measured = sum(counter.get_flop_counts()["Global"].values()) / (b * L)
    assert measured + solve == pytest.approx(gdn_recurrence_flops(L, H, K, V, chunk))


def test_flops_name_the_recurrence_and_count_top_k_experts():
    dense, rom = _cfg("gdn"), _cfg("rom-gdn-comprehensive-independent-top2")
    fd, fr = count_flops(dense, 64), count_flops(rom, 64)
    assert fd.components["scan"] == fr.components["scan"] > 0
    assert fr.components["q_proj"] == 2 * fd.components["q_proj"]  # top-2 experts
    assert fr.components["router"] == rom.n_layer * 2 * 32 * 3 * 7  # one router per expert projection, per layer


@pytest.mark.parametrize("preset, total", [
    ("gated-deltanet-130m", 131_929_848),
    ("gated-deltanet-370m", 379_888_124),
    ("gated-deltanet-1.3b", 1_387_348_732),
    ("rom-gated-deltanet-130m-e8", 380_362_488),
    ("rom-gated-deltanet-370m-e8", 1_306_710_524),
    ("rom-gated-deltanet-1.3b-e8", 5_090_681_596),
])
def test_preset_parameter_counts_are_exact(preset, total):
    """The analytic count of every preset equals the parameters of the model built from it (on the meta device:
    no weights allocated)."""
    cfg = model_preset(preset)
    with torch.device("meta"):
        model = build_model(cfg, backend="reference")
    assert count_params(cfg).total == sum(p.numel() for p in model.parameters()) == total


def test_flame_1b_config_is_the_13b_preset():
    """fla-org/flame configs/gated_deltanet_1B.json: hidden 2048, 21 layers, 6 heads x 256, expand_v 2, hidden_ratio
    4 (intermediate 5632), untied embeddings, vocab 32000: per mixer layer about 6 d_model^2 (fla's docstring)."""
    cfg = model_preset("gated-deltanet-1.3b")
    p = count_params(cfg)
    per_layer = sum(c.total for n, c in p.components.items() if n.startswith("mixer.")) / cfg.n_layer
    assert per_layer == pytest.approx(6 * 2048**2, rel=0.01)


@pytest.mark.parametrize("arch", ["gdn", "rom-gdn-selective", "rom-gdn-comprehensive"])
def test_language_model_trains_on_cpu(arch):
    cfg = from_dict(ModelConfig, {**SMALL, **ARCHS[arch], "n_layer": 2, "mlp": "dense", "d_ff": 64}, "model")
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, cfg.vocab_size, (4, 33), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(8):
        out = model(ids[:, :-1])
        loss = F.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(lambda x: x == x, losses)) and losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("rom", [None, {"num_experts": 4, "top_k": 1, "expertization": "comprehensive"}])
def test_train_loop_runs_records_and_reloads_a_gdn_model(tmp_path, rom):
    """The toolkit's training loop on a GDN model: learns, records family and parameter counts, reloads."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_train_support import make_data, tiny_config

    from rom.config import run_config_from_dict
    from rom.models.files import load_trained_model
    from rom.records import load_part
    from rom.train.loop import train
    from rom.train.metrics import read_metrics

    data = make_data(tmp_path / "data")
    raw = tiny_config(tokens=32 * 4 * 40, lr=1e-2, eval_every=20)
    raw["model"] = {"d_model": 32, "n_layer": 2, "vocab_size": raw["model"]["vocab_size"], "ssm": "gated-deltanet",
                    "pattern": "rom" if rom else "mamba", "mlp": "dense",
                    "gated_deltanet": {"num_heads": 2, "head_dim": 8, "chunk_size": 16}, **({"rom": rom} if rom else {})}
    cfg = run_config_from_dict(raw)
    out = tmp_path / "run"
    train(cfg, data, out)
    part = load_part(out / "train.json", "train")
    assert part["family"] == ("rom-gated-deltanet" if rom else "gated-deltanet")
    assert part["params"]["total"] == count_params(cfg.model).total
    tr = part["training"]
    losses = [r["train/loss"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert not tr["diverged"] and len(losses) == tr["steps"] and losses[-1] < losses[0] - 0.3, losses
    model, loaded = load_trained_model(out)
    assert loaded.run_id == cfg.run_id and sum(p.numel() for p in model.parameters()) == count_params(cfg.model).total
