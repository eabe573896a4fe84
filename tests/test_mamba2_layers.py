"""Mamba-2 mixers on CPU: the dense layer against a per-step recurrence, RoM's degenerate equivalences (one
expert, identical experts), a few training steps for selective and comprehensive expertization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rom.config import (SSM_PROJECTIONS, ExpertProjection, Mamba2Config, RoMConfig, Routing, SsmKind,
                        load_run_config)
from rom.layers.mamba2 import Mamba2Mixer
from rom.layers.rom_mamba2 import IN_PARTS, RoMMamba2Mixer

D_MODEL = 16
MCFG = Mamba2Config(d_state=6, headdim=8, ngroups=2, chunk_size=5)  # d_inner 32: 4 heads in 2 groups
ALL = SSM_PROJECTIONS[SsmKind.MAMBA2].all
SELECTIVE = SSM_PROJECTIONS[SsmKind.MAMBA2].selective


def _dense(seed=0) -> Mamba2Mixer:
    torch.manual_seed(seed)
    return Mamba2Mixer(D_MODEL, MCFG, backend="reference").double()


def _rom(rcfg: RoMConfig, seed=1) -> RoMMamba2Mixer:
    torch.manual_seed(seed)
    return RoMMamba2Mixer(D_MODEL, MCFG, rcfg, backend="reference").double()


def _x(b=2, L=13, seed=5):
    torch.manual_seed(seed)
    return torch.randn(b, L, D_MODEL, dtype=torch.float64)


def copy_dense_into_rom(dense: Mamba2Mixer, rom: RoMMamba2Mixer) -> None:
    """Every expert of ``rom`` gets the dense mixer's weights; the shared parts are copied."""
    w = dict(zip(IN_PARTS, dense.in_proj.weight.split(dense.core.widths, dim=0)))  # each (width, Dm)
    with torch.no_grad():
        for key, parts in rom.bank_parts.items():
            bank = torch.cat([w[p].t() for p in parts], dim=1)
            rom.in_experts[key].weight.copy_(bank.expand_as(rom.in_experts[key].weight))
        if rom.in_proj is not None:
            rom.in_proj.weight.copy_(torch.cat([w[p] for p in rom.in_dense_parts], dim=0))
        rom.core.load_state_dict(dense.core.state_dict())
        if hasattr(rom, "out_experts"):
            rom.out_experts.weight.copy_(dense.out_proj.weight.t().expand_as(rom.out_experts.weight))
        else:
            rom.out_proj.weight.copy_(dense.out_proj.weight)


