"""Kernel backends: their names, whether each can run here, and the error a forced one raises when it cannot.

* "reference": pure torch (rom.kernels.reference). Always available; it is the semantics.
* "triton": our Triton kernels (rom.kernels.triton_*). CUDA only; needs ``triton`` and the op's module
  importable.
* "mamba_ssm": the state-spaces CUDA kernels (``mamba_ssm``'s ``selective_scan_fn``, plus ``causal_conv1d_fn``
  from the ``causal_conv1d`` package when that is installed). CUDA only; optional; never chosen by "auto".
* "loop": the per-expert loop for expert_matmul.
* optional packages an op's entry may need besides its backend (``PACKAGE_PROBES``): ``causal_conv1d`` for
  mamba_ssm's conv; ``fla`` (flash-linear-attention, PyPI ``fla-core``: pure-Triton kernels, CUDA only) for the
  "triton" entries of ssd_scan and gated_delta_rule (rom.kernels.fla_ops).
* "auto": "triton" on CUDA where the op has a Triton implementation that imports (and the optional package its
  entry needs, if any), else "reference".

Nothing optional is imported when this module is: triton, mamba_ssm, causal_conv1d and fla are probed on first
need, the outcome (with a reason string) is cached, and ImportError / OSError / RuntimeError / AttributeError
from a missing or broken build are reported in the reason, not raised. Which implementation an op uses for a
backend is the table in rom.kernels.registry.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rom.errors import RomError

BACKENDS = ("auto", "reference", "triton", "mamba_ssm", "loop")
AUTO_ON_CUDA = "triton"  # the backend "auto" picks on CUDA where the op has it and it imports
# errors a missing or broken optional build raises on import
_IMPORT_ERRORS = (ImportError, OSError, RuntimeError, AttributeError)


class BackendUnavailableError(RomError, RuntimeError):
    """A backend was requested explicitly but cannot run; the message names it and says why."""


@dataclass(frozen=True)
class Probe:
    """Outcome of probing an optional implementation."""

    available: bool
    reason: str  # "ok" or why not
    impl: Callable[..., Any] | None = None


def _describe_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


@functools.cache
def probe_triton() -> Probe:
    """Is the ``triton`` package importable (and CUDA present for it to run on)?"""
    try:
        triton = importlib.import_module("triton")
    except _IMPORT_ERRORS as e:
        return Probe(False, f"triton not importable ({_describe_error(e)})")
    if not torch.cuda.is_available():
        return Probe(False, f"triton {getattr(triton, '__version__', '?')} present but CUDA is not available")
    return Probe(True, f"triton {getattr(triton, '__version__', '?')}")


def _probe_cuda_package(package: str, module_name: str, attr: str) -> Probe:
    """``module_name.attr`` of an optional compiled CUDA package, with the reason when it cannot be used."""
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except _IMPORT_ERRORS as e:
        return Probe(False, f"{package} not importable ({_describe_error(e)})")
    if not torch.cuda.is_available():
        return Probe(False, f"{package} importable but CUDA is not available")
    version = getattr(importlib.import_module(package), "__version__", "?")
    return Probe(True, f"{package} {version}", fn)


@functools.cache
def probe_mamba_ssm() -> Probe:
    """mamba_ssm's selective_scan_fn (needs its compiled CUDA extension)."""
    return _probe_cuda_package("mamba_ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")


@functools.cache
def probe_causal_conv1d() -> Probe:
    """causal_conv1d's causal_conv1d_fn (a separate package from mamba_ssm)."""
    return _probe_cuda_package("causal_conv1d", "causal_conv1d", "causal_conv1d_fn")


@functools.cache
def probe_fla() -> Probe:
    """flash-linear-attention's ops (``fla.ops.simple_gla`` and ``fla.ops.gated_delta_rule``; they need triton
    and run on CUDA only). ``import fla`` itself works without triton, so the ops modules are what is probed."""
    try:
        version = getattr(importlib.import_module("fla"), "__version__", "?")
    except _IMPORT_ERRORS as e:
        return Probe(False, f"fla not importable ({_describe_error(e)}; pip install fla-core)")
    if not torch.cuda.is_available():  # checked before importing fla.ops, which inspects the devices
        return Probe(False, f"fla {version} importable but CUDA is not available")
    try:
        for module in ("fla.ops.simple_gla", "fla.ops.gated_delta_rule"):
            importlib.import_module(module)
    except _IMPORT_ERRORS as e:
        return Probe(False, f"fla {version} ops not importable ({_describe_error(e)})")
    return Probe(True, f"fla {version}")


# optional packages a table entry may need besides its backend's (rom.kernels.registry.Impl.package)
PACKAGE_PROBES: dict[str, Callable[[], Probe]] = {"causal_conv1d": probe_causal_conv1d, "fla": probe_fla}
# the package each optional backend needs; a backend not listed needs none
_BACKEND_PROBES: dict[str, Callable[[], Probe]] = {"triton": probe_triton, "mamba_ssm": probe_mamba_ssm}
_NEEDS_CUDA = ("triton", "mamba_ssm")


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def backend_status(backend: str, device: torch.device | str | None) -> Probe:
    """Can ``backend`` run on ``device`` at all (independently of the op)?"""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; expected one of {BACKENDS}")
    if backend not in _NEEDS_CUDA:
        return Probe(True, "ok")
    device_type = _device_type(device)
    if device_type != "cuda":
        return Probe(False, f"backend {backend!r} needs a CUDA device, got device {device_type!r}")
    return _BACKEND_PROBES[backend]()


@functools.cache
def probe_implementation(backend: str, target: str) -> Probe:
    """The function ``target`` ("module:function") of ``backend``: its backend's package usable and the module
    importable with that function. A module missing from this build, or failing to import, is reported."""
    base = _BACKEND_PROBES[backend]() if backend in _BACKEND_PROBES else Probe(True, "ok")
    if not base.available:
        return base
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return Probe(False, f"{module_name} not present in this build")
        return Probe(False, f"{module_name} failed to import ({_describe_error(e)})")
    except _IMPORT_ERRORS as e:
        return Probe(False, f"{module_name} failed to import ({_describe_error(e)})")
    impl = getattr(module, attr, None)
    if impl is None:
        return Probe(False, f"{module_name} has no {attr}")
    return Probe(True, f"{module_name}.{attr} ({base.reason})", impl)


def clear_probe_cache() -> None:
    """Forget probe outcomes (tests, or after installing a backend in a live session)."""
    for fn in (probe_triton, probe_mamba_ssm, probe_causal_conv1d, probe_fla, probe_implementation):
        fn.cache_clear()


__all__ = ["AUTO_ON_CUDA", "BACKENDS", "PACKAGE_PROBES", "BackendUnavailableError", "Probe", "backend_status",
           "clear_probe_cache", "probe_causal_conv1d", "probe_fla", "probe_implementation", "probe_mamba_ssm",
           "probe_triton"]
