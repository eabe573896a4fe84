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

from rom.config import ConfigError, Mixer, ModelConfig, Projection, Routing

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


# ------------------------------------------------------------------------------------------ the map


MIXERS: dict[Mixer, MixerSpec] = {
    Mixer.MAMBA: MixerSpec(_build_mamba, _mamba_params, _mamba_flops),
    Mixer.ROM: MixerSpec(_build_rom, _rom_params, _rom_flops),
    Mixer.ATTENTION: MixerSpec(_build_attention, _attention_params, _attention_flops),
}


def mixer_spec(kind: Mixer) -> MixerSpec:
    """The map's entry for ``kind``; a mixer without one is a ConfigError naming it."""
    spec = MIXERS.get(kind)
    if spec is None:
        known = ", ".join(m.value for m in MIXERS)
        raise ConfigError(f"mixer {getattr(kind, 'value', kind)!r} has no entry in rom/layers/mixers.py MIXERS "
                          f"(known: {known}); add its constructor and accounting there")
    return spec
