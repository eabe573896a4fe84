"""Gated DeltaNet mixers (rom.layers.gated_deltanet): the dense layer against the per-step recurrence, causality,
RoM's degenerate equivalences (one expert = dense, identical experts = dense), and training on CPU."""

from __future__ import annotations

import pytest
import torch

from rom.config import SSM_PROJECTIONS, Combine, ExpertProjection, GatedDeltaNetConfig, RoMConfig, Routing, SsmKind
from rom.kernels.reference.gated_delta import gated_delta_rule_sequential
from rom.layers.gated_deltanet import (
    INPUT_PROJECTIONS,
    GatedDeltaNetMixer,
    RoMGatedDeltaNetMixer,
)

P = ExpertProjection
D_MODEL = 24
GDN = SSM_PROJECTIONS[SsmKind.GATED_DELTANET]
SELECTIVE, COMPREHENSIVE = GDN.selective, GDN.all


def _gdn_cfg(**kw):
    return GatedDeltaNetConfig(**{"num_heads": 2, "head_dim": 8, "expand_v": 2, **kw})


def _x(b=2, L=21, seed=1):
    return torch.randn(b, L, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dense(seed=0) -> GatedDeltaNetMixer:
    torch.manual_seed(seed)
    m = GatedDeltaNetMixer(D_MODEL, _gdn_cfg(), "reference").double()
    with torch.no_grad():  # a non-trivial norm gain, so copying it is tested
        m.core.o_norm_weight.uniform_(0.5, 1.5)
    return m


def _rom(rcfg: RoMConfig, seed=1) -> RoMGatedDeltaNetMixer:
    torch.manual_seed(seed)
    return RoMGatedDeltaNetMixer(D_MODEL, _gdn_cfg(), rcfg, "reference").double()


def copy_dense_into_rom(dense: GatedDeltaNetMixer, rom: RoMGatedDeltaNetMixer) -> None:
    """Every expert of every bank := the dense projection; shared parts copied as they are."""
    with torch.no_grad():
        rom.core.load_state_dict(dense.core.state_dict())
        for p in rom.dense_parts:
            rom.proj[p.value].weight.copy_(dense.projection(p).weight)
        if rom.shared and rom.expert_parts:
            w = torch.cat([dense.projection(p).weight.t() for p in rom.expert_parts], dim=1)
            rom.experts["shared"].weight.copy_(w.expand_as(rom.experts["shared"].weight))
        elif rom.expert_parts:
            for p in rom.expert_parts:
                bank = rom.experts[p.value].weight
                bank.copy_(dense.projection(p).weight.t().expand_as(bank))
        if hasattr(rom, "o_experts"):
            rom.o_experts.weight.copy_(dense.o_proj.weight.t().expand_as(rom.o_experts.weight))
        else:
            rom.o_proj.weight.copy_(dense.o_proj.weight)


def test_dense_mixer_matches_the_per_step_recurrence(monkeypatch):
    """The layer through the chunked kernel equals the same layer through the sequential float64 recurrence."""
    m = _dense()
    x = _x(L=70)  # more than one 64-step chunk
    got = m(x)[0]
    monkeypatch.setattr(m.core.scan, "forward", lambda q, k, v, g, beta, scale, chunk: gated_delta_rule_sequential(
        q, k, v, g, beta, scale))
    torch.testing.assert_close(got, m(x)[0], rtol=1e-10, atol=1e-12)


def test_dense_mixer_is_causal_and_its_gradients_flow():
    m = _dense()
    x = _x().requires_grad_()
    y = m(x)[0]
    y[:, 10].sum().backward()
    assert x.grad[:, 11:].abs().max() == 0 and x.grad[:, :11].abs().max() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dense_mixer_parameter_names_and_init():
    m = GatedDeltaNetMixer(D_MODEL, _gdn_cfg(), "reference")
    names = {n for n, _ in m.named_parameters()}
    assert {"q_proj.weight", "k_proj.weight", "v_proj.weight", "a_proj.weight", "b_proj.weight", "g_proj.weight",
            "o_proj.weight", "core.A_log", "core.dt_bias", "core.o_norm_weight"} <= names
    A = m.core.A_log.exp()
    assert (A >= 1e-4).all() and (A <= 16.0).all() and m.core.A_log._no_weight_decay
    dt = torch.nn.functional.softplus(m.core.dt_bias)
    assert (dt >= 1e-4 - 1e-9).all() and (dt <= 0.1 + 1e-6).all()
    assert m.o_proj._is_residual_out


ROUTINGS = [Routing.SHARED, Routing.INDEPENDENT, Routing.INDEPENDENT_INDICATOR]


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("projections", [SELECTIVE, COMPREHENSIVE, (P.OUT,), (P.V, P.BETA)])
def test_one_expert_equals_dense(routing, projections):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=1, top_k=1, routing=routing, expert_projections=projections))
    copy_dense_into_rom(dense, rom)
    x = _x()
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("top_k", [2, 4])
@pytest.mark.parametrize("projections", [SELECTIVE, COMPREHENSIVE])
def test_identical_experts_equal_dense_with_renormalisation(top_k, projections):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=4, top_k=top_k, renormalize=True, expert_projections=projections))
    copy_dense_into_rom(dense, rom)
    x = _x()
    # router probabilities are fp32 by design, so renormalised weights sum to 1 only to fp32 precision
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("projections", [SELECTIVE, COMPREHENSIVE])
def test_identical_top1_experts_scale_the_output_by_the_router_probability(projections):
    """Shared routing: 0/1 indicator on the input side, O_t = P_i(x_t) o_t W_o,i on the output."""
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=4, top_k=1, expert_projections=projections))
    copy_dense_into_rom(dense, rom)
    x = _x()
    p_top = rom.router(x.reshape(-1, D_MODEL)).weights.reshape(x.shape[0], x.shape[1], 1).double()
    torch.testing.assert_close(rom(x)[0], dense(x)[0] * p_top, rtol=1e-6, atol=1e-8)


