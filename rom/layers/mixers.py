"""The mixer map: one entry per ``rom.config.Mixer``, holding its constructor and its parameter and FLOP
accounting side by side. The block builder (``rom.layers.block``) and the accounting (``rom.accounting``) both
look mixers up here, so adding a mixer is one entry (see docs/extending.md); a mixer without an entry is a
``ConfigError`` naming it.

Torch-free at import: constructors import their layer module when called, so ``rom.accounting`` (which the
torch-free commands use) can read the accounting functions without loading torch.

Accounting callbacks receive ``add(component, total, active=None)`` for parameters (``active`` defaults to
``total``: shared weights) and ``add(component, flops)`` for per-token forward FLOPs; the conventions are in
``rom.accounting``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rom.config import (SSM_PROJECTIONS, ConfigError, ExpertProjection, Mixer, ModelConfig, Projection, Routing,
                        SsmKind)

if TYPE_CHECKING:
    from torch import nn

ParamAdd = Callable[..., None]  # add(component, total, active=None)
FlopAdd = Callable[[str, float], None]  # add(component, flops per token, forward)


@dataclass(frozen=True)
class MixerSpec:
    build: Callable[[ModelConfig, str], "nn.Module"]  # (model config, kernel backend) -> the mixer module
    count_params: Callable[[ModelConfig, ParamAdd], None]  # one layer's parameters
    count_flops: Callable[[ModelConfig, int, FlopAdd], None]  # one layer's forward FLOPs per token at seq_len


def _bank(total_one: int, num_experts: int, top_k: int, is_expert: bool) -> tuple[int, int]:
    """(total, active) parameters of a projection that may be an expert bank."""
    if not is_expert:
        return total_one, total_one
    return total_one * num_experts, total_one * top_k


def _ssm_flops(cfg: ModelConfig, add: FlopAdd, mult: dict[Projection, int]) -> None:
    """A Mamba-1 mixer's FLOPs, each projection counted ``mult[projection]`` times (top_k for expert banks)."""
    Dm, De, N, R, w = cfg.d_model, cfg.d_inner, cfg.mamba.d_state, cfg.dt_rank, cfg.mamba.d_conv
    add("conv_proj", 2 * Dm * De * mult[Projection.CONV])
    add("gate_proj", 2 * Dm * De * mult[Projection.GATE])
    add("conv1d", 2 * De * w * mult[Projection.CONV1D])
    add("x_proj", 2 * De * (R + 2 * N) * mult[Projection.X])
    add("dt_proj", 2 * R * De * mult[Projection.DT])
    add("scan", 8 * De * N + 3 * De)
    add("out_proj", 2 * De * Dm * mult[Projection.OUT])


# ------------------------------------------------------------------------------------------ mamba


