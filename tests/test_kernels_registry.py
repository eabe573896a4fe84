"""Backend registry: auto resolution, forced backends, lazy and fault-tolerant probing, `rom env`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import rom.kernels as K
from rom.kernels import backends, mamba_ops, registry
from rom.kernels.backends import BackendUnavailableError
from rom.kernels.registry import resolve


@pytest.fixture(autouse=True)
def fresh_probes():
    backends.clear_probe_cache()
    yield
    backends.clear_probe_cache()


def scan_inputs() -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 2, 5), torch.rand(1, 2, 5), -torch.rand(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5))


def hide_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``import name`` fail with ImportError whether or not it is installed."""
    monkeypatch.setitem(sys.modules, name, None)


def broken_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, error: str) -> None:
    """A package on sys.path whose import raises ``error`` (as a broken compiled build does)."""
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, mod)


def fake_cuda_with_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(__version__="9.9-fake"))


def test_auto_on_cpu_is_reference_for_every_op() -> None:
    for op in K.OPS:
        assert resolve(op, "auto", "cpu") == "reference"
        assert resolve(op, "auto", torch.device("cpu")) == "reference"
        assert resolve(op, "reference", "cpu") == "reference"


def test_auto_on_cuda_without_triton_is_reference(monkeypatch) -> None:
    hide_module(monkeypatch, "triton")
    assert resolve("selective_scan", "auto", "cuda") == "reference"
    assert "triton not importable" in backends.probe_triton().reason


def test_forcing_triton_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailableError, match="'triton'.*CUDA device.*'cpu'"):
        resolve("selective_scan", "triton", "cpu")
    with pytest.raises(BackendUnavailableError, match="'triton'"):
        K.selective_scan(*scan_inputs(), backend="triton")
    with pytest.raises(BackendUnavailableError, match="'triton'"):
        K.causal_conv1d(torch.randn(1, 2, 4), torch.randn(2, 3), backend="triton")


def test_forcing_mamba_ssm_is_a_clear_error_when_missing(monkeypatch) -> None:
    hide_module(monkeypatch, "mamba_ssm")
    with pytest.raises(BackendUnavailableError, match="'mamba_ssm'.*CUDA device"):
        K.selective_scan(*scan_inputs(), backend="mamba_ssm")
    with pytest.raises(BackendUnavailableError, match="'mamba_ssm'.*not importable"):
        resolve("selective_scan", "mamba_ssm", "cuda")


@pytest.mark.parametrize(
    "error", ["OSError('libcudart.so.12: cannot open shared object file')", "ImportError('undefined symbol: _ZN3c10')"]
)
def test_broken_mamba_ssm_build_is_reported_not_raised(tmp_path, monkeypatch, error: str) -> None:
    broken_package(tmp_path, monkeypatch, "mamba_ssm", error)
    probe = backends.probe_mamba_ssm()
    assert not probe.available
    assert error.split("(")[0] in probe.reason
    info = registry.describe(("cpu", "cuda"))  # reporting must not raise
    assert info["backends"]["mamba_ssm"]["available"] is False
    assert info["auto"]["cuda"]["selective_scan"] in ("reference", "triton")  # auto never picks mamba_ssm
    with pytest.raises(BackendUnavailableError, match="mamba_ssm"):
        resolve("selective_scan", "mamba_ssm", "cuda")


