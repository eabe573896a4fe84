"""Backend "mamba_ssm" on CUDA (skipped unless mamba-ssm is installed and built): the state-spaces scan kernel
behind our signature matches the float64 reference, and a mixer built on it matches the reference mixer."""

from __future__ import annotations

import pytest
import torch

from gpu_helpers import poison_cuda_cache, rel_err, selective_scan_f64

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (1e-2, 2e-2)}
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _require_mamba_ssm():
    from rom.kernels.backends import clear_probe_cache, probe_mamba_ssm

    clear_probe_cache()
    probe = probe_mamba_ssm()
    if not probe.available:
        pytest.skip(f"mamba-ssm not usable here: {probe.reason}")


@pytest.mark.parametrize("shape", [(2, 96, 37, 16), (3, 64, 517, 16), (2, 48, 300, 64)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mamba_ssm_scan_through_our_signature_matches_float64(shape, dtype):
    _require_mamba_ssm()
    from rom import kernels

    b, d, L, n = shape
    g = torch.Generator(device="cuda").manual_seed(sum(shape))

    def rnd(*s, scale=1.0, dt=dtype):
        return (torch.randn(*s, device="cuda", generator=g) * scale).to(dt)

    x = {"u": rnd(b, d, L), "delta": rnd(b, d, L, scale=0.5), "A": -torch.exp(rnd(d, n, scale=0.5, dt=torch.float32)),
         "B": rnd(b, n, L), "C": rnd(b, n, L), "D": rnd(d, dt=torch.float32), "z": rnd(b, d, L),
         "delta_bias": torch.rand(d, device="cuda", generator=g) * -3.0 - 1.0}
    ours = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    ref = {k: v.detach().double().requires_grad_(True) for k, v in x.items()}
    poison_cuda_cache()
    out = kernels.selective_scan(*[ours[k] for k in NAMES], delta_softplus=True, backend="mamba_ssm")
    out_ref = selective_scan_f64(*[ref[k] for k in NAMES], delta_softplus=True)
    tol_out, tol_grad = TOL[dtype]
    assert rel_err(out, out_ref) < tol_out
    dout = torch.randn_like(out_ref).to(dtype)
    out.backward(dout)
    out_ref.backward(dout.double())
    errors = {k: rel_err(ours[k].grad, ref[k].grad) for k in NAMES}
    assert {k: e for k, e in errors.items() if not e < tol_grad} == {}, errors


def test_mixer_on_mamba_ssm_backend_matches_reference():
    """The dense mixer hands mamba-ssm strided channels-first views (z is a slice of the in projection)."""
    _require_mamba_ssm()
    from rom.config import MambaConfig
    from rom.kernels import resolve
    from rom.layers.mamba import MambaMixer

    assert resolve("selective_scan", "mamba_ssm", "cuda") == "mamba_ssm"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    ref = MambaMixer(64, MambaConfig(d_state=16), 4, backend="reference").cuda()
    theirs = MambaMixer(64, MambaConfig(d_state=16), 4, backend="mamba_ssm").cuda()
    theirs.load_state_dict(ref.state_dict())
    x = torch.randn(3, 129, 64, device="cuda")
    xr, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref, out_t = ref(xr)[0], theirs(xt)[0]
    assert rel_err(out_t, out_ref) < 1e-4
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out_t.backward(g)
    assert rel_err(xt.grad, xr.grad) < 1e-4
    p_ref = dict(ref.named_parameters())
    errors = {n: rel_err(p.grad, p_ref[n].grad) for n, p in theirs.named_parameters()}
    assert {n: e for n, e in errors.items() if not e < 1e-3} == {}, errors
