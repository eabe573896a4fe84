"""Backend registry: which implementation each kernel op uses on a device.

Ops: "selective_scan", "causal_conv1d", "expert_matmul", "rows_to_channels", "channels_to_rows" (the RoM
layer's expert rows <-> channels-first un/permutation), "upcast" (a weight gradient cast back to fp32, see
rom.kernels.weight_cast) and "upcast_add" (the same cast added into an existing fp32 gradient),
"combine_rows" / "combine_rows_backward" (the weighted un-permutation of expert rows to tokens), "dispatch"
(the stable sort of token-slots by expert), "router_inputs" / "router_inputs_backward" (the tokens cast for
the experts and the router logits from one read), "route_top1" (softmax, top-1 choice and mean probabilities;
these three in rom.kernels.routing), "mamba_inner" (a mixer's conv -> projections -> scan on one in-projection
tensor; triton: rom.kernels.inner_path, reference: the composed ops), "adamw_step" (the AdamW update of an fp32
master weight and its bf16 working copy, rom.kernels.adamw; used by rom.train.master_weights). Backends:

* "reference": pure torch (rom.kernels.scan_reference / conv_reference; for expert_matmul the native grouped
  GEMM of rom.kernels.experts). Always available; it is the semantics.
* "triton": our Triton kernels, ``rom.kernels.triton_scan.selective_scan_triton``,
  ``rom.kernels.triton_conv.causal_conv1d_triton``, ``rom.kernels.triton_gather``'s two layout kernels,
  ``rom.kernels.triton_cast.upcast_triton``, ``rom.kernels.triton_combine``'s un-permutation,
  ``rom.kernels.triton_dispatch``'s counting sort and ``rom.kernels.triton_router``'s router inputs.
  CUDA only; needs ``triton`` and the module importable.
* "mamba_ssm": the state-spaces CUDA kernels (``mamba_ssm``'s ``selective_scan_fn``, plus ``causal_conv1d_fn``
  from the ``causal_conv1d`` package when that is installed). CUDA only; optional.
* "loop": the per-expert loop for expert_matmul.
* "auto": triton on CUDA when its module imports and triton is available, else reference. Never mamba_ssm
  (it is opt-in).

Rules of ``resolve(op, backend, device)``:
1. A forced backend that cannot run here (not installed, broken build, wrong device) raises
   ``BackendUnavailableError`` naming the backend and the reason.
2. A backend that does not provide an op (the model passes one backend name to every op) uses reference for
   that op: triton/mamba_ssm for expert_matmul, loop for scan/conv, mamba_ssm for causal_conv1d without the
   ``causal_conv1d`` package.
3. Nothing optional is imported at package import: triton, mamba_ssm and causal_conv1d are probed lazily on the
   first resolve that needs them, the outcome (with a reason string) is cached, and ImportError / OSError /
   RuntimeError from a broken build are reported, not raised.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

OPS = ("selective_scan", "causal_conv1d", "expert_matmul", "rows_to_channels", "channels_to_rows", "upcast",
       "upcast_add", "combine_rows", "combine_rows_backward", "dispatch", "router_inputs",
       "router_inputs_backward", "route_top1", "mamba_inner", "adamw_step")
BACKENDS = ("auto", "reference", "triton", "mamba_ssm", "loop")

# op -> (module, attribute) of the Triton implementation
TRITON_MODULES = {
    "selective_scan": ("rom.kernels.triton_scan", "selective_scan_triton"),
    "causal_conv1d": ("rom.kernels.triton_conv", "causal_conv1d_triton"),
    "rows_to_channels": ("rom.kernels.triton_gather", "rows_to_channels_triton"),
    "channels_to_rows": ("rom.kernels.triton_gather", "channels_to_rows_triton"),
    "upcast": ("rom.kernels.triton_cast", "upcast_triton"),
    "upcast_add": ("rom.kernels.triton_cast", "upcast_add_triton"),
    "combine_rows": ("rom.kernels.triton_combine", "combine_rows_triton"),
    "combine_rows_backward": ("rom.kernels.triton_combine", "combine_rows_backward_triton"),
    "dispatch": ("rom.kernels.triton_dispatch", "expert_positions_triton"),
    "router_inputs": ("rom.kernels.triton_router", "router_inputs_triton"),
    "router_inputs_backward": ("rom.kernels.triton_router", "router_inputs_backward_triton"),
    "route_top1": ("rom.kernels.triton_router", "route_top1_triton"),
    "mamba_inner": ("rom.kernels.inner_path", "mamba_inner_triton"),
    "adamw_step": ("rom.kernels.triton_adamw", "adamw_step_triton"),
}
# errors a missing or broken optional build raises on import
_IMPORT_ERRORS = (ImportError, OSError, RuntimeError, AttributeError)


class BackendUnavailableError(RuntimeError):
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


# ----------------------------------------------------------------------------------------------- probes


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


@functools.cache
def probe_triton_op(op: str) -> Probe:
    """Triton implementation of ``op``: triton usable and our module importable with its entry point."""
    base = probe_triton()
    if not base.available:
        return base
    module_name, attr = TRITON_MODULES[op]
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


def clear_probe_cache() -> None:
    """Forget probe outcomes (tests, or after installing a backend in a live session)."""
    for fn in (probe_triton, probe_triton_op, probe_mamba_ssm, probe_causal_conv1d):
        fn.cache_clear()


# ---------------------------------------------------------------------------------------------- resolve


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def _check_op_backend(op: str, backend: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown kernel op {op!r}; expected one of {OPS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r} for {op}; expected one of {BACKENDS}")


def backend_status(backend: str, device: torch.device | str | None) -> Probe:
    """Can ``backend`` run on ``device`` at all (independently of the op)?"""
    device_type = _device_type(device)
    if backend in ("reference", "loop", "auto"):
        return Probe(True, "ok")
    if device_type != "cuda":
        return Probe(False, f"backend {backend!r} needs a CUDA device, got device {device_type!r}")
    if backend == "triton":
        return probe_triton()
    if backend == "mamba_ssm":
        return probe_mamba_ssm()
    raise ValueError(f"unknown kernel backend {backend!r}; expected one of {BACKENDS}")


def resolve(op: str, backend: str, device: torch.device | str | None) -> str:
    """Name of the backend whose implementation ``op`` will use for ``backend`` on ``device``."""
    _check_op_backend(op, backend)
    device_type = _device_type(device)
    if backend == "auto":
        if device_type == "cuda" and op in TRITON_MODULES and probe_triton_op(op).available:
            return "triton"
        return "reference"
    status = backend_status(backend, device)
    if not status.available:
        raise BackendUnavailableError(f"kernel backend {backend!r} requested for {op} cannot run: {status.reason}")
    if backend == "triton" and op in TRITON_MODULES:
        probe = probe_triton_op(op)
        if not probe.available:
            raise BackendUnavailableError(f"kernel backend 'triton' requested for {op} cannot run: {probe.reason}")
        return "triton"
    if backend == "mamba_ssm" and op == "selective_scan":
        return "mamba_ssm"
    if backend == "mamba_ssm" and op == "causal_conv1d":
        return "mamba_ssm" if probe_causal_conv1d().available else "reference"
    if backend == "loop" and op == "expert_matmul":
        return "loop"
    return "reference"  # rule 2: this backend does not provide the op


# op -> (module, attribute) of the pure-torch reference (the semantics)
REFERENCE_MODULES = {
    "selective_scan": ("rom.kernels.scan_reference", "selective_scan_reference"),
    "causal_conv1d": ("rom.kernels.conv_reference", "causal_conv1d_reference"),
    "expert_matmul": ("rom.kernels.experts", "expert_matmul_grouped"),
    "rows_to_channels": ("rom.kernels.experts", "rows_to_channels_reference"),
    "channels_to_rows": ("rom.kernels.experts", "channels_to_rows_reference"),
    "upcast": ("rom.kernels.weight_cast", "upcast_reference"),
    "upcast_add": ("rom.kernels.weight_cast", "upcast_add_reference"),
    "combine_rows": ("rom.kernels.experts", "combine_rows_reference"),
    "combine_rows_backward": ("rom.kernels.experts", "combine_rows_backward_reference"),
    "dispatch": ("rom.kernels.experts", "expert_positions_reference"),
    "router_inputs": ("rom.kernels.routing", "router_inputs_reference"),
    "router_inputs_backward": ("rom.kernels.routing", "router_inputs_backward_reference"),
    "route_top1": ("rom.kernels.routing", "route_top1_reference"),
    "mamba_inner": ("rom.kernels", "mamba_inner_reference"),
    "adamw_step": ("rom.kernels.adamw", "adamw_step_reference"),
}


def _reference_impl(op: str) -> Callable[..., Any]:
    module_name, attr = REFERENCE_MODULES[op]
    return getattr(importlib.import_module(module_name), attr)


def get_impl(op: str, backend: str, device: torch.device | str | None) -> Callable[..., Any]:
    """The callable implementing ``op`` (see ``resolve``)."""
    name = resolve(op, backend, device)
    if name == "reference":
        if backend == "auto" and _device_type(device) == "cuda" and op in TRITON_MODULES:
            _warn_fallback_once(op, probe_triton_op(op).reason)
        return _reference_impl(op)
    if name == "triton":
        impl = probe_triton_op(op).impl
        assert impl is not None
        return impl
    if name == "mamba_ssm":
        from rom.kernels import mamba_ssm_backend

        return mamba_ssm_backend.selective_scan if op == "selective_scan" else mamba_ssm_backend.causal_conv1d
    from rom.kernels.experts import expert_matmul_loop

    return expert_matmul_loop


@functools.cache
def _warn_fallback_once(op: str, reason: str) -> None:
    log.warning("kernel %s on CUDA falls back to the pure-torch reference: %s", op, reason)


def describe(devices: tuple[str, ...] = ("cpu", "cuda")) -> dict[str, Any]:
    """Backend availability (with reasons) and what every op resolves to for backend auto on ``devices``."""
    backends = {
        "triton": {"available": probe_triton().available, "reason": probe_triton().reason},
        "mamba_ssm": {"available": probe_mamba_ssm().available, "reason": probe_mamba_ssm().reason},
        "causal_conv1d": {"available": probe_causal_conv1d().available, "reason": probe_causal_conv1d().reason},
    }
    for op in TRITON_MODULES:
        probe = probe_triton_op(op)
        backends[f"triton:{op}"] = {"available": probe.available, "reason": probe.reason}
    resolved = {device: {op: resolve(op, "auto", device) for op in OPS} for device in devices}
    return {"backends": backends, "auto": resolved}