def test_sum_combine_differs_from_mean_for_top2():
    dense = _dense()
    outs = []
    for combine in (Combine.MEAN, Combine.SUM):
        rom = _rom(RoMConfig(num_experts=4, top_k=2, renormalize=True, branch_combine=combine,
                             expert_projections=SELECTIVE))
        copy_dense_into_rom(dense, rom)
        outs.append(rom(_x())[0])
    assert not torch.allclose(*outs)


def test_shared_routing_puts_the_input_side_experts_in_one_bank():
    rom = _rom(RoMConfig(num_experts=3, expert_projections=COMPREHENSIVE))
    assert list(rom.experts) == ["shared"] and len(rom.proj) == 0 and hasattr(rom, "o_experts")
    dims = 2 * 16 + 2 * 32 + 2 * 2  # q, k (2 heads x 8), v, gate (x expand_v 2), decay, beta (one per head)
    assert rom.experts["shared"].weight.shape == (3, D_MODEL, dims)
    sel = _rom(RoMConfig(num_experts=3, expert_projections=SELECTIVE))
    assert set(sel.proj) == {"decay", "beta"}
    ind = _rom(RoMConfig(num_experts=3, routing=Routing.INDEPENDENT, expert_projections=SELECTIVE))
    assert set(ind.experts) == {"q", "k", "v", "gate"} and set(ind.routers) == {p.value for p in SELECTIVE}
    assert set(INPUT_PROJECTIONS) | {P.OUT} == set(COMPREHENSIVE)


@pytest.mark.parametrize("projections", [SELECTIVE, COMPREHENSIVE])
def test_rom_mixer_gradients_reach_every_parameter(projections):
    rom = _rom(RoMConfig(num_experts=4, top_k=1, expert_projections=projections, load_balance_coef=0.01))
    x = _x()
    y, stats = rom(x)
    (y.square().mean() + sum(s.weighted_loss for s in stats)).backward()
    for name, p in rom.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
