"""Adapters from our kernel signatures to the optional state-spaces CUDA kernels.

Imported only when backend "mamba_ssm" resolves (see rom.kernels.registry); never at package import. mamba_ssm's
``selective_scan_fn`` has our exact semantics and signature (it is where ``selective_scan_ref`` comes from);
it wants A, D and delta_bias in float32 and contiguous-in-time inputs, which these adapters arrange.
"""

from __future__ import annotations

from torch import Tensor

from rom.kernels.backends import BackendUnavailableError, probe_causal_conv1d, probe_mamba_ssm
from rom.kernels.reference.conv import check_conv_inputs
from rom.kernels.reference.scan import check_scan_inputs


def _contiguous_time(t: Tensor | None) -> Tensor | None:
    if t is None or t.stride(-1) == 1:
        return t
    return t.contiguous()


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """mamba_ssm.ops.selective_scan_interface.selective_scan_fn with our argument conventions."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    probe = probe_mamba_ssm()
    if probe.impl is None:
        raise BackendUnavailableError(f"kernel backend 'mamba_ssm' cannot run: {probe.reason}")
    return probe.impl(
        _contiguous_time(u),
        _contiguous_time(delta),
        A.float(),
        _contiguous_time(B),
        _contiguous_time(C),
        None if D is None else D.float(),
        _contiguous_time(z),
        None if delta_bias is None else delta_bias.float(),
        delta_softplus,
        return_last_state,
    )


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = "silu") -> Tensor:
    """causal_conv1d.causal_conv1d_fn (activation None / "silu" / "swish")."""
    check_conv_inputs(x, weight, bias, activation)
    probe = probe_causal_conv1d()
    if probe.impl is None:
        raise BackendUnavailableError(f"kernel backend 'mamba_ssm' (causal_conv1d) cannot run: {probe.reason}")
    return probe.impl(x, weight, bias, activation=activation)
