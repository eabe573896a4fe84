"""Degenerate equivalences and router invariants of the RoM layers (reference kernels, CPU, float64)."""

import pytest
import torch

from rom.config import Combine, MambaConfig, MoEConfig, Projection, RoMConfig, Routing
from rom.layers.ffn import MoEFFN, SwiGLU
from rom.layers.mamba import MambaMixer
from rom.layers.rom import RoMMixer
from rom.layers.router import Router

D_MODEL, DT_RANK = 16, 2
MCFG = MambaConfig(d_state=4)


def _dense(seed: int = 0) -> MambaMixer:
    torch.manual_seed(seed)
    return MambaMixer(D_MODEL, MCFG, DT_RANK, backend="reference").double()


def _rom(rcfg: RoMConfig, seed: int = 1) -> RoMMixer:
    torch.manual_seed(seed)
    return RoMMixer(D_MODEL, MCFG, rcfg, DT_RANK, backend="reference").double()


def copy_dense_into_rom(dense: MambaMixer, rom: RoMMixer) -> None:
    """Give every expert of ``rom`` the dense mixer's weights (and share the rest)."""
    De = dense.d_inner
    with torch.no_grad():
        w_in = dense.in_proj.weight  # (2De, Dm): rows [x | z]
        halves = {Projection.CONV: w_in[:De], Projection.GATE: w_in[De:]}
        if "shared" in rom.in_experts:
            bank = torch.cat([halves[p].t() for p in rom.in_expert_parts], dim=1)
            rom.in_experts["shared"].weight.copy_(bank.expand_as(rom.in_experts["shared"].weight))
        else:
            for p in rom.in_expert_parts:
                rom.in_experts[p.value].weight.copy_(halves[p].t().expand_as(rom.in_experts[p.value].weight))
        if rom.in_proj is not None:
            rom.in_proj.weight.copy_(torch.cat([halves[p] for p in rom.in_dense_parts], dim=0))
        if rom.conv1d is not None:
            rom.conv1d.weight.copy_(dense.conv1d.weight)
            rom.conv1d.bias.copy_(dense.conv1d.bias)
        else:
            rom.conv1d_experts.copy_(dense.conv1d.weight.expand_as(rom.conv1d_experts))
            rom.conv1d_expert_bias.copy_(dense.conv1d.bias.expand_as(rom.conv1d_expert_bias))
        if hasattr(rom, "x_experts"):
            rom.x_experts.weight.copy_(dense.x_proj.weight.t().expand_as(rom.x_experts.weight))
        else:
            rom.x_proj.weight.copy_(dense.x_proj.weight)
        if hasattr(rom, "dt_experts"):
            rom.dt_experts.weight.copy_(dense.dt_proj.weight.t().expand_as(rom.dt_experts.weight))
            rom.dt_expert_bias.copy_(dense.dt_proj.bias.expand_as(rom.dt_expert_bias))
        else:
            rom.dt_proj.weight.copy_(dense.dt_proj.weight)
            rom.dt_proj.bias.copy_(dense.dt_proj.bias)
        rom.ssm.A_log.copy_(dense.ssm.A_log)
        rom.ssm.D.copy_(dense.ssm.D)
        if hasattr(rom, "out_experts"):
            rom.out_experts.weight.copy_(dense.out_proj.weight.t().expand_as(rom.out_experts.weight))
        else:
            rom.out_proj.weight.copy_(dense.out_proj.weight)


def _x(batch=2, length=11, seed=5):
    torch.manual_seed(seed)
    return torch.randn(batch, length, D_MODEL, dtype=torch.float64)


ALL = tuple(Projection)


