"""The flash-linear-attention ("fla") entries of ssd_scan and gated_delta_rule, on CPU: how they resolve and how
rom.kernels.fla_ops falls back. The kernels themselves need CUDA (tests/gpu/test_fla_parity_gpu.py); fla 0.6.0's
kernels do not run under Triton 3.6's interpreter (its autotuner needs a GPU driver), so there is no CPU parity
test of them."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from rom.errors import RomError
from rom.kernels import backends, fla_ops, registry
from rom.kernels.backends import BackendUnavailableError, Probe
from rom.kernels.reference.gated_delta import gated_delta_rule_reference
from rom.kernels.reference.ssd import ssd_scan_reference

OPS = ("ssd_scan", "gated_delta_rule")


def test_triton_entries_need_the_fla_package():
    assert "fla" in backends.PACKAGE_PROBES
    for op in OPS:
        entry = registry.IMPLS[op]["triton"]
        assert isinstance(entry, registry.Impl) and entry.package == "fla"
        assert entry.target.startswith("rom.kernels.fla_ops:")


@pytest.mark.parametrize("op", OPS)
def test_auto_on_cpu_is_the_reference_and_forced_triton_raises(op):
    assert registry.resolve(op, "auto", "cpu") == "reference"
    assert registry.get_impl(op, "auto", "cpu") is registry._reference_impl(op)
    with pytest.raises(BackendUnavailableError, match="triton") as info:
        registry.resolve(op, "triton", "cpu")
    assert isinstance(info.value, RomError)


@pytest.mark.parametrize("fla_ok", [False, True])
@pytest.mark.parametrize("op", OPS)
def test_cuda_resolution_follows_the_fla_probe(op, fla_ok, monkeypatch):
    """With triton usable on CUDA (faked), auto and forced triton use fla exactly when its probe succeeds."""
    monkeypatch.setitem(backends.PACKAGE_PROBES, "fla",
                        lambda: Probe(fla_ok, "fla 0.6.0" if fla_ok else "fla not importable (test)"))
    monkeypatch.setattr(registry, "backend_status", lambda backend, device: Probe(True, "ok"))
    monkeypatch.setattr(registry, "probe_implementation", lambda backend, target: Probe(True, "ok", object()))
    expected = "triton" if fla_ok else "reference"
    assert registry.resolve(op, "auto", "cuda") == expected
    assert registry.resolve(op, "triton", "cuda") == expected  # rule 2: no fla -> the reference


def test_probe_fla_without_cuda_is_unavailable_with_a_reason():
    backends.probe_fla.cache_clear()
    probe = backends.probe_fla()
    if not torch.cuda.is_available():
        assert not probe.available
        assert "fla" in probe.reason and ("CUDA" in probe.reason or "not importable" in probe.reason)
    assert "fla" in registry.describe(("cpu",))["backends"]


def test_importing_fla_ops_imports_no_fla():
    code = ("import sys, rom.kernels.fla_ops, rom.kernels.registry; "
            "print(any(m.split('.')[0] == 'fla' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def _ssd_inputs(dtype=torch.float32, b=2, L=11, H=4, P=8, G=2, N=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, L, H, P, generator=g, dtype=dtype)
    dt = torch.randn(b, L, H, generator=g, dtype=dtype)
    A = -torch.rand(H, generator=g, dtype=dtype) - 0.5
    B = torch.randn(b, L, G, N, generator=g, dtype=dtype)
    C = torch.randn(b, L, G, N, generator=g, dtype=dtype)
    D = torch.randn(H, generator=g, dtype=dtype)
    dt_bias = torch.randn(H, generator=g, dtype=dtype)
    return x, dt, A, B, C, D, dt_bias


def _gdn_inputs(dtype=torch.float32, b=2, L=9, H=2, K=8, V=12):
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(b, L, H, K, generator=g, dtype=dtype), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(b, L, H, K, generator=g, dtype=dtype), dim=-1)
    v = torch.randn(b, L, H, V, generator=g, dtype=dtype)
    gate = -torch.rand(b, L, H, generator=g, dtype=dtype)
    beta = torch.rand(b, L, H, generator=g, dtype=dtype)
    return q, k, v, gate, beta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fla_ops_fall_back_to_the_reference_off_cuda(dtype, caplog):
    fla_ops._warn_once.cache_clear()
    args = _ssd_inputs(dtype)
    with caplog.at_level(logging.WARNING, logger="rom.kernels.fla_ops"):
        y = fla_ops.ssd_scan_fla(*args, 4)
        o = fla_ops.gated_delta_rule_fla(*_gdn_inputs(dtype), None, chunk=4)
    assert torch.equal(y, ssd_scan_reference(*args, 4))
    assert torch.equal(o, gated_delta_rule_reference(*_gdn_inputs(dtype), None, chunk=4))
    assert y.dtype == dtype and o.dtype == dtype
    assert sum("pure-torch reference" in r.getMessage() for r in caplog.records) == 2  # once per op and reason


def test_fla_ops_check_shapes_first():
    x, dt, A, B, C, D, dt_bias = _ssd_inputs(H=3, G=2)
    with pytest.raises(ValueError, match="not divisible into 2 groups"):
        fla_ops.ssd_scan_fla(x, dt, A, B, C, D, dt_bias, 4)
    q, k, v, g, beta = _gdn_inputs()
    with pytest.raises(ValueError, match="beta must have shape"):
        fla_ops.gated_delta_rule_fla(q, k, v, g, beta[:, :-1], None)


@pytest.mark.parametrize("bug", [False, True])
def test_padded_dims(bug, monkeypatch):
    """Dims round up to 16. On a Hopper + Triton [3.4, 3.7.1) machine, where fla's guard is lifted, every dim fills
    whole blocks of fla's (a power of two up to 128, a multiple of 128 above), and keys of 33..64 go to 128 (fla
    #640)."""
    monkeypatch.setattr(fla_ops, "_hopper_bk64_bug", lambda index: bug)
    cuda = torch.device("cuda", 0)
    cases = [  # (dim, key?, padded elsewhere, padded on the affected Hopper machine)
        (8, True, 16, 16), (16, False, 16, 16), (24, True, 32, 32), (32, True, 32, 32),
        (40, False, 48, 64),     # the value dim of the bf16 case that hit an illegal address (48 in a 64 block)
        (48, True, 48, 128), (64, True, 64, 128), (64, False, 64, 64),  # values have no 64-wide-key bug
        (96, True, 96, 128), (192, False, 192, 256),  # gated-deltanet-130m's heads (96 keys, 192 values)
        (130, True, 144, 256), (256, True, 256, 256), (200, False, 208, 256), (384, False, 384, 384),
    ]
    for dim, key, elsewhere, hopper in cases:
        assert fla_ops._padded_dim(dim, key, cuda) == (hopper if bug else elsewhere), (dim, key)