def _build_mamba(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.mamba import MambaMixer

    return MambaMixer(cfg.d_model, cfg.mamba, cfg.dt_rank, backend)


def _mamba_params(cfg: ModelConfig, add: ParamAdd) -> None:
    Dm, De, N, R, w = cfg.d_model, cfg.d_inner, cfg.mamba.d_state, cfg.dt_rank, cfg.mamba.d_conv
    bias = cfg.mamba.proj_bias
    add("mixer.in_proj", Dm * 2 * De + (2 * De if bias else 0))
    add("mixer.conv1d", De * w + (De if cfg.mamba.conv_bias else 0))
    add("mixer.x_proj", De * (R + 2 * N))
    add("mixer.dt_proj", R * De + De)
    add("mixer.A_log_D", De * N + De)
    add("mixer.out_proj", De * Dm + (Dm if bias else 0))


def _mamba_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    _ssm_flops(cfg, add, {p: 1 for p in Projection})


# ------------------------------------------------------------------------------------------ rom


def _build_rom(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.rom import RoMMixer

    return RoMMixer(cfg.d_model, cfg.mamba, cfg.rom, cfg.dt_rank, backend)


def _n_routers(cfg: ModelConfig) -> int:
    r = cfg.rom
    return 1 if r.routing == Routing.SHARED else len(r.expert_projections)


def _rom_params(cfg: ModelConfig, add: ParamAdd) -> None:
    Dm, De, N, R, w = cfg.d_model, cfg.d_inner, cfg.mamba.d_state, cfg.dt_rank, cfg.mamba.d_conv
    r = cfg.rom
    E, k = r.num_experts, r.top_k
    add("mixer.router", _n_routers(cfg) * E * Dm)
    for proj, name in ((Projection.CONV, "mixer.conv_proj"), (Projection.GATE, "mixer.gate_proj")):
        add(name, *_bank(Dm * De, E, k, r.is_expert(proj)))
    if r.is_expert(Projection.CONV1D):
        add("mixer.conv1d", *_bank(De * w + De, E, k, True))
    else:
        add("mixer.conv1d", De * w + (De if cfg.mamba.conv_bias else 0))
    add("mixer.x_proj", *_bank(De * (R + 2 * N), E, k, r.is_expert(Projection.X)))
    add("mixer.dt_proj", *_bank(R * De + De, E, k, r.is_expert(Projection.DT)))
    add("mixer.A_log_D", De * N + De)
    add("mixer.out_proj", *_bank(De * Dm, E, k, r.is_expert(Projection.OUT)))


def _rom_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    r = cfg.rom
    add("router", 2 * cfg.d_model * r.num_experts * _n_routers(cfg))
    _ssm_flops(cfg, add, {p: (r.top_k if r.is_expert(p) else 1) for p in Projection})


# ------------------------------------------------------------------------------------------ mamba2


def ssd_scan_flops(d_inner: int, nheads: int, ngroups: int, d_state: int, chunk: int) -> float:
    """Forward FLOPs per token of the chunked SSD scan (rom.kernels.reference.ssd) in chunks of ``chunk``
    positions: C.B within the chunk (2 G N Q), its decay mask (H Q), the masked product with the inputs
    (2 D_e Q), the chunk states (2 D_e N), their recurrence across chunks (2 D_e N / Q), the entering state's
    readout (2 D_e N), and delta * x plus the D skip (3 D_e)."""
    De, H, G, N, Q = d_inner, nheads, ngroups, d_state, chunk
    return 2 * G * N * Q + H * Q + 2 * De * Q + 4 * De * N + 2 * De * N / Q + 3 * De


def _m2_shapes(cfg: ModelConfig) -> tuple[int, int, int, int, int]:
    """(d_model, d_inner, nheads, ngroups * d_state, d_conv) of a Mamba-2 mixer."""
    m = cfg.mamba2
    return cfg.d_model, cfg.mamba2_d_inner, cfg.mamba2_nheads, m.ngroups * m.d_state, m.d_conv


def _m2_parts(cfg: ModelConfig) -> list[tuple[ExpertProjection, str, int]]:
    """(projection, component name, output width) of the in_proj parts, in mamba_ssm's order z, x, B, C, dt."""
    Dm, De, H, GN, w = _m2_shapes(cfg)
    P = ExpertProjection
    return [(P.GATE, "gate_proj", De), (P.CONV, "conv_proj", De), (P.B, "b_proj", GN), (P.C, "c_proj", GN),
            (P.DT, "dt_proj", H)]


def _m2_shared_params(cfg: ModelConfig, add: ParamAdd) -> None:
    """conv1d over (x, B, C), A_log / D / dt_bias per head, the gated norm: shared by dense and RoM."""
    Dm, De, H, GN, w = _m2_shapes(cfg)
    conv_dim = De + 2 * GN
    add("mixer.conv1d", conv_dim * w + (conv_dim if cfg.mamba2.conv_bias else 0))
    add("mixer.A_log_D_dt_bias", 3 * H)
    add("mixer.norm", De)


def _m2_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd, mult: dict[ExpertProjection, int]) -> None:
    Dm, De, H, GN, w = _m2_shapes(cfg)
    m = cfg.mamba2
    for proj, name, width in _m2_parts(cfg):
        add(name, 2 * Dm * width * mult[proj])
    add("conv1d", 2 * (De + 2 * GN) * w)
    add("scan", ssd_scan_flops(De, H, m.ngroups, m.d_state, max(1, min(m.chunk_size, seq_len))))
    add("out_proj", 2 * De * Dm * mult[ExpertProjection.OUT])


def _build_mamba2(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.mamba2 import Mamba2Mixer

    return Mamba2Mixer(cfg.d_model, cfg.mamba2, cfg.norm_eps, backend)


def _mamba2_params(cfg: ModelConfig, add: ParamAdd) -> None:
    Dm, De, H, GN, w = _m2_shapes(cfg)
    bias = cfg.mamba2.proj_bias
    width = 2 * De + 2 * GN + H
    add("mixer.in_proj", Dm * width + (width if bias else 0))
    _m2_shared_params(cfg, add)
    add("mixer.out_proj", De * Dm + (Dm if bias else 0))


def _mamba2_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    _m2_flops(cfg, seq_len, add, {p: 1 for p in ExpertProjection})


def _build_rom_mamba2(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.rom_mamba2 import RoMMamba2Mixer

    return RoMMamba2Mixer(cfg.d_model, cfg.mamba2, cfg.rom, cfg.norm_eps, backend)


def _m2_routers(cfg: ModelConfig) -> int:
    r = cfg.rom
    return 1 if r.routing == Routing.SHARED else sum(r.is_expert(p) for p in SSM_PROJECTIONS[SsmKind.MAMBA2].all)


def _rom_mamba2_params(cfg: ModelConfig, add: ParamAdd) -> None:
    Dm, De, H, GN, w = _m2_shapes(cfg)
    r = cfg.rom
    E, k = r.num_experts, r.top_k
    add("mixer.router", _m2_routers(cfg) * E * Dm)
    for proj, name, width in _m2_parts(cfg):
        add(f"mixer.{name}", *_bank(Dm * width, E, k, r.is_expert(proj)))
    _m2_shared_params(cfg, add)
    add("mixer.out_proj", *_bank(De * Dm, E, k, r.is_expert(ExpertProjection.OUT)))


def _rom_mamba2_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    r = cfg.rom
    add("router", 2 * cfg.d_model * r.num_experts * _m2_routers(cfg))
    _m2_flops(cfg, seq_len, add, {p: (r.top_k if r.is_expert(p) else 1) for p in ExpertProjection})


# ------------------------------------------------------------------------------------------ attention


def _build_attention(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.attention import SlidingWindowAttention

    return SlidingWindowAttention(cfg.d_model, cfg.attention)


def _attention_params(cfg: ModelConfig, add: ParamAdd) -> None:
    Dm = cfg.d_model
    add("attention.qkv", 3 * Dm * Dm)
    add("attention.out_proj", Dm * Dm)


def mean_attended_keys(seq_len: int, window: int) -> float:
    """Mean over positions t < seq_len of min(t + 1, window): keys per query under a causal window."""
    L, w = seq_len, min(window, seq_len)
    full = L - w  # positions that see the whole window
    ramp = w * (w + 1) / 2  # positions 0..w-1 see t+1 keys
    return (ramp + full * w) / L


def _attention_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    Dm = cfg.d_model
    add("attention.proj", 2 * 4 * Dm * Dm)
    add("attention.scores", 4 * Dm * mean_attended_keys(seq_len, cfg.attention.window))


# ------------------------------------------------------------------------------------------ gated deltanet


def _gdn_shapes(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(heads, head_dim, key_dim, value_dim) of a Gated DeltaNet mixer."""
    g = cfg.gated_deltanet
    key_dim = g.num_heads * g.head_dim
    return g.num_heads, g.head_dim, key_dim, key_dim * g.expand_v


def _build_gdn(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.gated_deltanet import GatedDeltaNetMixer

    return GatedDeltaNetMixer(cfg.d_model, cfg.gated_deltanet, backend)


def _build_rom_gdn(cfg: ModelConfig, backend: str) -> "nn.Module":
    from rom.layers.gated_deltanet import RoMGatedDeltaNetMixer

    return RoMGatedDeltaNetMixer(cfg.d_model, cfg.gated_deltanet, cfg.rom, backend)


def _gdn_projection_params(cfg: ModelConfig) -> dict[ExpertProjection, tuple[str, int]]:
    """Each projection of a Gated DeltaNet mixer: (component, weights of one copy)."""
    Dm = cfg.d_model
    H, _, Dk, Dv = _gdn_shapes(cfg)
    EP = ExpertProjection
    return {EP.Q: ("mixer.q_proj", Dm * Dk), EP.K: ("mixer.k_proj", Dm * Dk), EP.V: ("mixer.v_proj", Dm * Dv),
            EP.DECAY: ("mixer.a_proj", Dm * H), EP.BETA: ("mixer.b_proj", Dm * H),
            EP.GATE: ("mixer.g_proj", Dm * Dv), EP.OUT: ("mixer.o_proj", Dv * Dm)}


def _gdn_shared_params(cfg: ModelConfig, add: ParamAdd) -> None:
    """The parts of a Gated DeltaNet mixer that are never experts: short convs, A_log / dt_bias, the norm gain."""
    g = cfg.gated_deltanet
    H, Dh, Dk, Dv = _gdn_shapes(cfg)
    add("mixer.conv1d", (2 * Dk + Dv) * g.d_conv + ((2 * Dk + Dv) if g.conv_bias else 0))
    add("mixer.A_log_dt_bias", 2 * H)
    add("mixer.o_norm", Dh * g.expand_v)


def _gdn_params(cfg: ModelConfig, add: ParamAdd) -> None:
    for name, n in _gdn_projection_params(cfg).values():
        add(name, n)
    _gdn_shared_params(cfg, add)


def _rom_gdn_params(cfg: ModelConfig, add: ParamAdd) -> None:
    r = cfg.rom
    add("mixer.router", _n_routers(cfg) * r.num_experts * cfg.d_model)
    for proj, (name, n) in _gdn_projection_params(cfg).items():
        add(name, *_bank(n, r.num_experts, r.top_k, r.is_expert(proj)))
    _gdn_shared_params(cfg, add)


def gdn_recurrence_flops(seq_len: int, heads: int, head_dim: int, head_v_dim: int, chunk: int) -> float:
    """Forward FLOPs per token of the chunked gated delta rule as rom.kernels.reference.gated_delta computes it
    (chunk C = min(chunk, seq_len), the sequence padded to whole chunks; per head, K = head_dim, V = head_v_dim):
    K K^T and Q K^T within the chunk (2 x 2CK), the unit-triangular solve for the WY factors (C(K + V)), the
    intra-chunk output (2CV), and the three products with the carried state (3 x 2KV); elementwise decays,
    gates and norms are not counted (rom.accounting's conventions)."""
    C = min(chunk, seq_len)
    padded = -(-seq_len // C) * C / seq_len
    K, V = head_dim, head_v_dim
    return heads * padded * (4 * C * K + C * (K + V) + 2 * C * V + 6 * K * V)


def _gdn_flops_with(cfg: ModelConfig, seq_len: int, add: FlopAdd, mult: dict[ExpertProjection, int]) -> None:
    g = cfg.gated_deltanet
    H, Dh, Dk, Dv = _gdn_shapes(cfg)
    names = _gdn_projection_params(cfg)
    for proj in (ExpertProjection.Q, ExpertProjection.K, ExpertProjection.V, ExpertProjection.DECAY,
                 ExpertProjection.BETA, ExpertProjection.GATE):
        name, n = names[proj]
        add(name.removeprefix("mixer."), 2 * n * mult[proj])
    add("conv1d", 2 * (2 * Dk + Dv) * g.d_conv)
    add("scan", gdn_recurrence_flops(seq_len, H, Dh, Dh * g.expand_v, g.chunk_size))
    add("o_proj", 2 * Dv * cfg.d_model * mult[ExpertProjection.OUT])


def _gdn_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    _gdn_flops_with(cfg, seq_len, add, {p: 1 for p in ExpertProjection})


def _rom_gdn_flops(cfg: ModelConfig, seq_len: int, add: FlopAdd) -> None:
    r = cfg.rom
    add("router", 2 * cfg.d_model * r.num_experts * _n_routers(cfg))
    _gdn_flops_with(cfg, seq_len, add, {p: (r.top_k if r.is_expert(p) else 1) for p in ExpertProjection})


# ------------------------------------------------------------------------------------------ the map


MIXERS: dict[Mixer, MixerSpec] = {
    Mixer.MAMBA: MixerSpec(_build_mamba, _mamba_params, _mamba_flops),
    Mixer.ROM: MixerSpec(_build_rom, _rom_params, _rom_flops),
    Mixer.ATTENTION: MixerSpec(_build_attention, _attention_params, _attention_flops),
    Mixer.MAMBA2: MixerSpec(_build_mamba2, _mamba2_params, _mamba2_flops),
    Mixer.ROM_MAMBA2: MixerSpec(_build_rom_mamba2, _rom_mamba2_params, _rom_mamba2_flops),
    Mixer.GATED_DELTANET: MixerSpec(_build_gdn, _gdn_params, _gdn_flops),
    Mixer.ROM_GATED_DELTANET: MixerSpec(_build_rom_gdn, _rom_gdn_params, _rom_gdn_flops),
}


def mixer_spec(kind: Mixer) -> MixerSpec:
    """The map's entry for ``kind``; a mixer without one is a ConfigError naming it."""
    spec = MIXERS.get(kind)
    if spec is None:
        known = ", ".join(m.value for m in MIXERS)
        raise ConfigError(f"mixer {getattr(kind, 'value', kind)!r} has no entry in rom/layers/mixers.py MIXERS "
                          f"(known: {known}); add its constructor and accounting there")
    return spec
