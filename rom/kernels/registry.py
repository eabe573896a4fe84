"""The kernel-op table: which function implements each op on each backend, and how a call picks one.

``IMPLS[op][backend]`` names the implementing function as "module:function"; the module is imported the
first time a call needs it (by ``get_impl``, through the cached probes of rom.kernels.backends), never by this
module's import. Every op has a "reference" entry (pure torch, rom.kernels.reference: the semantics); the other
backends list only the ops they implement. Adding an op is one reference function, one fast file and one row
here (docs/extending.md, "Add a kernel op").

Ops: "selective_scan", "causal_conv1d", "expert_matmul", "rows_to_channels" / "channels_to_rows" (the RoM
layer's expert rows <-> channels-first un/permutation), "upcast" (a weight gradient cast back to fp32, see
rom.kernels.weight_cast) and "upcast_add" (the same cast added into an existing fp32 gradient),
"combine_rows" / "combine_rows_backward" (the weighted un-permutation of expert rows to tokens), "dispatch"
(the stable sort of token-slots by expert), "router_inputs" / "router_inputs_backward" (the tokens cast for
the experts and the router logits from one read), "route_top1" (softmax, top-1 choice and mean probabilities),
"mamba_inner" (a mixer's conv -> projections -> scan on one in-projection tensor; its implementations take
the conv and the scan to compose, see rom.kernels.mamba_ops.mamba_inner), "adamw_step" (the AdamW update of
an fp32 master weight and its bf16 working copy; used by rom.train.master_weights), "gated_delta_rule" (Gated
DeltaNet's chunked recurrence, rom.kernels.reference.gated_delta), "ssd_scan" (Mamba-2's chunked SSD scan,
rom.kernels.ssd_ops). The last two run on the GPU through flash-linear-attention (``fla``, PyPI ``fla-core``,
rom.kernels.fla_ops) where it is installed; without it "auto" and "triton" use their references (rule 2).

Rules of ``resolve(op, backend, device)`` (backends: rom.kernels.backends):
1. A forced backend that cannot run here (not installed, broken build, wrong device) raises
   ``BackendUnavailableError`` naming the backend and the reason.
2. A backend that does not provide an op (the model passes one backend name to every op) uses reference for
   that op: triton/mamba_ssm for expert_matmul, loop for scan/conv, mamba_ssm for causal_conv1d without the
   ``causal_conv1d`` package, triton for ssd_scan / gated_delta_rule without ``fla`` (an entry's
   ``Impl.package``; "auto" on CUDA checks it too).
3. Nothing optional is imported at package import: triton, mamba_ssm, causal_conv1d and fla are probed lazily on the
   first resolve that needs them, the outcome (with a reason string) is cached, and ImportError / OSError /
   RuntimeError from a broken build are reported, not raised.
4. An unknown op or backend raises ValueError naming it and the choices.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rom.kernels.backends import (
    AUTO_ON_CUDA,
    BACKENDS,
    PACKAGE_PROBES,
    BackendUnavailableError,
    Probe,
    backend_status,
    probe_causal_conv1d,
    probe_fla,
    probe_implementation,
    probe_mamba_ssm,
    probe_triton,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Impl:
    """A table entry that needs more than its backend: without the optional ``package`` (a key of
    rom.kernels.backends.PACKAGE_PROBES) the backend lacks the op, which then uses its reference (rule 2)."""

    target: str  # "module:function"
    package: str


_R = "rom.kernels.reference"
# op -> backend -> "module:function" (or Impl); the op order is the order `rom env` reports them in
IMPLS: dict[str, dict[str, str | Impl]] = {
    "selective_scan": {"reference": f"{_R}.scan:selective_scan_reference",
                       "triton": "rom.kernels.triton_scan:selective_scan_triton",
                       "mamba_ssm": "rom.kernels.mamba_ssm_backend:selective_scan"},
    "causal_conv1d": {"reference": f"{_R}.conv:causal_conv1d_reference",
                      "triton": "rom.kernels.triton_conv:causal_conv1d_triton",
                      "mamba_ssm": Impl("rom.kernels.mamba_ssm_backend:causal_conv1d", package="causal_conv1d")},
    "expert_matmul": {"reference": f"{_R}.experts:expert_matmul_grouped",
                      "loop": f"{_R}.experts:expert_matmul_loop"},
    "rows_to_channels": {"reference": f"{_R}.experts:rows_to_channels_reference",
                         "triton": "rom.kernels.triton_gather:rows_to_channels_triton"},
    "channels_to_rows": {"reference": f"{_R}.experts:channels_to_rows_reference",
                         "triton": "rom.kernels.triton_gather:channels_to_rows_triton"},
    "upcast": {"reference": f"{_R}.weight_cast:upcast_reference",
               "triton": "rom.kernels.triton_cast:upcast_triton"},
    "upcast_add": {"reference": f"{_R}.weight_cast:upcast_add_reference",
                   "triton": "rom.kernels.triton_cast:upcast_add_triton"},
    "combine_rows": {"reference": f"{_R}.experts:combine_rows_reference",
                     "triton": "rom.kernels.triton_combine:combine_rows_triton"},
    "combine_rows_backward": {"reference": f"{_R}.experts:combine_rows_backward_reference",
                              "triton": "rom.kernels.triton_combine:combine_rows_backward_triton"},
    "dispatch": {"reference": f"{_R}.experts:expert_positions_reference",
                 "triton": "rom.kernels.triton_dispatch:expert_positions_triton"},
    "router_inputs": {"reference": f"{_R}.routing:router_inputs_reference",
                      "triton": "rom.kernels.triton_router:router_inputs_triton"},
    "router_inputs_backward": {"reference": f"{_R}.routing:router_inputs_backward_reference",
                               "triton": "rom.kernels.triton_router:router_inputs_backward_triton"},
    "route_top1": {"reference": f"{_R}.routing:route_top1_reference",
                   "triton": "rom.kernels.triton_router:route_top1_triton"},
    "mamba_inner": {"reference": f"{_R}.inner:mamba_inner_composed",
                    "triton": "rom.kernels.inner_path:mamba_inner_triton"},
    "adamw_step": {"reference": f"{_R}.adamw:adamw_step_reference",
                   "triton": "rom.kernels.triton_adamw:adamw_step_triton"},
    # Mamba-2's chunked scan (rom.kernels.ssd_ops) and Gated DeltaNet's chunked gated delta rule; their
    # "triton" entries are flash-linear-attention's kernels (rom.kernels.fla_ops), used only where fla imports
    "ssd_scan": {"reference": f"{_R}.ssd:ssd_scan_reference",
                 "triton": Impl("rom.kernels.fla_ops:ssd_scan_fla", package="fla")},
    "gated_delta_rule": {"reference": f"{_R}.gated_delta:gated_delta_rule_reference",
                         "triton": Impl("rom.kernels.fla_ops:gated_delta_rule_fla", package="fla")},
}
OPS = tuple(IMPLS)


def _target(entry: str | Impl) -> str:
    return entry.target if isinstance(entry, Impl) else entry


def _fast_probe(entry: str | Impl) -> Probe:
    """Can "auto" use this AUTO_ON_CUDA entry: its optional package (if any), then its module."""
    if isinstance(entry, Impl):
        package = PACKAGE_PROBES[entry.package]()
        if not package.available:
            return package
    return probe_implementation(AUTO_ON_CUDA, _target(entry))


def _row(op: str, backend: str) -> dict[str, str | Impl]:
    row = IMPLS.get(op)
    if row is None:
        raise ValueError(f"unknown kernel op {op!r}; expected one of {OPS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r} for {op}; expected one of {BACKENDS}")
    return row


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def resolve(op: str, backend: str, device: torch.device | str | None) -> str:
    """Name of the backend whose implementation ``op`` will use for ``backend`` on ``device``."""
    row = _row(op, backend)
    if backend == "auto":
        fast = row.get(AUTO_ON_CUDA)
        if fast is not None and _device_type(device) == "cuda" and _fast_probe(fast).available:
            return AUTO_ON_CUDA
        return "reference"
    status = backend_status(backend, device)
    if not status.available:
        raise BackendUnavailableError(f"kernel backend {backend!r} requested for {op} cannot run: {status.reason}")
    entry = row.get(backend)
    if backend == "reference" or entry is None:
        return "reference"  # rule 2: this backend does not provide the op
    if isinstance(entry, Impl) and not PACKAGE_PROBES[entry.package]().available:
        return "reference"  # rule 2: nor without the optional package this entry needs
    probe = probe_implementation(backend, _target(entry))
    if not probe.available:
        raise BackendUnavailableError(f"kernel backend {backend!r} requested for {op} cannot run: {probe.reason}")
    return backend


def _reference_impl(op: str) -> Callable[..., Any]:
    module_name, _, attr = _target(IMPLS[op]["reference"]).partition(":")
    return getattr(importlib.import_module(module_name), attr)


def get_impl(op: str, backend: str, device: torch.device | str | None) -> Callable[..., Any]:
    """The callable implementing ``op`` (see ``resolve``)."""
    name = resolve(op, backend, device)
    if name == "reference":
        fast = IMPLS[op].get(AUTO_ON_CUDA)
        if backend == "auto" and fast is not None and _device_type(device) == "cuda":
            _warn_fallback_once(op, _fast_probe(fast).reason)
        return _reference_impl(op)
    impl = probe_implementation(name, _target(IMPLS[op][name])).impl
    assert impl is not None  # resolve returned this backend only where its probe succeeded
    return impl


@functools.cache
def _warn_fallback_once(op: str, reason: str) -> None:
    log.warning("kernel %s on CUDA falls back to the pure-torch reference: %s", op, reason)


def describe(devices: tuple[str, ...] = ("cpu", "cuda")) -> dict[str, Any]:
    """Backend availability (with reasons) and what every op resolves to for backend auto on ``devices``."""
    backends = {
        "triton": {"available": probe_triton().available, "reason": probe_triton().reason},
        "mamba_ssm": {"available": probe_mamba_ssm().available, "reason": probe_mamba_ssm().reason},
        "causal_conv1d": {"available": probe_causal_conv1d().available, "reason": probe_causal_conv1d().reason},
        "fla": {"available": probe_fla().available, "reason": probe_fla().reason},
    }
    for op, row in IMPLS.items():
        if AUTO_ON_CUDA in row:
            probe = _fast_probe(row[AUTO_ON_CUDA])
            backends[f"{AUTO_ON_CUDA}:{op}"] = {"available": probe.available, "reason": probe.reason}
    resolved = {device: {op: resolve(op, "auto", device) for op in OPS} for device in devices}
    return {"backends": backends, "auto": resolved}


__all__ = ["IMPLS", "OPS", "Impl", "describe", "get_impl", "resolve"]