def _value_and_grads(fn, inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def test_zero_padding_the_head_dims_leaves_both_recurrences_unchanged():
    """What the fla path relies on when it pads (``_padded_dim``, ``_pad_last``), as far as the Hopper padding goes
    (keys 24 -> 128, values 40 -> 64): zero key / query columns and zero value columns change neither the kept
    outputs nor any gradient, in float64 on the references."""
    pad = fla_ops._pad_last
    q, k, v, g, beta = (t.double() for t in _gdn_inputs(K=24, V=40))
    x, dt, A, B, C, D, dt_bias = (t.double() for t in _ssd_inputs(P=24, N=20))

    def gdn(q, k, v, g, beta):
        return gated_delta_rule_reference(q, k, v, g, beta, 24**-0.5, chunk=4)

    def gdn_padded(q, k, v, g, beta):
        return gdn(pad(q, 128), pad(k, 128), pad(v, 64), g, beta)[..., :40]

    def ssd(x, B, C):
        return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, 4)

    def ssd_padded(x, B, C):
        return ssd(pad(x, 32), pad(B, 128), pad(C, 128))[..., :24]

    for plain, padded, inputs in ((gdn, gdn_padded, [q, k, v, g, beta]), (ssd, ssd_padded, [x, B, C])):
        out, grads = _value_and_grads(plain, inputs)
        out_p, grads_p = _value_and_grads(padded, inputs)
        torch.testing.assert_close(out_p, out, rtol=1e-12, atol=1e-12)
        for grad, grad_p in zip(grads, grads_p):
            torch.testing.assert_close(grad_p, grad, rtol=1e-12, atol=1e-12)


FP32_DOTS_CASE = """
import os, torch, triton
from rom.kernels.fla_ops import FP32_DOT_PRECISION, _fp32_dots
language = triton.knobs.language
seen = {}
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    with _fp32_dots(dtype):
        seen[str(dtype)] = (language.fp32_default, os.environ.get("TRITON_F32_DEFAULT"))
seen["after"] = (language.fp32_default, os.environ.get("TRITON_F32_DEFAULT"))
try:
    with _fp32_dots(torch.float32):
        raise KeyError("inside")
except KeyError:
    seen["after an error"] = (language.fp32_default, os.environ.get("TRITON_F32_DEFAULT"))
print(repr((FP32_DOT_PRECISION, seen)))
"""


def test_fp32_inputs_compile_fla_with_3xtf32_dots_and_16_bit_inputs_are_left_alone():
    """fla's dots name no precision, so Triton's TRITON_F32_DEFAULT knob sets it: ``_fp32_dots`` sets 3xTF32 for
    fp32 calls only (fla's fp32 decay gradient is off by up to 2.6e-2 under plain TF32 on an H100) and restores
    the knob and the environment afterwards, also after an error. In a subprocess: triton (a GPU install's, or
    ROM_TRITON_INTERPRETER_PATH's) must not join this process."""
    import ast
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    paths = [p for p in (os.environ.get("ROM_TRITON_INTERPRETER_PATH"), str(root), os.environ.get("PYTHONPATH")) if p]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_F32_DEFAULT"}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if subprocess.run([sys.executable, "-c", "import triton.knobs"], env=env, capture_output=True).returncode:
        pytest.skip("triton is not importable (set ROM_TRITON_INTERPRETER_PATH to a triton 3.6 install)")
    res = subprocess.run([sys.executable, "-c", FP32_DOTS_CASE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    precision, seen = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert precision == "tf32x3"
    assert seen["torch.float32"] == ("tf32x3", "tf32x3")
    for key in ("torch.bfloat16", "torch.float16", "after", "after an error"):
        assert seen[key] == (None, None), (key, seen[key])
