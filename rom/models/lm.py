"""Language model built from a layer pattern: tied embeddings, pre-norm blocks, final RMSNorm, LM head."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rom.config import ModelConfig
from rom.layers.aux import AuxOutputs, RouterStats
from rom.layers.block import Block
from rom.layers.norm import RMSNorm


@dataclass
class LMOutput:
    logits: torch.Tensor  # (batch, L, vocab)
    aux_loss: torch.Tensor  # scalar: weighted sum of all routers' auxiliary losses
    router_stats: list[RouterStats] = field(default_factory=list)


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: str = "auto") -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backend = backend
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(
            Block(i, mixer, mlp, cfg, backend) for i, (mixer, mlp) in enumerate(cfg.layers())
        )
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """Embeddings N(0, init_std); Linear biases zero (except dt bias); residual outputs scaled by
        1/sqrt(n_residuals_per_layer * n_layer) (GPT-2 / Mamba prenorm-residual rescaling)."""
        nn.init.normal_(self.embedding.weight, std=self.cfg.init_std)
        n_residuals = 2 if any(layer.mlp is not None for layer in self.layers) else 1
        scale = 1.0 / math.sqrt(n_residuals * self.cfg.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
            if getattr(module, "_is_residual_out", False):
                with torch.no_grad():
                    module.weight.mul_(scale)

    def forward(self, input_ids: torch.Tensor) -> LMOutput:
        x = self.embedding(input_ids)
        aux = AuxOutputs()
        for layer in self.layers:
            x, stats = layer(x)
            aux.router_stats.extend(stats)
        logits = self.lm_head(self.norm_f(x))
        return LMOutput(logits=logits, aux_loss=aux.total_loss(logits), router_stats=aux.router_stats)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig, backend: str = "auto") -> LanguageModel:
    return LanguageModel(cfg, backend=backend)