@pytest.mark.parametrize("projections", [(Projection.CONV, Projection.GATE, Projection.OUT), ALL, (Projection.OUT,)])
@pytest.mark.parametrize("routing", list(Routing))
def test_one_expert_equals_dense(projections, routing):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=1, top_k=1, expert_projections=projections, routing=routing))
    copy_dense_into_rom(dense, rom)
    x = _x()
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("projections", [(Projection.CONV, Projection.GATE, Projection.OUT), ALL])
def test_identical_experts_equal_dense_with_renormalisation(top_k, projections):
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=4, top_k=top_k, renormalize=True, expert_projections=projections))
    copy_dense_into_rom(dense, rom)
    x = _x()
    # router probabilities are fp32 by design, so renormalised weights sum to 1 only to fp32 precision
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-6, atol=1e-8)


def test_top1_without_renormalisation_scales_out_by_router_probability():
    """The paper's O_t = P_i(x_t) (Y_t*G_t) W_out,i: with identical experts, the dense output times P_top."""
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=4, top_k=1, renormalize=False))
    copy_dense_into_rom(dense, rom)
    x = _x()
    p_top = rom.router(x.reshape(-1, D_MODEL)).weights.reshape(x.shape[0], x.shape[1], 1).double()
    torch.testing.assert_close(rom(x)[0], dense(x)[0] * p_top, rtol=1e-6, atol=1e-8)


def test_sum_combine_doubles_the_branch_for_identical_top2():
    rom_mean = _rom(RoMConfig(num_experts=4, top_k=2, renormalize=True))
    rom_sum = _rom(RoMConfig(num_experts=4, top_k=2, renormalize=True, branch_combine=Combine.SUM))
    dense = _dense()
    copy_dense_into_rom(dense, rom_mean)
    copy_dense_into_rom(dense, rom_sum)
    x = _x()
    assert not torch.allclose(rom_mean(x)[0], rom_sum(x)[0])


def test_moe_ffn_with_one_expert_equals_swiglu():
    torch.manual_seed(0)
    mlp = SwiGLU(D_MODEL, 24).double()
    moe = MoEFFN(D_MODEL, 24, MoEConfig(num_experts=1, top_k=1), backend="reference").double()
    with torch.no_grad():
        moe.gate_up.weight.copy_(mlp.gate_up.weight.t()[None])
        moe.down.weight.copy_(mlp.down.weight.t()[None])
    x = _x()
    torch.testing.assert_close(moe(x)[0], mlp(x)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_router_invariants(top_k):
    torch.manual_seed(0)
    router = Router(D_MODEL, 6, top_k, load_balance_coef=0.01, z_loss_coef=0.001).double()
    x = torch.randn(37, D_MODEL, dtype=torch.float64, requires_grad=True)
    dec = router(x)
    assert dec.indices.shape == (37, top_k)
    # exactly k distinct experts per token
    assert all(len(set(row.tolist())) == top_k for row in dec.indices)
    assert int(dec.stats.tokens_per_expert.sum()) == 37 * top_k
    torch.testing.assert_close(dec.stats.tokens_per_expert, torch.bincount(dec.indices.flatten(), minlength=6).float())
    assert torch.isfinite(dec.stats.load_balance_loss) and torch.isfinite(dec.stats.z_loss)
    (dec.weights.sum() + dec.stats.weighted_loss).backward()
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("z_coef", [0.0, 0.001])
def test_router_diagnostics_are_the_textbook_formulas(z_coef):
    """entropy and z_loss (lazy where the z-loss is not in the objective) equal their definitions."""
    torch.manual_seed(3)
    router = Router(D_MODEL, 5, 2, load_balance_coef=0.01, z_loss_coef=z_coef).double()
    x = torch.randn(23, D_MODEL, dtype=torch.float64)
    dec = router(x)
    p = torch.softmax(x @ router.weight.t(), dim=-1)  # the router works in fp32: compare at fp32 precision
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dec.stats.entropy.double(), -(p * p.log()).sum(-1).mean(), **close)
    z = torch.logsumexp(x @ router.weight.t(), dim=-1).pow(2).mean()
    torch.testing.assert_close(dec.stats.z_loss.detach().double(), z, **close)
    expected = 0.01 * dec.stats.load_balance_loss.double() + z_coef * z
    torch.testing.assert_close(dec.stats.weighted_loss.double(), expected, **close)
    assert dec.stats.z_loss.requires_grad == (z_coef > 0)


