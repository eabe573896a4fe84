"""Kernels: the only place that touches optional accelerators. This module only re-exports.

Public ops (docs/interfaces.md, "Kernels"): ``selective_scan``, ``causal_conv1d``, ``make_dispatch``,
``permute``, ``expert_matmul``, ``unpermute``, ``unpermute_to_channels``, ``permute_from_channels``,
``linear_channels``, ``router_inputs``, ``route_top1``, ``cast_weight``, ``mamba_inner``, ``ssd_scan``,
``gated_delta_rule``, ``resolve``. Where they live:

    registry      the op table IMPLS[op][backend], resolve / get_impl / describe
    backends      backend names, cached probes of the optional packages, BackendUnavailableError
    reference/    the pure-torch references: the semantics of every op
    mamba_ops     selective_scan, causal_conv1d, mamba_inner (the mixer's ops)
    ssd_ops       ssd_scan (Mamba-2's scan)
    gated_delta_ops  gated_delta_rule (Gated DeltaNet's recurrence)
    experts       the expert dispatch and projection; routing: the router's ops; layout: linear_channels;
                  weight_cast: cast_weight
    triton_*      the Triton implementations (inner_path: the fused mamba_inner); mamba_ssm_backend: the
                  adapters to the state-spaces kernels

``selective_scan_sequential`` is the per-timestep ground truth used by tests. Importing this package imports
torch only: triton, mamba_ssm and causal_conv1d are probed lazily on first use.
"""

from __future__ import annotations

from rom.kernels.backends import BACKENDS, BackendUnavailableError
from rom.kernels.experts import (
    Dispatch,
    expert_matmul,
    grouped_mm_op,
    make_dispatch,
    permute,
    permute_from_channels,
    unpermute,
    unpermute_to_channels,
)
from rom.kernels.gated_delta_ops import gated_delta_rule
from rom.kernels.layout import autocast_dtype, linear_channels
from rom.kernels.mamba_ops import causal_conv1d, mamba_inner, mamba_inner_reference, selective_scan
from rom.kernels.reference.conv import causal_conv1d_reference
from rom.kernels.reference.scan import selective_scan_reference, selective_scan_sequential
from rom.kernels.registry import OPS, describe, get_impl, resolve
from rom.kernels.routing import route_top1, router_inputs
from rom.kernels.ssd_ops import ssd_scan
from rom.kernels.weight_cast import cast_weight, weight_grads_accumulate_in_place

__all__ = [
    "BACKENDS",
    "OPS",
    "BackendUnavailableError",
    "Dispatch",
    "autocast_dtype",
    "cast_weight",
    "causal_conv1d",
    "causal_conv1d_reference",
    "describe",
    "expert_matmul",
    "gated_delta_rule",
    "get_impl",
    "grouped_mm_op",
    "linear_channels",
    "make_dispatch",
    "mamba_inner",
    "mamba_inner_reference",
    "permute",
    "permute_from_channels",
    "resolve",
    "route_top1",
    "router_inputs",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_sequential",
    "ssd_scan",
    "unpermute",
    "unpermute_to_channels",
    "weight_grads_accumulate_in_place",
]
