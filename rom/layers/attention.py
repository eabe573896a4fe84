"""Sliding-window causal self-attention with rotary position embeddings, through PyTorch SDPA.

Each query attends to itself and the ``window - 1`` tokens before it. When the sequence fits in the window the
mask is plain causal (SDPA's fused causal path); otherwise a banded boolean mask is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        b, L, d = x.shape
        q, k, v = self.qkv(x).view(b, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = rope_tables(L, self.head_dim, self.theta, x.device, q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if L <= self.window:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(L, self.window, x.device))
        return self.out_proj(y.transpose(1, 2).reshape(b, L, d)), []
