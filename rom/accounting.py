"""Parameters and FLOPs by component, active vs total: the toolkit's one source of truth. Torch-free.

Each mixer's own parameters and FLOPs sit beside its constructor in the mixer map (``rom.layers.mixers``);
this module adds the embedding, norms, MLPs and LM head, and sums.

Parameter conventions
- ``total``: every parameter (tied embedding counted once).
- ``active``: parameters a single token touches in a forward pass: shared parts, the router, and ``top_k`` of
  the ``num_experts`` experts of every expert bank (RoM projections, FFN-MoE). For dense models active = total.
- ``*_nonembedding``: minus the token embedding (the tied LM head adds nothing further). With untied embeddings
  the separate head counts as non-embedding, as in Kaplan et al.
- The test suite asserts that ``total`` equals the number of parameters of the model that
  ``rom.models.build_model`` constructs, component by component.

FLOP conventions (per token; multiply-add = 2 FLOPs)
- Matmuls (projections, experts, router, MLP, attention projections, LM head): 2 * d_in * d_out per token
  per active weight matrix; an expert bank contributes ``top_k`` experts.
- Depthwise causal conv: 2 * d_inner * d_conv.
- Selective scan: 8 * d_inner * d_state + 3 * d_inner (discretisation exp(delta*A), delta*B*u, state update,
  C.h readout; D skip and the z gate per channel). Elementwise activations, norms, softmax and the
  permutation of token-slots are not counted.
- Attention scores and values: 4 * d_model * c, with c the mean number of keys a query attends to at sequence
  length L under causal masking and window w: c = mean_t min(t + 1, w). (torch's FlopCounterMode counts the
  full L x L product for SDPA, so its attention-score figure is larger by about 2L / (L + 1).)
- Training = 3 x forward (backward = 2 x forward), and ``train_total`` = training FLOPs per token x tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rom.config import Mlp, ModelConfig
from rom.layers.mixers import mean_attended_keys, mixer_spec

__all__ = ["Component", "FlopCount", "ParamCount", "count_flops", "count_params", "mean_attended_keys", "summary"]


@dataclass
class Component:
    total: int = 0
    active: int = 0

    def add(self, total: int, active: int | None = None) -> None:
        self.total += int(total)
        self.active += int(total if active is None else active)


@dataclass
class ParamCount:
    total: int
    active: int
    embedding: int
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def total_nonembedding(self) -> int:
        return self.total - self.embedding

    @property
    def active_nonembedding(self) -> int:
        return self.active - self.embedding

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "total_nonembedding": self.total_nonembedding,
            "active_nonembedding": self.active_nonembedding,
            "embedding": self.embedding,
            "components": {k: {"total": c.total, "active": c.active} for k, c in self.components.items()},
        }


@dataclass
class FlopCount:
    fwd: float  # per token, forward
    components: dict[str, float]  # per token, forward, by component

    @property
    def train(self) -> float:
        return 3.0 * self.fwd

    @property
    def matmul_fwd(self) -> float:
        """Forward FLOPs of weight matmuls only (what FlopCounterMode / fvcore see as mm/addmm/grouped mm)."""
        return sum(v for k, v in self.components.items() if k not in NON_MATMUL_FLOP_COMPONENTS)


NON_MATMUL_FLOP_COMPONENTS = ("conv1d", "scan", "attention.scores")


def count_params(cfg: ModelConfig) -> ParamCount:
    comps: dict[str, Component] = {}

    def add(name: str, total: int, active: int | None = None) -> None:
        comps.setdefault(name, Component()).add(total, active)

    Dm, V = cfg.d_model, cfg.vocab_size
    embedding = V * Dm
    add("embedding", embedding)
    if not cfg.tie_embeddings:
        add("head", V * Dm)
    add("norms", Dm)  # final norm
    for mixer, mlp in cfg.layers():
        add("norms", Dm)
        mixer_spec(mixer).count_params(cfg, add)  # rom/layers/mixers.py: each mixer's own accounting
        if mlp != Mlp.NONE:
            add("norms", Dm)
            F = cfg.ffn_dim
            if mlp == Mlp.DENSE:
                add("mlp", 3 * Dm * F)
            else:
                E, k = cfg.moe.num_experts, cfg.moe.top_k
                add("mlp.router", E * Dm)
                add("mlp.experts", 3 * Dm * F * E, 3 * Dm * F * k)
    total = sum(c.total for c in comps.values())
    active = sum(c.active for c in comps.values())
    return ParamCount(total=total, active=active, embedding=embedding, components=comps)


def count_flops(cfg: ModelConfig, seq_len: int) -> FlopCount:
    comps: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        comps[name] = comps.get(name, 0.0) + float(value)

    Dm, V = cfg.d_model, cfg.vocab_size
    for mixer, mlp in cfg.layers():
        mixer_spec(mixer).count_flops(cfg, seq_len, add)  # rom/layers/mixers.py: each mixer's own accounting
        if mlp == Mlp.DENSE:
            add("mlp", 2 * 3 * Dm * cfg.ffn_dim)
        elif mlp == Mlp.MOE:
            add("mlp.router", 2 * Dm * cfg.moe.num_experts)
            add("mlp", 2 * 3 * Dm * cfg.ffn_dim * cfg.moe.top_k)
    add("head", 2 * Dm * V)
    return FlopCount(fwd=sum(comps.values()), components=comps)


def summary(cfg: ModelConfig, seq_len: int) -> dict:
    """The JSON that `rom flops` prints and run records embed."""
    params = count_params(cfg)
    flops = count_flops(cfg, seq_len)
    return {
        "family": cfg.family,
        "seq_len": seq_len,
        "params_total": params.total,
        "params_active": params.active,
        "params_total_nonembedding": params.total_nonembedding,
        "params_active_nonembedding": params.active_nonembedding,
        "params_embedding": params.embedding,
        "flops_per_token_fwd": flops.fwd,
        "flops_per_token_train": flops.train,
        "flops_per_token_matmul_fwd": flops.matmul_fwd,
        "components": {
            "params": {k: {"total": c.total, "active": c.active} for k, c in params.components.items()},
            "flops_fwd": dict(flops.components),
        },
    }
