"""Gated DeltaNet's kernel op: the gated delta rule (semantics: rom.kernels.reference.gated_delta).

Looks the op's implementation up in the op table (rom.kernels.registry) for ``backend`` and the input's
device: "reference" (the pure-torch chunked form) everywhere, and "triton" on CUDA where flash-linear-attention
is installed (``pip install fla-core``, the ``fla`` extra; rom.kernels.fla_ops runs fla's chunked kernels).
"auto" picks "triton" on CUDA with fla, else the reference.
"""

from __future__ import annotations

from torch import Tensor

from rom.kernels.reference.gated_delta import CHUNK
from rom.kernels.registry import get_impl


def gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None,
                     chunk_size: int = CHUNK, backend: str = "auto") -> Tensor:
    """q, k: (batch, L, heads, K); v: (batch, L, heads, V); g (log decay <= 0), beta: (batch, L, heads) ->
    o: (batch, L, heads, V) in v's dtype; ``scale`` defaults to K^-0.5; ``chunk_size``: the chunked form's chunk
    length (numerics and speed only)."""
    return get_impl("gated_delta_rule", backend, q.device)(q, k, v, g, beta, scale, chunk=chunk_size)
