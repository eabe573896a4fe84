"""mamba_ssm's own checkpoint format (``MambaLMHeadModel.save_pretrained``: the state-spaces ``mamba-130m`` ..
``mamba2-2.7b`` repositories, the published Mamba and Mamba-2 weights) read as the transformers format it
mirrors.

Such a directory holds ``config.json`` with mamba_ssm's MambaConfig keys (``d_model``, ``n_layer``,
``vocab_size``, ``ssm_cfg`` with ``layer: Mamba1 | Mamba2`` and the mixer's keyword arguments, ``rms_norm``,
``residual_in_fp32``, ``pad_vocab_size_multiple``, ``tie_embeddings``; no ``model_type``) and
``pytorch_model.bin`` whose tensor names are transformers' but for ``backbone.embedding`` (transformers:
``backbone.embeddings``, a rename ``rom.interop.hf_mamba`` already accepts). So the import translates the config
into the transformers one of the same function (what transformers' own conversion scripts do) and goes on as for
a ``MambaForCausalLM`` / ``Mamba2ForCausalLM``.

Refused, naming the key: attention layers (``attn_layer_idx``), the gated MLP (``d_intermediate`` > 0),
LayerNorm blocks (``rms_norm: false``), and the Mamba2 options this mixer does not have (``rmsnorm: false``,
``norm_before_gate: true``, ``D_has_hdim: true``, ``d_ssm`` narrower than the mixer, a ``dt_limit``).
Initialisation-only options (``dt_init``, ``dt_scale``, ``A_init_range``, ``conv_init``) and speed options
(``use_fast_path``, ``use_mem_eff_path``) are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

# mamba_ssm's defaults (MambaConfig; the Mamba and Mamba2 modules' keyword arguments)
NATIVE_DEFAULTS: dict[str, Any] = {"d_intermediate": 0, "rms_norm": True, "residual_in_fp32": True,
                                   "tie_embeddings": True, "attn_layer_idx": []}
MAMBA1_DEFAULTS: dict[str, Any] = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 1e-3,
                                   "dt_max": 0.1, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False}
MAMBA2_DEFAULTS: dict[str, Any] = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1,
                                   "chunk_size": 256, "dt_min": 1e-3, "dt_max": 0.1, "dt_init_floor": 1e-4,
                                   "conv_bias": True, "bias": False, "rmsnorm": True, "norm_before_gate": False,
                                   "D_has_hdim": False, "d_ssm": None, "dt_limit": [0.0, math.inf]}
NORM_EPS = 1e-5  # mamba_ssm's norm_epsilon (MixerModel and Mamba2's gated norm); config.json does not carry it


def is_native_config(config: dict[str, Any]) -> bool:
    """A mamba_ssm MambaConfig (no model_type, mamba_ssm's key names)."""
    return "model_type" not in config and "d_model" in config and "n_layer" in config


def hf_config_from_native(config: dict[str, Any], where: Path | str,
                          error: Callable[[str], Exception]) -> dict[str, Any]:
    """The transformers config (model_type mamba or mamba2) of the same function as a mamba_ssm config;
    ``error(message)`` builds the exception to raise for what has no equivalent."""
    top = {**NATIVE_DEFAULTS, **config}
    if top["attn_layer_idx"]:
        raise error(f"{where}: attn_layer_idx={top['attn_layer_idx']}: attention layers are not imported (a "
                    "mamba_ssm hybrid has no transformers Mamba equivalent)")
    if int(top["d_intermediate"]):
        raise error(f"{where}: d_intermediate={top['d_intermediate']}: the gated MLP after each mixer is not "
                    "imported (only d_intermediate: 0)")
    if not top["rms_norm"]:
        raise error(f"{where}: rms_norm=false: LayerNorm blocks are not imported (this toolkit's blocks use "
                    "RMSNorm)")
    ssm = dict(top.get("ssm_cfg") or {})
    layer = ssm.pop("layer", "Mamba1")
    shared = {"hidden_size": int(top["d_model"]), "num_hidden_layers": int(top["n_layer"]),
              "vocab_size": int(top["vocab_size"]), "layer_norm_epsilon": NORM_EPS, "hidden_act": "silu",
              "residual_in_fp32": bool(top["residual_in_fp32"]), "tie_word_embeddings": bool(top["tie_embeddings"])}
    if layer == "Mamba1":
        m = {**MAMBA1_DEFAULTS, **ssm}
        return {"model_type": "mamba", **shared, "expand": m["expand"],
                "intermediate_size": int(m["expand"] * shared["hidden_size"]), "state_size": m["d_state"],
                "conv_kernel": m["d_conv"], "time_step_rank": m["dt_rank"], "time_step_min": m["dt_min"],
                "time_step_max": m["dt_max"], "time_step_floor": m["dt_init_floor"], "use_bias": m["bias"],
                "use_conv_bias": m["conv_bias"]}
    if layer != "Mamba2":
        raise error(f"{where}: ssm_cfg.layer={layer!r}; mamba_ssm knows Mamba1 and Mamba2")
    m = {**MAMBA2_DEFAULTS, **ssm}
    inner = int(m["expand"] * shared["hidden_size"])
    for key, wanted in (("rmsnorm", True), ("norm_before_gate", False), ("D_has_hdim", False)):
        if bool(m[key]) != wanted:
            raise error(f"{where}: ssm_cfg.{key}={m[key]}; this toolkit's Mamba-2 mixer has {key}={wanted} only")
    limit = [float(v) for v in m["dt_limit"]]
    if limit != [0.0, math.inf]:
        raise error(f"{where}: ssm_cfg.dt_limit={m['dt_limit']}; this toolkit's Mamba-2 mixer does not clamp the "
                    "time step, so only (0.0, inf) converts")
    if m["d_ssm"] not in (None, inner):
        raise error(f"{where}: ssm_cfg.d_ssm={m['d_ssm']}: an SSM narrower than expand * d_model = {inner} (the "
                    "rest a gated MLP) is not imported")
    return {"model_type": "mamba2", **shared, "expand": m["expand"], "head_dim": m["headdim"],
            "num_heads": inner // int(m["headdim"]), "n_groups": m["ngroups"], "state_size": m["d_state"],
            "conv_kernel": m["d_conv"], "chunk_size": m["chunk_size"], "time_step_min": m["dt_min"],
            "time_step_max": m["dt_max"], "time_step_floor": m["dt_init_floor"],
            "use_bias": m["bias"], "use_conv_bias": m["conv_bias"]}


__all__ = ["hf_config_from_native", "is_native_config"]