@pytest.mark.parametrize("routing", list(Routing))
def test_gradients_reach_every_router_and_expert(routing):
    rom = _rom(RoMConfig(num_experts=4, top_k=2, routing=routing, expert_projections=ALL, load_balance_coef=0.01))
    x = _x()
    out, stats = rom(x)
    loss = out.pow(2).mean() + sum(s.weighted_loss for s in stats)
    loss.backward()
    for name, p in rom.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert len(stats) == (1 if routing == Routing.SHARED else len(ALL))
    for s in stats:
        assert torch.isfinite(s.load_balance_loss) and torch.isfinite(s.z_loss) and torch.isfinite(s.entropy)


@pytest.mark.parametrize("L,window", [(9, 8), (16, 8), (29, 8), (7, 1), (50, 7), (64, 64), (65, 64)])
def test_banded_attention_equals_the_full_sliding_window_mask(L, window):
    """Blocked attention (O(L * window)) attends exactly the keys of the (L, L) banded mask, forward and backward."""
    import torch.nn.functional as F

    from rom.layers.attention import banded_attention, sliding_window_mask

    torch.manual_seed(L + window)
    q, k, v = (torch.randn(2, 3, L, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = banded_attention(q, k, v, window)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(L, window, q.device))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    for mine, theirs in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_rope_tables_are_cached_per_shape_and_equal_fresh_ones():
    from rom.config import AttentionConfig
    from rom.layers.attention import SlidingWindowAttention, rope_tables

    attn = SlidingWindowAttention(32, AttentionConfig(n_heads=4, window=8)).double()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    y1, _ = attn(x)
    cos, sin = attn._rope_cache[(12, x.device, torch.float64)]
    fresh = rope_tables(12, attn.head_dim, attn.theta, x.device, torch.float64)
    assert torch.equal(cos, fresh[0]) and torch.equal(sin, fresh[1])
    y2, _ = attn(x)
    assert torch.equal(y1, y2) and len(attn._rope_cache) == 1
    for L in range(1, 20):   # bounded: evaluation at many lengths cannot grow it without limit
        attn(torch.randn(1, L, 32, dtype=torch.float64))
    assert len(attn._rope_cache) <= attn.ROPE_CACHE_ENTRIES


def test_rope_tables_made_under_inference_mode_are_not_kept_for_training():
    from rom.config import AttentionConfig
    from rom.layers.attention import SlidingWindowAttention

    attn = SlidingWindowAttention(32, AttentionConfig(n_heads=4, window=8))
    x = torch.randn(2, 10, 32)
    with torch.inference_mode():
        attn(x)
    assert not attn._rope_cache
    y, _ = attn(x.requires_grad_(True))   # would fail if an inference tensor were saved for backward
    y.sum().backward()
    assert x.grad is not None and len(attn._rope_cache) == 1


@pytest.mark.parametrize("kind", ["dense", "rom"])
def test_unfused_inner_path_runs_the_modules_and_computes_the_same_function(kind):
    """fused_inner=False runs the conv and scan modules (so their own backends apply: gpu_step.py switches the
    scan's that way), and gives the fused path's output and gradients."""
    torch.manual_seed(0)
    mcfg = MambaConfig(d_state=8)
    make = (lambda **kw: MambaMixer(32, mcfg, 4, **kw)) if kind == "dense" else (
        lambda **kw: RoMMixer(32, mcfg, RoMConfig(num_experts=3, top_k=1), 4, **kw))
    fused, unfused = make(), make(fused_inner=False)
    unfused.load_state_dict(fused.state_dict())
    calls = {"scan": 0, "conv": 0}
    for name, module in (("scan", unfused.ssm.scan), ("conv", unfused.conv1d)):
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(2, 19, 32)
    results = []
    for layer in (fused, unfused):
        xi = x.clone().requires_grad_(True)
        out = layer(xi)[0]
        out.pow(2).mean().backward()
        results.append((out, xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    assert calls == {"scan": 1, "conv": 1}
    (o1, g1, p1), (o2, g2, p2) = results
    torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
    for n in p1:
        torch.testing.assert_close(p2[n], p1[n], rtol=1e-5, atol=1e-6, msg=n)


# ------------------------------------------------------------------- independent-indicator routing (issue 23)


def test_independent_indicator_changes_only_the_routers():
    """Three routers (one per expert projection), but the shared routing's combine: with identical experts the
    output is the dense mixer's times the out router's top-1 probability (independent routing would also
    scale the conv and gate branches by their routers' probabilities)."""
    x = _x()
    dense = _dense()
    outs = {}
    for routing in (Routing.INDEPENDENT_INDICATOR, Routing.INDEPENDENT):
        rom = _rom(RoMConfig(num_experts=4, top_k=1, routing=routing))
        copy_dense_into_rom(dense, rom)
        out, stats = rom(x)
        assert out.shape == x.shape and len(stats) == 3
        assert sorted(rom.routers) == ["conv", "gate", "out"] and not hasattr(rom, "router")
        p_out = rom.routers["out"](x.reshape(-1, D_MODEL)).weights.reshape(x.shape[0], x.shape[1], 1).double()
        outs[routing] = (out, dense(x)[0] * p_out)
    torch.testing.assert_close(*outs[Routing.INDEPENDENT_INDICATOR], rtol=1e-6, atol=1e-8)
    assert not torch.allclose(*outs[Routing.INDEPENDENT], rtol=1e-4, atol=1e-6)


def test_independent_indicator_with_one_expert_equals_dense():
    dense = _dense()
    rom = _rom(RoMConfig(num_experts=1, top_k=1, routing=Routing.INDEPENDENT_INDICATOR))
    copy_dense_into_rom(dense, rom)
    x = _x()
    torch.testing.assert_close(rom(x)[0], dense(x)[0], rtol=1e-10, atol=1e-10)


def test_independent_indicator_lm_gradient_reaches_only_the_out_router():
    """Without auxiliary losses only the out router learns from the loss; conv and gate routers get nothing
    (they learn from the auxiliary losses alone, see the next test)."""
    rom = _rom(RoMConfig(num_experts=4, top_k=1, routing=Routing.INDEPENDENT_INDICATOR, load_balance_coef=0.0))
    out, _ = rom(_x())
    out.pow(2).mean().backward()
    assert rom.routers["out"].weight.grad is not None and rom.routers["out"].weight.grad.abs().sum() > 0
    for name in ("conv", "gate"):
        grad = rom.routers[name].weight.grad
        assert grad is None or grad.abs().sum() == 0, name
    for bank in rom.in_experts.values():
        assert bank.weight.grad.abs().sum() > 0


def test_independent_indicator_routers_learn_from_the_auxiliary_losses():
    rom = _rom(RoMConfig(num_experts=4, top_k=1, routing=Routing.INDEPENDENT_INDICATOR, load_balance_coef=0.01))
    out, stats = rom(_x())
    (out.pow(2).mean() + sum(s.weighted_loss for s in stats)).backward()
    for name in ("conv", "gate", "out"):
        assert rom.routers[name].weight.grad.abs().sum() > 0, name


def test_accounting_counts_three_routers_for_independent_indicator():
    from rom.accounting import count_params
    from rom.config import ModelConfig, Pattern

    def router_params(routing: str) -> int:
        cfg = ModelConfig(d_model=32, n_layer=2, vocab_size=64, pattern=Pattern.ROM,
                          rom=RoMConfig(num_experts=4, top_k=1, routing=Routing(routing)))
        comps = count_params(cfg).to_dict()["components"]
        return sum(v["total"] for k, v in comps.items() if "router" in k)

    assert router_params("shared") == 2 * 4 * 32
    assert router_params("independent-indicator") == router_params("independent") == 3 * 2 * 4 * 32
