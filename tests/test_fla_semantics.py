"""The semantics our fla adapters (rom/kernels/fla_ops.py) assume of fla-core, checked on CPU against fla's own
pure-torch recurrences (``fla/ops/*/naive.py``), in float64 through our references:

* the gated delta rule: same layout (b, L, H, K), g a per-step log decay, beta on the delta-rule step, scale on
  q defaulting to K^-0.5: fla's recurrence equals our ``gated_delta_rule_reference`` with the arguments
  passed through unchanged (what ``gated_delta_rule_fla`` does);
* Mamba-2's SSD as scalar-decay gated linear attention: fla's simple-GLA recurrence with q = C, k = B (groups
  expanded to heads), v = x * delta, g = delta * A, scale 1, plus D x, equals our ``ssd_scan_reference`` (the
  mapping ``ssd_scan_fla`` makes).

The GPU kernels themselves are checked in tests/gpu/test_fla_parity_gpu.py. fla's package __init__ imports
triton, which a CPU machine need not have, so the two naive files (torch and einops only) are loaded by path.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rom.kernels.reference.gated_delta import gated_delta_rule_reference
from rom.kernels.reference.ssd import ssd_scan_reference


def _naive(op: str, name: str):
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (the dev extra installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "ops" / op / "naive.py"
    module_spec = importlib.util.spec_from_file_location(f"_fla_naive_{op}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, name)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("scale", [None, 0.3])
def test_gated_delta_rule_matches_fla_recurrence(scale):
    naive = _naive("gated_delta_rule", "naive_recurrent_gated_delta_rule")
    torch.manual_seed(0)
    b, L, H, K, V = 2, 37, 3, 8, 6
    q = torch.randn(b, L, H, K, dtype=torch.float64)
    k = F.normalize(torch.randn(b, L, H, K, dtype=torch.float64), dim=-1)  # the layer L2-normalises q and k
    v = torch.randn(b, L, H, V, dtype=torch.float64)
    g = -torch.rand(b, L, H, dtype=torch.float64) * 2.0
    beta = torch.rand(b, L, H, dtype=torch.float64)
    ours = gated_delta_rule_reference(q, k, v, g, beta, scale, chunk=16)
    theirs, _ = naive(q, k, v, beta, g, scale=scale)  # fla computes in float32
    assert theirs.shape == ours.shape
    assert _rel(theirs, ours) < 1e-5


@pytest.mark.parametrize("groups", [1, 3])
def test_ssd_scan_is_simple_gla_under_the_adapter_mapping(groups):
    naive = _naive("simple_gla", "naive_recurrent_simple_gla")
    torch.manual_seed(1)
    b, L, H, P, N = 2, 29, 6, 5, 7
    x = torch.randn(b, L, H, P, dtype=torch.float64)
    dt = torch.randn(b, L, H, dtype=torch.float64) - 1.0
    A = -torch.exp(torch.rand(H, dtype=torch.float64) * 2.0)
    B = torch.randn(b, L, groups, N, dtype=torch.float64)
    C = torch.randn(b, L, groups, N, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)
    dt_bias = torch.randn(H, dtype=torch.float64) * 0.5
    ours = ssd_scan_reference(x, dt, A, B, C, D, dt_bias, 8)

    delta = F.softplus(dt + dt_bias)
    heads_per_group = H // groups
    o, _ = naive(C.repeat_interleave(heads_per_group, dim=2), B.repeat_interleave(heads_per_group, dim=2),
                 x * delta.unsqueeze(-1), delta * A, scale=1.0)
    theirs = o.double() + x * D[:, None]
    assert _rel(theirs, ours) < 1e-5