def mamba2_sequential(m: Mamba2Mixer, hidden: torch.Tensor) -> torch.Tensor:
    """The dense mixer written out step by step (conv, recurrence, gated group RMSNorm) as ground truth."""
    c, cfg = m.core, m.core.cfg
    De, H, P, G, N = c.d_inner, c.nheads, cfg.headdim, cfg.ngroups, cfg.d_state
    z, xBC, dt = m.in_proj(hidden).split([De, De + 2 * G * N, H], dim=-1)
    b, L, _ = hidden.shape
    w = c.conv1d.weight  # (channels, width)
    pad = F.pad(xBC, (0, 0, w.shape[1] - 1, 0))
    xBC = F.silu(torch.stack([(pad[:, t:t + w.shape[1]] * w.t()).sum(1) for t in range(L)], 1) + c.conv1d.bias)
    x, B, C = xBC.split([De, G * N, G * N], dim=-1)
    x = x.reshape(b, L, H, P)
    B, C = B.reshape(b, L, G, N), C.reshape(b, L, G, N)
    A = -torch.exp(c.A_log)
    delta = F.softplus(dt + c.dt_bias)
    S = torch.zeros(b, H, P, N, dtype=hidden.dtype)
    ys = []
    for t in range(L):
        for h in range(H):
            g = h // (H // G)
            S[:, h] = torch.exp(delta[:, t, h] * A[h])[:, None, None] * S[:, h] + \
                (delta[:, t, h, None] * x[:, t, h])[:, :, None] * B[:, t, g][:, None, :]
        ys.append(torch.stack([S[:, h] @ C[:, t, h // (H // G)].unsqueeze(-1) for h in range(H)], 1).squeeze(-1)
                  + c.D[:, None] * x[:, t])
    y = torch.stack(ys, 1).reshape(b, L, De) * F.silu(z)
    y = y.reshape(b, L, G, De // G)
    y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + c.norm.eps)).reshape(b, L, De) * c.norm.weight
    return m.out_proj(y)


def test_dense_mixer_equals_the_step_by_step_layer():
    m, x = _dense(), _x()
    torch.testing.assert_close(m(x)[0], mamba2_sequential(m, x), rtol=1e-10, atol=1e-10)
    assert m(x)[1] == []


def test_chunk_size_does_not_change_the_function():
    m, x = _dense(), _x(L=23)
    want = m(x)[0]
    for chunk in (1, 7, 64):
        m.core.scan.chunk_size = chunk
        torch.testing.assert_close(m(x)[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("projections", [SELECTIVE, ALL, (ExpertProjection.OUT,), (ExpertProjection.B,)])
@pytest.mark.parametrize("routing", list(Routing))
def test_one_expert_equals_dense(projections, routing):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=1, top_k=1, expert_projections=projections, routing=routing))
    copy_dense_into_rom(dense, rom)
    x = _x()
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("projections", [SELECTIVE, ALL])
def test_identical_experts_equal_dense_with_renormalisation(top_k, projections):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=4, top_k=top_k, renormalize=top_k > 1, expert_projections=projections))
    copy_dense_into_rom(dense, rom)
    x = _x()
    want = dense(x)[0]
    if top_k == 1:  # the paper's O_t = P_i(x_t) (...) W_out,i: the dense output times the top probability
        want = want * rom.router(x.reshape(-1, D_MODEL)).weights.reshape(*x.shape[:2], 1).double()
    torch.testing.assert_close(rom(x)[0], want, rtol=1e-6, atol=1e-8)


def test_shared_routing_makes_one_bank_and_one_decision():
    rom = _rom(RoMConfig(num_experts=4, expert_projections=ALL))
    assert list(rom.in_experts) == ["shared"] and rom.in_proj is None
    assert len(rom(_x())[1]) == 1
    indep = _rom(RoMConfig(num_experts=4, top_k=2, expert_projections=ALL, routing=Routing.INDEPENDENT))
    assert len(indep(_x())[1]) == len(ALL)


@pytest.mark.parametrize("expertization", ["selective", "comprehensive"])
def test_rom_mamba2_language_model_trains_on_cpu(expertization):
    from rom.models import build_model

    cfg = load_run_config(None, ["model.pattern=rom", "model.ssm=mamba2", "model.d_model=32", "model.n_layer=2",
                                 "model.vocab_size=64", "model.mamba2.headdim=16", "model.mamba2.d_state=8",
                                 "model.mamba2.chunk_size=8", "model.rom.num_experts=4",
                                 f"model.rom.expertization={expertization}"]).model
    assert cfg.family == "rom-mamba2"
    torch.manual_seed(0)
    model = build_model(cfg, backend="reference")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, 64, (4, 24))
    losses = []
    for _ in range(6):
        out = model(tokens[:, :-1])
        loss = F.cross_entropy(out.logits.reshape(-1, 64), tokens[:, 1:].reshape(-1)) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if "router" not in n), expertization
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_hf_export_refuses_a_gated_deltanet_model():
    from rom.config import ModelConfig
    from rom.interop.hf_mamba import InteropError, hf_config_from_model

    with pytest.raises(InteropError, match="ssm=mamba or mamba2"):
        hf_config_from_model(ModelConfig(ssm=SsmKind.GATED_DELTANET))
