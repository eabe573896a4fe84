"""Top-k softmax router. Returns its decision and auxiliary losses instead of storing them.

P(x_t) = softmax(x_t W_r); S_t = TopK(P(x_t)). Load-balancing loss (Switch Transformer):
E * sum_i f_i * p_i with f_i the share of token-slots sent to expert i and p_i the mean router probability.
Router z-loss (ST-MoE): mean(logsumexp(logits)^2). Probabilities are computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rom import kernels
from rom.layers.aux import RouterStats, z_loss_of


@dataclass
class RouterDecision:
    logits: torch.Tensor  # (T, E) fp32
    indices: torch.Tensor  # (T, k) int64: chosen experts per token
    weights: torch.Tensor  # (T, k) fp32: router probability of each chosen expert (renormalised if asked)
    dispatch: "kernels.Dispatch"  # sort-based permutation of the token-slots by expert
    stats: RouterStats


class Router(nn.Module):
    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int,
        renormalize: bool = False,
        load_balance_coef: float = 0.0,
        z_loss_coef: float = 0.0,
        name: str = "router",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.load_balance_coef = load_balance_coef
        self.z_loss_coef = z_loss_coef
        self.name = name
        self.backend = backend  # kernel backend of the dispatch (sort by expert)
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)

    def forward(self, x: torch.Tensor) -> RouterDecision:
        """x: (T, d_model) -> RouterDecision for T tokens."""
        return self.decide((x @ self.weight.t().to(x.dtype)).float())

    def decide(self, logits: torch.Tensor) -> RouterDecision:
        """Logits (T, E) fp32, computed by the caller (e.g. kernels.router_inputs) -> RouterDecision."""
        if self.top_k == 1 and not self.renormalize:
            # softmax, max and the mean probabilities in one op (one Triton pass each way on CUDA)
            weights, indices, prob_mean = kernels.route_top1(logits, self.backend)
        else:
            probs = torch.softmax(logits, dim=-1)
            top_probs, indices = torch.topk(probs, self.top_k, dim=-1)
            weights = top_probs / top_probs.sum(-1, keepdim=True) if self.renormalize else top_probs
            prob_mean = probs.mean(0)
        dispatch = kernels.make_dispatch(indices, self.num_experts, self.backend)

        tokens_per_expert = dispatch.tokens_per_expert.to(logits.dtype)
        slot_share = tokens_per_expert / max(1, indices.numel())
        load_balance = self.num_experts * (slot_share.detach() * prob_mean).sum()
        weighted = self.load_balance_coef * load_balance
        z_loss = None
        if self.z_loss_coef > 0:  # otherwise a logging-only diagnostic, computed lazily by RouterStats
            z_loss = z_loss_of(logits)
            weighted = weighted + self.z_loss_coef * z_loss
        stats = RouterStats(
            name=self.name,
            layer=-1,
            tokens_per_expert=tokens_per_expert.detach(),
            load_balance_loss=load_balance,
            weighted_loss=weighted,
            logits=logits.detach(),
            z_loss_value=z_loss,
        )
        return RouterDecision(logits, indices, weights, dispatch, stats)
