"""Pure-torch gated delta rule (Gated DeltaNet, Yang, Kautz & Hatamizadeh, ICLR 2025): the semantics every
other backend of the ``gated_delta_rule`` op must match.

Semantics, per batch element and head, with the state S_t a (K, V) matrix, S_0 = 0 (or ``initial_state``)::

    S_t = exp(g_t) * (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = S_t^T (scale * q_t)

Shapes (time-major, as flash-linear-attention's ``chunk_gated_delta_rule``): q, k: (batch, L, H, K);
v: (batch, L, H, V); g (the log decay, expected <= 0) and beta: (batch, L, H). o: (batch, L, H, V) in v's
dtype; the state math runs in float32 (float64 when v is float64). ``scale`` defaults to K^-0.5. q and k are
taken as given (the layer L2-normalises them first, as the paper does).

Two implementations:

* ``gated_delta_rule_reference``: the chunked form (the WY / UT-transform representation the paper uses),
  fast enough to train on CPU and differentiated by autograd. The time axis is cut into chunks of ``CHUNK``
  steps. Inside a chunk, with G_i the cumulative log decay from the chunk's start and S_0 its initial state,
  unrolling the recurrence gives S_i = exp(G_i) S_0 + sum_{j<=i} exp(G_i - G_j) k_j u_j^T with the
  pseudo-values u_j = beta_j (v_j - exp(G_j) S_0^T k_j - sum_{m<j} exp(G_j - G_m) (k_j . k_m) u_m); in matrix
  form (I + A) U = diag(beta) V - diag(beta exp(G)) K S_0 with A strictly lower triangular,
  A_jm = beta_j exp(G_j - G_m) k_j . k_m. One unit-triangular solve per chunk (batched over every chunk at
  once) gives U = W_v - W_k S_0, where W_v = (I + A)^-1 diag(beta) V and W_k = (I + A)^-1 diag(beta exp(G)) K
  do not depend on S_0. Then::

      O   = diag(exp(G)) (scale Q) S_0 + (scale Q K^T * exp(G_i - G_j) * [j <= i]) U
      S_C = exp(G_C) S_0 + (K * exp(G_C - G))^T U

  Only the last three products depend on S_0, so the Python loop runs over chunks (L / CHUNK iterations of
  small matmuls), never over time. Every exponent is <= 0 (decays only shrink), so nothing overflows;
  exp(G) may underflow to zero inside a long, strongly decaying chunk, which is the true, negligible value.
  The sequence is padded to a multiple of CHUNK with k = v = q = 0, g = 0, beta = 0, which leaves the outputs
  and the state unchanged.

* ``gated_delta_rule_sequential``: the plain per-timestep loop in whatever dtype it is given (tests run it in
  float64 as ground truth).

``return_final_state=True`` makes both return ``(o, S_L)`` with S_L of shape (batch, H, K, V) in the state
dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 64  # steps per chunk (flash-linear-attention's chunk size; the triangular solve is C x C)


def check_gated_delta_inputs(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                             initial_state: Tensor | None = None) -> None:
    """Raise ValueError naming the argument whose shape breaks the contract."""
    if q.dim() != 4:
        raise ValueError(f"gated_delta_rule: q must be (batch, L, heads, K), got shape {tuple(q.shape)}")
    b, L, H, K = q.shape
    if L < 1:
        raise ValueError(f"gated_delta_rule: sequence length must be >= 1, got q of shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"gated_delta_rule: k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (b, L, H):
        raise ValueError(f"gated_delta_rule: v must be (batch={b}, L={L}, heads={H}, V), got {tuple(v.shape)}")
    for name, t in (("g", g), ("beta", beta)):
        if tuple(t.shape) != (b, L, H):
            raise ValueError(f"gated_delta_rule: {name} must have shape {(b, L, H)}, got {tuple(t.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (b, H, K, v.shape[-1]):
        raise ValueError(f"gated_delta_rule: initial_state must have shape {(b, H, K, v.shape[-1])}, "
                         f"got {tuple(initial_state.shape)}")


def _state_dtype(v: Tensor) -> torch.dtype:
    return torch.float64 if v.dtype == torch.float64 else torch.float32


def gated_delta_rule_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    chunk: int = CHUNK,
) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked gated delta rule (module docstring). o: (batch, L, H, V) in v's dtype."""
    check_gated_delta_inputs(q, k, v, g, beta, initial_state)
    b, L, H, K = q.shape
    V = v.shape[-1]
    dt = _state_dtype(v)
    scale = K**-0.5 if scale is None else scale
    C = min(chunk, L)
    n = -(-L // C)
    pad = n * C - L

    def heads_first(t: Tensor) -> Tensor:  # (b, L, H, ...) -> (b, H, n, C, ...), padded with zeros
        t = t.to(dt)
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 3) + (0, 0, 0, pad))
        t = t.transpose(1, 2)
        return t.reshape(b, H, n, C, *t.shape[3:])

    qc = heads_first(q) * scale  # (b, H, n, C, K)
    kc = heads_first(k)
    vc = heads_first(v)  # (b, H, n, C, V)
    gc = heads_first(g[..., None])[..., 0]  # (b, H, n, C)
    bc = heads_first(beta[..., None])[..., 0]
    G = gc.cumsum(-1)  # cumulative log decay from the chunk start, <= 0

    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # j <= i
    strict = lower.clone().fill_diagonal_(False)  # m < j
    diff = G[..., :, None] - G[..., None, :]  # G_i - G_j, <= 0 where j <= i
    decay_incl = diff.masked_fill(~lower, float("-inf")).exp()  # exp(G_i - G_j) [j <= i]
    kk = kc @ kc.transpose(-1, -2)  # (b, H, n, C, C)
    A = (bc[..., None] * kk * decay_incl).masked_fill(~strict, 0.0)
    eye = torch.eye(C, dtype=dt, device=q.device)
    rhs = torch.cat([bc[..., None] * vc, (bc * G.exp())[..., None] * kc], dim=-1)  # (b, H, n, C, V + K)
    w = torch.linalg.solve_triangular(A + eye, rhs, upper=False, unitriangular=True)
    w_v, w_k = w.split([V, K], dim=-1)
    attn = (qc @ kc.transpose(-1, -2)) * decay_incl  # (b, H, n, C, C), zero above the diagonal
    q_decayed = qc * G.exp()[..., None]  # diag(exp(G)) scale Q
    k_to_end = kc * (G[..., -1:] - G).exp()[..., None]  # K * exp(G_C - G)
    chunk_decay = G[..., -1].exp()  # (b, H, n)

    S = (torch.zeros(b, H, K, V, dtype=dt, device=q.device) if initial_state is None
         else initial_state.to(dt))
    outs = []
    for c in range(n):
        u = w_v[:, :, c] - w_k[:, :, c] @ S  # (b, H, C, V)
        outs.append(q_decayed[:, :, c] @ S + attn[:, :, c] @ u)
        S = chunk_decay[:, :, c, None, None] * S + k_to_end[:, :, c].transpose(-1, -2) @ u
    o = torch.stack(outs, dim=2).reshape(b, H, n * C, V)[:, :, :L].transpose(1, 2).to(v.dtype)
    return (o, S) if return_final_state else o


def gated_delta_rule_sequential(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The per-timestep recurrence in the inputs' dtype (ground truth for tests)."""
    check_gated_delta_inputs(q, k, v, g, beta, initial_state)
    b, L, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    S = v.new_zeros(b, H, K, V) if initial_state is None else initial_state.to(v.dtype)
    eye = torch.eye(K, dtype=v.dtype, device=v.device)
    outs = []
    for t in range(L):
        kt, vt, qt = k[:, t], v[:, t], q[:, t] * scale  # (b, H, K), (b, H, V), (b, H, K)
        bt, at = beta[:, t, :, None, None], g[:, t, :, None, None].exp()
        S = at * ((eye - bt * kt[..., :, None] * kt[..., None, :]) @ S) + bt * kt[..., :, None] * vt[..., None, :]
        outs.append((S.transpose(-1, -2) @ qt[..., None])[..., 0])
    o = torch.stack(outs, dim=1)
    return (o, S) if return_final_state else o
