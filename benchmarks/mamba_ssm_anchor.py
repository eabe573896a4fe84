"""mamba-ssm's own ``Mamba`` layer as the benchmarks' anchor (optional: only where mamba-ssm is built).

Shared by ``gpu_layers.py`` (one layer) and ``gpu_step.py`` (whole models built on these layers).
"""

from __future__ import annotations

import importlib

import torch


def mamba_ssm_layer(d_model: int, d_state: int = 16) -> tuple[torch.nn.Module | None, str]:
    """mamba-ssm's own ``Mamba`` as installed (its fused path needs causal-conv1d, else conv1d + selective_scan_fn)."""
    try:
        from mamba_ssm.modules.mamba_simple import Mamba
    except Exception as err:  # noqa: BLE001 - optional comparison
        return None, f"not available ({type(err).__name__}: {err})"
    try:
        importlib.import_module("causal_conv1d")

        path = "fast path (mamba_inner_fn, causal-conv1d)"
    except Exception:  # noqa: BLE001
        path = "without causal-conv1d: torch conv1d + selective_scan_fn (not the fused fast path)"
    return Mamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2).cuda(), path


def mamba_ssm_fused_with_our_conv(d_model: int, d_state: int = 16) -> tuple[torch.nn.Module | None, str]:
    """mamba-ssm's fused ``mamba_inner_fn`` with our Triton conv standing in for causal-conv1d's CUDA conv.

    causal-conv1d takes ~570 s to build for sm_90, more than a device call can spare beside mamba-ssm's own
    build; our conv kernel takes the same arguments, so mamba-ssm's fused path runs with it instead. Patches
    the two modules globally, so a plain ``mamba_ssm_layer`` must be timed before the first call of this.
    Where causal-conv1d is installed, returns its real fast path unpatched.
    """
    try:
        importlib.import_module("causal_conv1d")

        return mamba_ssm_layer(d_model, d_state)
    except Exception:  # noqa: BLE001
        pass
    try:
        import mamba_ssm.modules.mamba_simple as simple
        import mamba_ssm.ops.selective_scan_interface as ssi
    except Exception as err:  # noqa: BLE001
        return None, f"not available ({type(err).__name__}: {err})"
    from rom.kernels.triton_conv import conv_backward, conv_forward

    def fwd(x, weight, bias, seq_idx, initial_states, final_states_out, silu_activation):
        return conv_forward(x, weight, bias, bool(silu_activation))

    def bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, return_dfinal_states, silu):
        gx, gw, gb = conv_backward(x, weight, bias, dout, bool(silu))
        if dx is not None:
            dx.copy_(gx)
            gx = dx
        return gx, gw, gb, None

    ssi.causal_conv1d_fwd_function, ssi.causal_conv1d_bwd_function = fwd, bwd
    simple.causal_conv1d_fn = lambda *a, **k: None  # only tested for None by Mamba.forward
    layer = simple.Mamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2).cuda()
    return layer, "mamba_inner_fn (mamba-ssm CUDA scan, fused glue) + our Triton conv in causal-conv1d's place"
