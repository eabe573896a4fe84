"""The language model: outputs, auxiliary outputs, and that every architecture can learn (overfit one batch)."""

import pytest
import torch

from rom.config import ModelConfig, from_dict
from rom.models import build_model

ARCHS = {
    "mamba": dict(pattern="mamba"),
    "rom": dict(pattern="rom", rom={"num_experts": 4, "top_k": 1}),
    "rom-independent": dict(pattern="rom", rom={"num_experts": 4, "routing": "independent"}),
    "hybrid": dict(pattern="hybrid", mlp="dense", attention={"n_heads": 2, "window": 8}),
    "hybrid-rom": dict(pattern="hybrid", hybrid_ssm="rom", mlp="dense", attention={"n_heads": 2, "window": 8},
                       rom={"num_experts": 4}),
    "mamba-moe": dict(pattern="mamba", mlp="moe", moe={"num_experts": 4, "top_k": 2}),
}


def _cfg(arch: str) -> ModelConfig:
    cfg = from_dict(ModelConfig, {"d_model": 32, "n_layer": 2, "vocab_size": 64, **ARCHS[arch]}, "model")
    cfg.validate()
    return cfg


@pytest.mark.parametrize("arch", list(ARCHS))
def test_forward_shapes_and_aux(arch):
    cfg = _cfg(arch)
    model = build_model(cfg, backend="reference")
    ids = torch.randint(0, 64, (3, 20))
    out = model(ids)
    assert out.logits.shape == (3, 20, 64)
    assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    routed = "rom" in arch or "moe" in arch
    assert bool(out.router_stats) == routed
    for s in out.router_stats:
        assert 0 <= s.layer < cfg.n_layer and s.name.startswith(("mixer.", "mlp."))
    assert model.lm_head.weight is model.embedding.weight


@pytest.mark.parametrize("arch", list(ARCHS))
def test_tiny_model_overfits_one_batch(arch):
    torch.manual_seed(0)
    model = build_model(_cfg(arch), backend="reference")
    ids = torch.randint(0, 64, (2, 17))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
        first = loss.item() if first is None else first
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
    assert loss.item() < 0.35 * first, (first, loss.item())


def test_no_weight_decay_tags_and_fp32_ssm_params():
    model = build_model(_cfg("rom"), backend="reference")
    tagged = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert tagged and all(n.endswith(("A_log", "D")) for n in tagged)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n.endswith(("A_log", "D")))


def test_mamba_initialisation():
    cfg = _cfg("mamba")
    model = build_model(cfg, backend="reference")
    mixer = model.layers[0].mixer
    A = torch.exp(mixer.ssm.A_log)
    torch.testing.assert_close(A[0], torch.arange(1, cfg.mamba.d_state + 1, dtype=torch.float32))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= cfg.mamba.dt_init_floor * 0.999 and dt.max() <= cfg.mamba.dt_max * 1.001
    assert torch.all(mixer.ssm.D == 1)
