"""flash-linear-attention's kernels behind ssd_scan and gated_delta_rule (rom.kernels.fla_ops) against the float64
references: outputs and the gradients of every input, fp32 and bf16, then the Mamba-2 and Gated DeltaNet layers
(dense and RoM) with backend "triton" against "reference". Needs CUDA and fla (``pip install fla-core``)."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from rom.kernels.backends import clear_probe_cache, probe_fla
from rom.kernels.fla_ops import gated_delta_rule_fla, ssd_scan_fla
from rom.kernels.reference.gated_delta import gated_delta_rule_reference
from rom.kernels.reference.ssd import ssd_scan_reference
from rom.kernels.registry import resolve

from gpu_helpers import poison_cuda_cache, rel_err, stable_seed

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# fp32 runs fla's dots as 3xTF32 (rom.kernels.fla_ops._fp32_dots; plain TF32 put dA off by up to 2.6e-2 on an
# H100); the fp32 tolerances stay at what TF32 allowed until a GPU run has measured the new errors (printed
# with -s). bf16 also rounds the inputs and the chunk outputs.
TOL = {torch.float32: {"out": 2e-3, "grad": 5e-3}, torch.bfloat16: {"out": 2e-2, "grad": 4e-2}}


@pytest.fixture(autouse=True, scope="module")
def _needs_fla():
    clear_probe_cache()
    if not probe_fla().available:
        pytest.skip(f"fla unavailable: {probe_fla().reason}")


@pytest.fixture(autouse=True)
def _report_peak_memory():
    """Print the case's peak of memory torch reserved (shown with -rA): 12-14 workers of this file on one 80 GB H100
    ran out of CUDA memory in 7 cases on 2026-12-08, and what one worker holds decides how many fit."""
    torch.cuda.reset_peak_memory_stats()
    yield
    print(f"peak memory reserved by torch: {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB")
    # hand the case's cached blocks back to the card: the other workers' compiles and cases need that memory
    gc.collect()
    torch.cuda.empty_cache()


def _check(name, out, ref, tol, failures):
    err = rel_err(out, ref)
    print(f"{name}: rel err {err:.3g} (tolerance {tol})")  # shown with -s: the measured accuracy, not only pass
    if not err <= tol:  # NaN / inf never passes
        failures.append(f"{name}: rel err {err:.3g} > {tol}")
    return err


def _grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [t.grad if t is not None else None for t in leaves]


SSD_SHAPES = [  # b, L, H, P, G, N
    (2, 100, 4, 16, 1, 16),   # L not a multiple of the chunk, one group
    (1, 1, 2, 32, 2, 64),     # one step; N = 64 (fla #640's 64-wide key block on Hopper)
    (2, 257, 8, 64, 2, 128),  # several chunks, groups > 1
    (1, 70, 6, 24, 3, 20),    # head and state dims that are not multiples of 16
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SSD_SHAPES, ids=lambda s: "b{}L{}H{}P{}G{}N{}".format(*s))
def test_ssd_scan_fla_matches_float64(shape, dtype):
    b, L, H, P, G, N = shape
    torch.manual_seed(stable_seed(shape, str(dtype)))
    dev = "cuda"
    x = torch.randn(b, L, H, P, device=dev)
    dt = torch.randn(b, L, H, device=dev) - 1.0
    A = -torch.exp(torch.rand(H, device=dev) * 2.5)  # decays of 1 .. 12 per unit step
    B = torch.randn(b, L, G, N, device=dev) / N**0.5
    C = torch.randn(b, L, G, N, device=dev) / N**0.5
    D = torch.randn(H, device=dev)
    dt_bias = torch.randn(H, device=dev) * 0.5
    inputs = [x.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype), D, dt_bias]
    grad_out = torch.randn(b, L, H, P, device=dev)

    poison_cuda_cache()
    out, grads = _grads(lambda *a: ssd_scan_fla(*a, 64), inputs, grad_out)
    ref, ref_grads = _grads(lambda *a: ssd_scan_reference(*a, 64), [t.double() for t in inputs], grad_out)
    assert out.dtype == dtype and out.shape == (b, L, H, P)
    failures = []
    _check("y", out, ref, TOL[dtype]["out"], failures)
    for name, g, r in zip(("x", "dt", "A", "B", "C", "D", "dt_bias"), grads, ref_grads):
        _check(f"d{name}", g, r, TOL[dtype]["grad"], failures)
    assert not failures, failures


GDN_SHAPES = [  # b, L, H, K, V
    (2, 100, 2, 64, 128),   # K = 64: the #640 case on Hopper
    (1, 1, 4, 32, 64),      # one step
    (2, 200, 3, 128, 256),  # several chunks
    (1, 77, 2, 24, 40),     # dims that are not multiples of 16
    (1, 64, 2, 256, 64),    # the layer's default head_dim
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", GDN_SHAPES, ids=lambda s: "b{}L{}H{}K{}V{}".format(*s))
def test_gated_delta_rule_fla_matches_float64(shape, dtype):
    b, L, H, K, V = shape
    torch.manual_seed(stable_seed(shape, str(dtype)))
    dev = "cuda"
    q = F.normalize(torch.randn(b, L, H, K, device=dev), dim=-1)
    k = F.normalize(torch.randn(b, L, H, K, device=dev), dim=-1)
    v = torch.randn(b, L, H, V, device=dev)
    g = F.logsigmoid(torch.randn(b, L, H, device=dev) + 2.0)  # log decays, mostly near 0
    beta = torch.rand(b, L, H, device=dev)
    inputs = [q.to(dtype), k.to(dtype), v.to(dtype), g, beta.to(dtype)]
    grad_out = torch.randn(b, L, H, V, device=dev)

    poison_cuda_cache()
    out, grads = _grads(lambda *a: gated_delta_rule_fla(*a, None), inputs, grad_out)
    ref, ref_grads = _grads(lambda *a: gated_delta_rule_reference(*a, None), [t.double() for t in inputs],
                            grad_out)
    assert out.dtype == dtype and out.shape == (b, L, H, V)
    failures = []
    _check("o", out, ref, TOL[dtype]["out"], failures)
    for name, gr, r in zip(("q", "k", "v", "g", "beta"), grads, ref_grads):
        _check(f"d{name}", gr, r, TOL[dtype]["grad"], failures)
    assert not failures, failures


@pytest.mark.parametrize("op", ["ssd_scan", "gated_delta_rule"])
def test_auto_uses_fla_on_cuda(op):
    assert resolve(op, "auto", "cuda") == "triton"


def _layer_pairs():
    from rom.config import SSM_PROJECTIONS, GatedDeltaNetConfig, Mamba2Config, RoMConfig, SsmKind
    from rom.layers.gated_deltanet import GatedDeltaNetMixer, RoMGatedDeltaNetMixer
    from rom.layers.mamba2 import Mamba2Mixer
    from rom.layers.rom_mamba2 import RoMMamba2Mixer

    m2 = Mamba2Config(d_state=64, headdim=32, ngroups=2, chunk_size=64)
    gdn = GatedDeltaNetConfig(num_heads=4, head_dim=64, expand_v=2)
    rcfg_m2 = RoMConfig(num_experts=4, top_k=1, expert_projections=SSM_PROJECTIONS[SsmKind.MAMBA2].selective)
    rcfg_gdn = RoMConfig(num_experts=4, top_k=1,
                         expert_projections=SSM_PROJECTIONS[SsmKind.GATED_DELTANET].selective)
    return {
        "mamba2": lambda backend: Mamba2Mixer(128, m2, backend=backend),
        "rom_mamba2": lambda backend: RoMMamba2Mixer(128, m2, rcfg_m2, backend=backend),
        "gated_deltanet": lambda backend: GatedDeltaNetMixer(128, gdn, backend),
        "rom_gated_deltanet": lambda backend: RoMGatedDeltaNetMixer(128, gdn, rcfg_gdn, backend),
    }


@pytest.mark.parametrize("layer", ["mamba2", "rom_mamba2", "gated_deltanet", "rom_gated_deltanet"])
def test_layers_triton_match_reference(layer):
    make = _layer_pairs()[layer]
    torch.manual_seed(0)
    ref_layer = make("reference").cuda()
    fast_layer = make("triton").cuda()
    fast_layer.load_state_dict(ref_layer.state_dict())
    hidden = torch.randn(2, 150, 128, device="cuda")
    grad_out = torch.randn(2, 150, 128, device="cuda")
    outs, grads = {}, {}
    for name, m in (("reference", ref_layer), ("triton", fast_layer)):
        h = hidden.clone().requires_grad_(True)
        out = m(h)[0]
        out.backward(grad_out)
        outs[name] = out.detach()
        grads[name] = {"hidden": h.grad, **{n: p.grad for n, p in m.named_parameters() if p.grad is not None}}
    failures = []
    _check("out", outs["triton"], outs["reference"], 2e-3, failures)
    assert grads["triton"].keys() == grads["reference"].keys()
    for n in grads["reference"]:
        _check(f"d{n}", grads["triton"][n], grads["reference"][n], 1e-2, failures)
    assert not failures, failures
