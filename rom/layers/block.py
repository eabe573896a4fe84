"""Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x)) when the layer has an MLP."""

from __future__ import annotations

import torch
from torch import nn

from rom.config import Mixer, Mlp, ModelConfig
from rom.layers.aux import RouterStats
from rom.layers.ffn import MoEFFN, SwiGLU
from rom.layers.mixers import mixer_spec
from rom.layers.norm import RMSNorm


def build_mixer(kind: Mixer, cfg: ModelConfig, backend: str) -> nn.Module:
    """The mixer of one layer, from the mixer map (rom/layers/mixers.py); an unknown kind is a ConfigError."""
    return mixer_spec(kind).build(cfg, backend)


def build_mlp(kind: Mlp, cfg: ModelConfig, backend: str) -> nn.Module | None:
    if kind == Mlp.DENSE:
        return SwiGLU(cfg.d_model, cfg.ffn_dim)
    if kind == Mlp.MOE:
        return MoEFFN(cfg.d_model, cfg.ffn_dim, cfg.moe, backend)
    return None


class Block(nn.Module):
    def __init__(self, index: int, mixer: Mixer, mlp: Mlp, cfg: ModelConfig, backend: str = "auto") -> None:
        super().__init__()
        self.index = index
        self.mixer_kind, self.mlp_kind = mixer, mlp
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = build_mixer(mixer, cfg, backend)
        self.mlp = build_mlp(mlp, cfg, backend)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if self.mlp is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[RouterStats]]:
        out, stats = self.mixer(self.norm(x))
        x = x + out
        if self.mlp is not None:
            out, mlp_stats = self.mlp(self.mlp_norm(x))
            x = x + out
            for s in mlp_stats:
                s.name = f"mlp.{s.name}"
            stats = [*stats, *mlp_stats]
        for s in stats:
            s.layer = self.index
            if not s.name.startswith("mlp."):
                s.name = f"mixer.{s.name}"
        return x, stats
