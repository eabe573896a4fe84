"""Top-k softmax router. Returns its decision and auxiliary losses instead of storing them.

P(x_t) = softmax(x_t W_r); S_t = TopK(P(x_t)). Load-balancing loss (Switch Transformer):
E * sum_i f_i * p_i with f_i the share of token-slots sent to expert i and p_i the mean router probability.
Router z-loss (ST-MoE): mean(logsumexp(logits)^2). Probabilities are computed in fp32.

Under data parallelism (``use_global_load_balance(True)``, which rom.train.distributed sets for DDP / FSDP)
f_i counts the token-slots of all ranks (an all-reduce of the per-expert counts while gradients are on), so
the loss is the one of the global batch: each rank weights its own mean probabilities p_i by the global f_i,
and the gradient average over ranks that DDP takes turns them into the global mean probability, so the
gradients equal those of one process on the whole batch (with equal tokens per rank). Each rank's logged
value is its own term; their mean over ranks is the global loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rom import kernels
from rom.layers.aux import RouterStats, z_loss_of

_GLOBAL_LOAD_BALANCE = {"on": False}


def use_global_load_balance(on: bool) -> None:
    """Count f_i over all ranks of the default process group in the load-balancing loss (see module doc)."""
    _GLOBAL_LOAD_BALANCE["on"] = bool(on)


def _global_slot_share(tokens_per_expert: torch.Tensor, slots: int) -> torch.Tensor:
    """f_i: the share of token-slots routed to each expert, over every rank when global statistics are on
    and gradients are being computed (validation under no_grad stays local and free of collectives)."""
    if _GLOBAL_LOAD_BALANCE["on"] and torch.is_grad_enabled():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            counts = tokens_per_expert.detach().clone()
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            return counts / counts.sum().clamp_min(1.0)
    return tokens_per_expert / max(1, slots)


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
        slot_share = _global_slot_share(tokens_per_expert, indices.numel())
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


class TokenRouting:
    """One forward pass's routing, shared by the RoM mixers (Mamba-1, Mamba-2, Gated DeltaNet).

    ``tokens``: the (T, d_model) tokens cast once to the matmul dtype (bf16 under autocast) for the router(s)
    and the expert rows. Shared routing: the cast and the router logits come from one read of the tokens
    (``kernels.router_inputs``), whose backward sums both gradients in one pass, and every expert projection
    reuses that one decision. Independent routers each decide on first use from the cast tokens.
    """

    def __init__(self, hidden: torch.Tensor, router: "Router | None", routers: "nn.ModuleDict | None",
                 backend: str) -> None:
        T, d_model = hidden.shape[0] * hidden.shape[1], hidden.shape[-1]
        dtype = kernels.autocast_dtype(hidden)
        self._routers = routers
        self.decisions: dict[str, RouterDecision] = {}
        if router is not None:
            self.tokens, logits = kernels.router_inputs(hidden.reshape(T, d_model), router.weight, dtype, backend)
            self.decisions["shared"] = router.decide(logits)
        else:
            self.tokens = kernels.cast_weight(hidden.reshape(T, d_model), dtype, backend)  # fast widening backward

    def decide(self, key: str) -> RouterDecision:
        """The decision for the expert projection named ``key`` (shared routing: the one decision)."""
        if "shared" in self.decisions:
            return self.decisions["shared"]
        if key not in self.decisions:
            self.decisions[key] = self._routers[key](self.tokens)
        return self.decisions[key]

    def stats(self) -> list:
        """The router statistics of every decision made, in the order they were made."""
        return [dec.stats for dec in self.decisions.values()]
