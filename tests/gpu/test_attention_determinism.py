"""Deterministic attention backward on CUDA (train.deterministic): two forward + backward passes of a hybrid
model on the same inputs give bitwise-identical gradients, under bf16 autocast as the trainer runs it, for
a sequence inside the window (causal SDPA) and one longer than it (the banded blocks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model(hybrid_ssm: str, window: int):
    from rom.config import AttentionConfig, MambaConfig, Mixer, Mlp, ModelConfig, Pattern, RoMConfig
    from rom.models import build_model

    cfg = ModelConfig(d_model=128, n_layer=4, vocab_size=512, pattern=Pattern.HYBRID, hybrid_ssm=Mixer(hybrid_ssm),
                      mlp=Mlp.DENSE, mamba=MambaConfig(d_state=16), rom=RoMConfig(num_experts=4, top_k=1),
                      attention=AttentionConfig(n_heads=4, window=window))
    torch.manual_seed(0)
    return build_model(cfg, backend="auto").cuda()


def _grads(model, ids) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids[:, :-1])
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), ids[:, 1:].flatten()) + out.aux_loss.float()
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("hybrid_ssm", ["mamba", "rom"])
@pytest.mark.parametrize("window", [512, 128])  # sequence 512: causal SDPA, then banded blocks
def test_deterministic_mode_gives_bitwise_identical_gradients(hybrid_ssm, window):
    from rom.train.loop import deterministic_mode

    model = _model(hybrid_ssm, window)
    ids = torch.randint(0, 512, (8, 513), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with deterministic_mode(True):
        first = _grads(model, ids)
        for _ in range(3):
            again = _grads(model, ids)
            assert first.keys() == again.keys()
            differing = [n for n in first if not torch.equal(first[n], again[n])]
            assert not differing, f"gradients differ between identical passes: {differing[:5]}"
    assert any("attn" in n or "attention" in n or "qkv" in n for n in first)  # attention layers were in it
    assert not torch.are_deterministic_algorithms_enabled()  # restored on exit


def test_default_mode_attention_gradients_measured():
    """Without the option, report (not assert) how far two identical passes' attention gradients differ: the
    fused SDPA backward's atomics make them differ on most GPUs, which is what the option removes."""
    model = _model("mamba", 512)
    ids = torch.randint(0, 512, (8, 513), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    a, b = _grads(model, ids), _grads(model, ids)
    worst = max((a[n].float() - b[n].float()).abs().max().item() for n in a)
    print(f"default mode: largest gradient difference between identical passes {worst:.3g}")
