"""Mamba-2's state-space duality (SSD) scan, chunked, in pure torch: the semantics of the "ssd_scan" op.

Per head h (of H, each of P channels), group g(h) = h // (H / G) of the G groups sharing B and C, time t:
    delta_t = softplus(dt_t + dt_bias)                      (one step size per head)
    S_t     = exp(delta_t * A) S_{t-1} + delta_t * x_t B_t^T (state (P, N); A < 0 a scalar per head)
    y_t     = S_t C_t + D x_t
The chunked form (Dao & Gu 2024, section 6) splits time into chunks of Q steps: within a chunk the output is a
masked (Q x Q) "attention" C_i^T B_j exp(cumsum_i - cumsum_j) over the chunk's inputs; the chunk's final
states pass from chunk to chunk through a short recurrence; each position adds its chunk's incoming state read
out by C_i and decayed by exp(cumsum_i). Log-decays are cumulative sums within a chunk only, so exp never sees
more than one chunk's decay. Computed in fp32 (fp64 inputs stay fp64); differentiable through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ssd_scan_reference(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       dt_bias: Tensor | None, chunk_size: int) -> Tensor:
    """x (b, L, H, P), dt (b, L, H) before softplus, A (H,) negative, B and C (b, L, G, N), D (H,) or None,
    dt_bias (H,) or None, chunk_size Q -> y (b, L, H, P) in x's dtype."""
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if H % G:
        raise ValueError(f"ssd_scan: {H} heads are not divisible into {G} groups of B and C")
    Hg = H // G
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    Q = max(1, min(int(chunk_size), L))  # a chunk longer than the sequence computes nothing more
    nc = -(-L // Q)
    pad = nc * Q - L

    delta = F.softplus(dt.to(cdt) + (dt_bias.to(cdt) if dt_bias is not None else 0.0))  # (b, L, H)
    dA = delta * A.to(cdt)  # log-decay per step, <= 0
    xd = x.to(cdt) * delta.unsqueeze(-1)  # discretised input

    def chunks(t: Tensor) -> Tensor:  # (b, L, ...) -> (b, nc, Q, ...), zero-padded at the end (causal: harmless)
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(b, nc, Q, *t.shape[2:])

    xc = chunks(xd).reshape(b, nc, Q, G, Hg, P)
    Bc, Cc = chunks(B.to(cdt)), chunks(C.to(cdt))  # (b, nc, Q, G, N)
    Acs = torch.cumsum(chunks(dA).reshape(b, nc, Q, G, Hg), dim=2).permute(0, 1, 3, 4, 2)  # (b, nc, G, Hg, Q)

    # 1. within chunks: y_i += sum_{j <= i} (C_i . B_j) exp(Acs_i - Acs_j) xd_j
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    seg = (Acs.unsqueeze(-1) - Acs.unsqueeze(-2)).masked_fill(~causal, float("-inf"))  # (b, nc, G, Hg, Q, Q)
    CB = torch.einsum("bcign,bcjgn->bcgij", Cc, Bc)
    y = torch.einsum("bcgij,bcghij,bcjghp->bcighp", CB, torch.exp(seg), xc)

    # 2. each chunk's final state from its own inputs: sum_j exp(Acs_last - Acs_j) xd_j B_j^T
    decay_to_end = torch.exp(Acs[..., -1:] - Acs)  # (b, nc, G, Hg, Q)
    states = torch.einsum("bcjgn,bcghj,bcjghp->bcghpn", Bc, decay_to_end, xc)

    # 3. across chunks: the state entering chunk c (zero for the first)
    chunk_decay = torch.exp(Acs[..., -1])  # (b, nc, G, Hg)
    carried = []
    s = torch.zeros_like(states[:, 0])
    for c in range(nc):
        carried.append(s)
        s = chunk_decay[:, c, ..., None, None] * s + states[:, c]
    entering = torch.stack(carried, dim=1)  # (b, nc, G, Hg, P, N)

    # 4. the entering state read out at each position, decayed to it: C_i . (exp(Acs_i) S_c)
    y = y + torch.einsum("bcign,bcghpn,bcghi->bcighp", Cc, entering, torch.exp(Acs))

    y = y.reshape(b, nc * Q, H, P)[:, :L]
    if D is not None:
        y = y + x.to(cdt) * D.to(cdt)[:, None]
    return y.to(x.dtype)
