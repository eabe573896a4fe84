"""A whole LM training step on CUDA: backend auto (Triton kernels) vs backend reference, same weights/batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpu_helpers import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _config(pattern: str):
    from rom.config import MambaConfig, ModelConfig, Pattern, RoMConfig

    return ModelConfig(d_model=128, n_layer=2, vocab_size=512, pattern=Pattern(pattern),
                       mamba=MambaConfig(d_state=16), rom=RoMConfig(num_experts=4, top_k=1))


def _step(model, ids, autocast: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(ids[:, :-1])
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), ids[:, 1:].flatten()) + out.aux_loss.float()
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pattern", ["mamba", "rom"])
def test_train_step_auto_matches_reference_fp32(pattern):
    pytest.importorskip("triton")
    from rom.models import build_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ref_model = build_model(_config(pattern), backend="reference").cuda()
    fast_model = build_model(_config(pattern), backend="auto").cuda()
    fast_model.load_state_dict(ref_model.state_dict())
    ids = torch.randint(0, 512, (3, 131), device="cuda")
    loss_ref, grads_ref = _step(ref_model, ids, autocast=False)
    loss_fast, grads_fast = _step(fast_model, ids, autocast=False)
    assert abs(loss_fast.item() - loss_ref.item()) < 1e-4 * abs(loss_ref.item())
    assert grads_fast.keys() == grads_ref.keys()
    bad = {n: rel_err(grads_fast[n], grads_ref[n]) for n in grads_ref}
    bad = {n: e for n, e in bad.items() if not e < 2e-3}
    assert not bad, f"gradients differ: {bad}"


@pytest.mark.parametrize("pattern", ["mamba", "rom"])
def test_train_step_auto_matches_reference_bf16_autocast(pattern):
    """Under bf16 autocast both paths round differently; the loss and the bulk of the gradient still agree."""
    pytest.importorskip("triton")
    from rom.models import build_model

    torch.manual_seed(1)
    ref_model = build_model(_config(pattern), backend="reference").cuda()
    fast_model = build_model(_config(pattern), backend="auto").cuda()
    fast_model.load_state_dict(ref_model.state_dict())
    ids = torch.randint(0, 512, (2, 200), device="cuda")
    loss_ref, grads_ref = _step(ref_model, ids, autocast=True)
    loss_fast, grads_fast = _step(fast_model, ids, autocast=True)
    assert abs(loss_fast.item() - loss_ref.item()) < 1e-2 * abs(loss_ref.item())
    flat_ref = torch.cat([g.flatten().double() for g in grads_ref.values()])
    flat_fast = torch.cat([grads_fast[n].flatten().double() for n in grads_ref])
    assert rel_err(flat_fast, flat_ref) < 5e-2
