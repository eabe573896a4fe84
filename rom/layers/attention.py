"""Sliding-window causal self-attention with rotary position embeddings, through PyTorch SDPA.

Each query attends to itself and the ``window - 1`` tokens before it. When the sequence fits in the window the
mask is plain causal (SDPA's fused causal path). Longer sequences are attended in blocks of ``window`` queries,
each against the ``2 * window`` keys of its own and the previous block under one small banded mask
(``banded_attention``): O(L * window) memory and work, where a full (L, L) mask would cost O(L^2) (the paper's
8K-16K contexts with a 2K window) and keep SDPA off its fused kernels.

Determinism: SDPA's fused CUDA backends (flash, memory-efficient) accumulate the backward's dq / dk / dv with
atomics, so two identical trainings of a hybrid differ (the gpu study measured up to 0.028 nats). While
``torch.are_deterministic_algorithms_enabled()`` (the trainer's ``train.deterministic``), attention on CUDA
runs SDPA's math backend (matmuls and a softmax, no atomics; it materialises the (L, L) or banded (W, 2W)
scores, so it is slower and uses more memory). The CPU path is the same either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from rom.config import AttentionConfig


def rope_tables(length: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)  # (L, hd/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (b, heads, L, hd); rotate pairs (first half, second half)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def sliding_window_mask(length: int, window: int, device) -> torch.Tensor:
    i = torch.arange(length, device=device)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff < window)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention; on CUDA under deterministic algorithms, its math backend (see above)."""
    if q.is_cuda and torch.are_deterministic_algorithms_enabled():
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention of each query to itself and the window - 1 keys before it; q, k, v: (b, h, L, hd).

    The same keys as ``sliding_window_mask``, so the same result up to rounding. Block 0 (the first W queries)
    is plain causal attention; query block i >= 1 (positions [i W, (i+1) W)) sees keys [(i-1) W, (i+1) W),
    local key j allowed for local query p when p < j <= p + W: one (W, 2W) mask that broadcasts over batch,
    heads and blocks, so nothing of size L^2, or even L * W per head, is ever materialised.
    """
    b, h, L, hd = q.shape
    W = window
    if L <= W:
        return sdpa(q, k, v, is_causal=True)
    y0 = sdpa(q[:, :, :W], k[:, :, :W], v[:, :, :W], is_causal=True)
    nb = -(-L // W)
    pad = nb * W - L
    qb = F.pad(q[:, :, W:], (0, 0, 0, pad)).reshape(b, h * (nb - 1), W, hd)

    def key_blocks(t: torch.Tensor) -> torch.Tensor:
        tb = F.pad(t, (0, 0, 0, pad)).view(b, h, nb, W, hd)
        return torch.cat([tb[:, :, :-1], tb[:, :, 1:]], dim=3).reshape(b, h * (nb - 1), 2 * W, hd)

    p_idx = torch.arange(W, device=q.device)[:, None]
    j_idx = torch.arange(2 * W, device=q.device)[None, :]
    band = (j_idx > p_idx) & (j_idx <= p_idx + W)  # (W, 2W)
    y_rest = sdpa(qb, key_blocks(k), key_blocks(v), attn_mask=band)
    return torch.cat([y0, y_rest.view(b, h, (nb - 1) * W, hd)], dim=2)[:, :, :L]


class SlidingWindowAttention(nn.Module):
    def __init__(self, d_model: int, cfg: AttentionConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = d_model // cfg.n_heads
        self.window = cfg.window
        self.theta = cfg.rope_theta
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj._is_residual_out = True
        # (L, device, dtype) -> (cos, sin): the tables depend on nothing learned, so they are built once per
        # shape instead of on every forward (a few small kernels each time)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    ROPE_CACHE_ENTRIES = 8  # evaluation at several context lengths adds a few; bounded all the same

    def _rope(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (length, device, dtype)
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = rope_tables(length, self.head_dim, self.theta, device, dtype)
            # tables made under inference mode cannot be saved for a later backward, so they are not kept
            if not torch.is_inference_mode_enabled() and device.type != "meta":
                if len(self._rope_cache) >= self.ROPE_CACHE_ENTRIES:
                    self._rope_cache.pop(next(iter(self._rope_cache)))
                self._rope_cache[key] = tables
        return tables

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        b, L, d = x.shape
        q, k, v = self.qkv(x).view(b, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self._rope(L, x.device, q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if L <= self.window:
            y = sdpa(q, k, v, is_causal=True)
        else:
            y = banded_attention(q, k, v, self.window)
        return self.out_proj(y.transpose(1, 2).reshape(b, L, d)), []
