"""Hugging Face ``Mamba2ForCausalLM`` <-> this toolkit's dense Mamba-2 language model: config and tensor names.

transformers' ``modeling_mamba2`` (the layout of mamba_ssm's Mamba2 module without its optional MLP part)
computes the same function as ``rom.layers.mamba2.Mamba2Mixer`` in a pre-norm residual stack (checked against
transformers' own forward in tests/test_interop_hf_mamba2.py). Reading files, the embedding and head, and the
models themselves are shared with Mamba-1 in ``rom.interop.hf_mamba``; this module holds what differs:

| transformers                                   | rom                                        | note              |
|------------------------------------------------|--------------------------------------------|-------------------|
| backbone.layers.i.mixer.in_proj.{weight,bias}  | layers.i.mixer.in_proj.*                   | [z, x, B, C, dt]  |
| backbone.layers.i.mixer.conv1d.weight (C, 1, K) | layers.i.mixer.core.conv1d.weight (C, K)  | over x, B and C   |
| backbone.layers.i.mixer.conv1d.bias            | layers.i.mixer.core.conv1d.bias            | iff use_conv_bias |
| backbone.layers.i.mixer.{A_log, D, dt_bias}    | layers.i.mixer.core.{A_log, D, dt_bias}    | one per head      |
| backbone.layers.i.mixer.norm.weight            | layers.i.mixer.core.norm.weight            | gated, per group  |
| backbone.layers.i.mixer.out_proj.{weight,bias} | layers.i.mixer.out_proj.*                  | bias iff use_bias |

Config: hidden_size -> d_model, num_hidden_layers -> n_layer, expand -> mamba2.expand (an integer), head_dim ->
mamba2.headdim (num_heads must equal expand * hidden_size / head_dim), n_groups -> mamba2.ngroups, state_size ->
mamba2.d_state, conv_kernel -> mamba2.d_conv, chunk_size -> mamba2.chunk_size, time_step_min / max / floor ->
mamba2.dt_min / dt_max / dt_init_floor (initialisation only), use_bias -> mamba2.proj_bias, use_conv_bias ->
mamba2.conv_bias, layer_norm_epsilon -> norm_eps (the block norms and the gated norm alike). Missing keys take
transformers' Mamba2Config defaults (n_groups 8, num_heads 128, tie_word_embeddings false, ...). Refused: an
activation other than silu, and a ``time_step_limit`` other than (0, inf) (this mixer does not clamp the step).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from rom.config import Mamba2Config, ModelConfig, Mlp, Pattern, SsmKind

MODEL_TYPE = "mamba2"

# transformers.Mamba2Config's defaults, for keys a config.json leaves out
HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 4096, "num_hidden_layers": 64, "expand": 2, "num_heads": 128, "head_dim": 64, "n_groups": 8,
    "state_size": 128, "conv_kernel": 4, "chunk_size": 256, "time_step_min": 1e-3, "time_step_max": 0.1,
    "time_step_floor": 1e-4, "use_bias": False, "use_conv_bias": True, "layer_norm_epsilon": 1e-5,
    "tie_word_embeddings": False, "hidden_act": "silu", "initializer_range": 0.1,
    "time_step_limit": [0.0, math.inf],
}

# mixer tensors by (transformers suffix, rom suffix); conv1d.weight is reshaped (C, 1, K) <-> (C, K) by the caller
MIXER_NAMES = [("in_proj.weight", "in_proj.weight"), ("in_proj.bias", "in_proj.bias"),
               ("conv1d.weight", "core.conv1d.weight"), ("conv1d.bias", "core.conv1d.bias"),
               ("A_log", "core.A_log"), ("D", "core.D"), ("dt_bias", "core.dt_bias"),
               ("norm.weight", "core.norm.weight"),
               ("out_proj.weight", "out_proj.weight"), ("out_proj.bias", "out_proj.bias")]


def mixer_config_from_hf(get: Callable[[str], Any], d_model: int, where: Path | str, error) -> Mamba2Config:
    """The Mamba2Config of a transformers Mamba2Config dict; ``get(key)`` reads a key with HF_DEFAULTS applied,
    ``error(message)`` builds the exception to raise."""
    expand = get("expand")
    inner = int(expand * d_model)
    if inner != expand * d_model or inner % d_model:
        raise error(f"{where}: expand={expand} with hidden_size={d_model} gives a width of {expand * d_model}; "
                    "mamba2.expand must be an integer here")
    head_dim, num_heads, groups = int(get("head_dim")), int(get("num_heads")), int(get("n_groups"))
    if inner % head_dim or inner // head_dim != num_heads:
        raise error(f"{where}: num_heads={num_heads} but expand * hidden_size / head_dim = {inner} / {head_dim}; "
                    "transformers' Mamba2 needs num_heads * head_dim = expand * hidden_size")
    if num_heads % groups:
        raise error(f"{where}: n_groups={groups} does not divide num_heads={num_heads}")
    limit = [_json_float(v) for v in get("time_step_limit")]
    if len(limit) != 2 or limit[0] != 0.0 or limit[1] != math.inf:
        raise error(f"{where}: time_step_limit={list(limit)}; this toolkit's Mamba-2 mixer does not clamp the time "
                    "step, so only (0.0, Infinity) converts")
    return Mamba2Config(
        expand=inner // d_model, d_state=int(get("state_size")), d_conv=int(get("conv_kernel")), headdim=head_dim,
        ngroups=groups, chunk_size=int(get("chunk_size")), dt_min=float(get("time_step_min")),
        dt_max=float(get("time_step_max")), dt_init_floor=float(get("time_step_floor")),
        conv_bias=bool(get("use_conv_bias")), proj_bias=bool(get("use_bias")))


def _json_float(value: Any) -> float:
    """A float from config.json: a number, a string ("Infinity"), or transformers 5's {"__float__": "Infinity"}."""
    if isinstance(value, dict) and "__float__" in value:
        value = value["__float__"]
    return float(value)


def mixer_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """The Mamba2ForCausalLM-specific keys of the config.json for a dense Mamba-2 ModelConfig (the keys every
    transformers Mamba shares are added by ``rom.interop.hf_mamba.hf_config_from_model``)."""
    m = cfg.mamba2
    return {
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": MODEL_TYPE,
        "expand": m.expand,
        "num_heads": m.expand * cfg.d_model // m.headdim,
        "head_dim": m.headdim,
        "n_groups": m.ngroups,
        "state_size": m.d_state,
        "conv_kernel": m.d_conv,
        "chunk_size": m.chunk_size,
        "time_step_rank": math.ceil(cfg.d_model / 16),  # unused by transformers' Mamba2; its own default rule
        "time_step_min": m.dt_min,
        "time_step_max": m.dt_max,
        "time_step_floor": m.dt_init_floor,
        # time_step_limit left out: transformers' default (0, inf) is this mixer's (no clamp), and JSON has no inf
        "use_bias": m.proj_bias,
        "use_conv_bias": m.conv_bias,
    }


def is_dense_mamba2(cfg: ModelConfig) -> bool:
    return cfg.pattern == Pattern.MAMBA and cfg.mlp == Mlp.NONE and cfg.ssm == SsmKind.MAMBA2


__all__ = ["HF_DEFAULTS", "MIXER_NAMES", "MODEL_TYPE", "is_dense_mamba2", "mixer_config_from_hf", "mixer_hf_config"]