def test_mamba_ssm_importable_without_cuda_is_unavailable(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0.0-fake'\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "selective_scan_interface.py").write_text("def selective_scan_fn(*a, **k):\n    return 'fake'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    probe = backends.probe_mamba_ssm()
    assert not probe.available and "CUDA is not available" in probe.reason


def test_fake_mamba_ssm_on_fake_cuda_resolves_and_conv_falls_back(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0.0-fake'\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "selective_scan_interface.py").write_text("def selective_scan_fn(*a, **k):\n    return 'fake'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    hide_module(monkeypatch, "causal_conv1d")
    assert resolve("selective_scan", "mamba_ssm", "cuda") == "mamba_ssm"
    # causal_conv1d is a separate package: without it the conv under backend mamba_ssm is the reference
    assert resolve("causal_conv1d", "mamba_ssm", "cuda") == "reference"
    assert resolve("expert_matmul", "mamba_ssm", "cuda") == "reference"
    assert resolve("selective_scan", "auto", "cuda") != "mamba_ssm"


def test_triton_modules_are_wired_by_name(monkeypatch) -> None:
    fake_cuda_with_triton(monkeypatch)
    calls = []

    def selective_scan_triton(*args, **kwargs):
        calls.append((args, kwargs))
        return "triton-result"

    monkeypatch.setitem(
        sys.modules, "rom.kernels.triton_scan", types.SimpleNamespace(selective_scan_triton=selective_scan_triton)
    )
    hide_module(monkeypatch, "rom.kernels.triton_conv")
    assert resolve("selective_scan", "auto", "cuda") == "triton"
    assert resolve("selective_scan", "triton", "cuda") == "triton"
    assert registry.get_impl("selective_scan", "auto", "cuda") is selective_scan_triton
    # a missing Triton module is just unavailable for auto, a clear error when forced
    assert resolve("causal_conv1d", "auto", "cuda") == "reference"
    with pytest.raises(BackendUnavailableError, match="'triton'.*triton_conv"):
        resolve("causal_conv1d", "triton", "cuda")
    # triton provides no expert matmul: the grouped GEMM reference is used
    assert resolve("expert_matmul", "triton", "cuda") == "reference"
    assert resolve("expert_matmul", "auto", "cuda") == "reference"


def test_loop_backend() -> None:
    assert resolve("expert_matmul", "loop", "cpu") == "loop"
    assert resolve("selective_scan", "loop", "cpu") == "reference"  # loop only provides expert_matmul


def test_unknown_op_or_backend() -> None:
    with pytest.raises(ValueError, match="unknown kernel op 'scan'"):
        resolve("scan", "auto", "cpu")
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda'"):
        resolve("selective_scan", "cuda", "cpu")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        K.selective_scan(*scan_inputs(), backend="fast")


def test_package_import_does_not_import_optional_accelerators() -> None:
    code = (
        "import sys, rom.kernels, rom.kernels.registry\n"
        "rom.kernels.selective_scan(*[__import__('torch').ones(1, 1, 2)] * 2, -__import__('torch').ones(1, 1),"
        " *[__import__('torch').ones(1, 1, 2)] * 2)\n"
        "print(sorted(m for m in ('triton', 'mamba_ssm', 'causal_conv1d') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rom_env_json(capsys) -> None:
    from rom.commands import env as env_command

    parser = argparse.ArgumentParser()
    env_command.add_arguments(parser)
    assert env_command.run(parser.parse_args(["--json"])) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert info["auto"]["cpu"] == {op: "reference" for op in K.OPS}
    assert set(info["auto"]) == {"cpu", "cuda"}
    for name in ("triton", "mamba_ssm", "causal_conv1d"):
        assert isinstance(info["backends"][name]["reason"], str) and info["backends"][name]["reason"]
    assert env_command.run(parser.parse_args([])) == 0
    text = capsys.readouterr().out
    assert "selective_scan" in text and "torch" in text


def test_return_last_state_falls_back_when_backend_lacks_it(monkeypatch) -> None:
    fake_cuda_with_triton(monkeypatch)

    def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        raise AssertionError("must not be called with return_last_state")

    monkeypatch.setitem(
        sys.modules, "rom.kernels.triton_scan", types.SimpleNamespace(selective_scan_triton=selective_scan_triton)
    )
    # CPU tensors but resolution for the device "cuda" is what matters: patch the device lookup
    monkeypatch.setattr(mamba_ops, "get_impl", lambda op, backend, device: registry.get_impl(op, backend, "cuda"))
    y, h = K.selective_scan(*scan_inputs(), return_last_state=True)
    assert h.shape == (1, 2, 3)
    with pytest.raises(AssertionError, match="must not be called"):
        K.selective_scan(*scan_inputs())
