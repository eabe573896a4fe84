"""Hugging Face ``MambaForCausalLM`` checkpoints <-> this toolkit's dense Mamba language model (and, through
``rom.interop.hf_mamba2``'s names and config keys, ``Mamba2ForCausalLM`` <-> dense Mamba-2).

The Hugging Face format (transformers' ``modeling_mamba``; the state-spaces ``mamba-*-hf`` repositories) is a
directory with ``config.json`` (``model_type: mamba``) and the weights in ``model.safetensors`` (or shards
listed by ``model.safetensors.index.json``, or a legacy ``pytorch_model.bin``), usually with a tokenizer.

The two models compute the same function (checked against transformers' own forward in
tests/test_interop_hf.py): embedding -> n_layer x [x + Mamba(RMSNorm(x))] -> RMSNorm -> LM head. Names:

| transformers                               | rom                                   | note                    |
|--------------------------------------------|---------------------------------------|-------------------------|
| backbone.embeddings.weight (V, D)          | embedding.weight                      | older: backbone.embedding |
| backbone.layers.i.norm.weight              | layers.i.norm.weight                  |                         |
| backbone.layers.i.mixer.in_proj.{weight,bias} | layers.i.mixer.in_proj.*           | bias iff use_bias       |
| backbone.layers.i.mixer.conv1d.weight (E, 1, K) | layers.i.mixer.conv1d.weight (E, K) | depthwise             |
| backbone.layers.i.mixer.conv1d.bias        | layers.i.mixer.conv1d.bias            | iff use_conv_bias       |
| backbone.layers.i.mixer.x_proj.weight      | layers.i.mixer.x_proj.weight          | (dt_rank + 2N, E)       |
| backbone.layers.i.mixer.dt_proj.{weight,bias} | layers.i.mixer.dt_proj.*           |                         |
| backbone.layers.i.mixer.A_log, .D          | layers.i.mixer.ssm.A_log, .ssm.D      | fp32                    |
| backbone.layers.i.mixer.out_proj.{weight,bias} | layers.i.mixer.out_proj.*         | bias iff use_bias       |
| backbone.norm_f.weight                     | norm_f.weight                         |                         |
| lm_head.weight                             | lm_head.weight                        | tied unless tie_word_embeddings=false |

Config: hidden_size -> d_model, num_hidden_layers -> n_layer, state_size -> mamba.d_state, conv_kernel ->
mamba.d_conv, intermediate_size / hidden_size -> mamba.expand (an integer), time_step_rank -> mamba.dt_rank,
time_step_min / max / floor -> mamba.dt_min / dt_max / dt_init_floor (initialisation only), use_bias ->
mamba.proj_bias, use_conv_bias -> mamba.conv_bias, layer_norm_epsilon -> norm_eps, tie_word_embeddings ->
tie_embeddings. hidden_act must be silu (the only activation this mixer has).

Vocabulary: the model's vocab_size is the number of embedding rows in the checkpoint. mamba_ssm pads the
vocabulary to a multiple of ``pad_vocab_size_multiple`` (8: GPT-NeoX's 50277 tokens become 50280) and the
``-hf`` checkpoints store the padded size; transformers itself never pads. The tokenizer may have fewer tokens
than the model (the extra rows are never the target of real text; softmax runs over all rows, as in both
originals).

Residual stream: this toolkit keeps the residual sum in the parameters' dtype (fp32) under autocast, which is
what transformers does with ``residual_in_fp32: true`` (every state-spaces checkpoint). With
``residual_in_fp32: false`` the two differ only when transformers runs in reduced precision; the import notes it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from rom.config import MambaConfig, ModelConfig, Pattern, Mlp, SsmKind
from rom.errors import RomError
from rom.interop.mamba_ssm_native import hf_config_from_native, is_native_config
from rom.interop.hf_mamba2 import (HF_DEFAULTS as MAMBA2_DEFAULTS, MIXER_NAMES as MAMBA2_MIXER_NAMES,
                                   MODEL_TYPE as MAMBA2_TYPE, mixer_hf_config as mamba2_mixer_keys,
                                   is_dense_mamba2, mixer_config_from_hf as mamba2_mixer_config)

log = logging.getLogger(__name__)

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_LEGACY_WEIGHTS = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class InteropError(RomError, ValueError):
    """A model directory or checkpoint cannot be converted; the message names the file, key and value."""


# ----------------------------------------------------------------------------------------------- reading


def resolve_source(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local directory as it is; otherwise a Hugging Face repo id, downloaded (config, weights, tokenizer)
    with huggingface_hub's snapshot_download (cached; offline, only what the cache already holds)."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.exists() or text.startswith((".", "/")) or text.count("/") != 1:
        raise InteropError(f"{text}: not a model directory, and not a Hugging Face repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InteropError(f"{text}: no such directory; downloading a repo id needs huggingface_hub "
                           "(pip install huggingface_hub)") from None
    try:
        local = Path(snapshot_download(repo_id=text, revision=revision,
                                       allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
        if not (local / HF_WEIGHTS).is_file() and not (local / HF_INDEX).is_file():  # an older upload: .bin only
            local = Path(snapshot_download(repo_id=text, revision=revision,
                                           allow_patterns=["*.json", HF_LEGACY_WEIGHTS, "*.txt", "*.model"]))
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one line naming the repo
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise InteropError(f"{text}: cannot download from the Hugging Face hub ({reason}); offline, pass a local "
                           "directory holding config.json and model.safetensors") from None
    return local


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The directory's transformers config (MambaConfig or Mamba2Config keys); a mamba_ssm config translated to
    it (``rom.interop.mamba_ssm_native``)."""
    path = directory / HF_CONFIG
    if not path.is_file():
        raise InteropError(f"{directory}: no {HF_CONFIG} (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InteropError(f"{path}: not valid JSON ({e})") from None
    if is_native_config(config):  # mamba_ssm's own format: the transformers config of the same function
        return hf_config_from_native(config, path, InteropError)
    if config.get("model_type") not in ("mamba", MAMBA2_TYPE):
        raise InteropError(f"{path}: model_type={config.get('model_type')!r}; only 'mamba' (MambaForCausalLM, "
                           "Mamba-1) and 'mamba2' (Mamba2ForCausalLM) can be imported, or mamba_ssm's own config "
                           "(d_model, n_layer, ssm_cfg)")
    return config


def source_kind(directory: Path) -> str:
    """What the model directory holds: transformers-mamba, transformers-mamba2, mamba_ssm-mamba, mamba_ssm-mamba2."""
    raw = json.loads((directory / HF_CONFIG).read_text(encoding="utf-8"))
    if is_native_config(raw):
        return f"mamba_ssm-{read_hf_config(directory)['model_type']}"
    return f"transformers-{raw['model_type']}"


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint by name, on CPU: model.safetensors, its shards, or pytorch_model.bin."""
    from safetensors.torch import load_file

    single, index, legacy = directory / HF_WEIGHTS, directory / HF_INDEX, directory / HF_LEGACY_WEIGHTS
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(load_file(str(directory / shard)))
            return out
        if legacy.is_file():
            return torch.load(legacy, map_location="cpu", weights_only=True)
    except InteropError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InteropError(f"{directory}: the weights cannot be read ({type(e).__name__}: {e})") from None
    raise InteropError(f"{directory}: no {HF_WEIGHTS}, {HF_INDEX} or {HF_LEGACY_WEIGHTS}")


# ----------------------------------------------------------------------------------------------- config


def _get(config: dict, key: str, default: Any, where: Path | str) -> Any:
    value = config.get(key, default)
    if value is None:
        raise InteropError(f"{where}: {key} is null")
    return value


def model_config_from_hf(config: dict[str, Any], vocab_rows: int, where: Path | str = HF_CONFIG) -> ModelConfig:
    """This toolkit's ModelConfig for a transformers MambaConfig or Mamba2Config dict (told apart by model_type;
    defaults: transformers' own)."""
    act = _get(config, "hidden_act", "silu", where)
    if act not in ("silu", "swish"):
        raise InteropError(f"{where}: hidden_act={act!r}; this toolkit's Mamba mixer uses silu only")
    if config.get("model_type") == MAMBA2_TYPE:
        return _mamba2_model_config(config, vocab_rows, where)
    d_model = int(_get(config, "hidden_size", 768, where))
    if "intermediate_size" in config:
        inner = int(config["intermediate_size"])
    else:
        inner = int(_get(config, "expand", 2, where) * d_model)
    if inner % d_model:
        raise InteropError(f"{where}: intermediate_size={inner} is not a multiple of hidden_size={d_model} "
                           "(mamba.expand must be an integer here)")
    rank = _get(config, "time_step_rank", "auto", where)
    dt_rank = math.ceil(d_model / 16) if rank == "auto" else int(rank)
    _check_vocab_and_residual(config, vocab_rows, where)
    mamba = MambaConfig(
        expand=inner // d_model,
        d_state=int(_get(config, "state_size", 16, where)),
        d_conv=int(_get(config, "conv_kernel", 4, where)),
        dt_rank=dt_rank,
        dt_min=float(_get(config, "time_step_min", 1e-3, where)),
        dt_max=float(_get(config, "time_step_max", 0.1, where)),
        dt_init_floor=float(_get(config, "time_step_floor", 1e-4, where)),
        conv_bias=bool(_get(config, "use_conv_bias", True, where)),
        proj_bias=bool(_get(config, "use_bias", False, where)),
    )
    cfg = ModelConfig(
        d_model=d_model,
        n_layer=int(_get(config, "num_hidden_layers", 32, where)),
        vocab_size=vocab_rows,
        pattern=Pattern.MAMBA,
        mlp=Mlp.NONE,
        norm_eps=float(_get(config, "layer_norm_epsilon", 1e-5, where)),
        tie_embeddings=bool(_get(config, "tie_word_embeddings", True, where)),
        init_std=float(config.get("initializer_range") or 0.02),
        mamba=mamba,
    )
    cfg.validate()
    return cfg


def _check_vocab_and_residual(config: dict[str, Any], vocab_rows: int, where: Path | str) -> None:
    vocab = int(_get(config, "vocab_size", vocab_rows, where))
    if vocab > vocab_rows:
        raise InteropError(f"{where}: vocab_size={vocab} but the embedding has only {vocab_rows} rows")
    if vocab != vocab_rows:
        log.info("%s: vocab_size=%d, embedding rows %d (padded): the model keeps all %d rows", where, vocab,
                 vocab_rows, vocab_rows)
    if not _get(config, "residual_in_fp32", True, where):
        log.warning("%s: residual_in_fp32=false: this toolkit keeps the residual stream in fp32, so outputs differ "
                    "from transformers' run in bf16/fp16 (identical in fp32)", where)


def _mamba2_model_config(config: dict[str, Any], vocab_rows: int, where: Path | str) -> ModelConfig:
    def get(key: str) -> Any:
        return _get(config, key, MAMBA2_DEFAULTS[key], where)

    d_model = int(get("hidden_size"))
    _check_vocab_and_residual(config, vocab_rows, where)
    cfg = ModelConfig(
        d_model=d_model,
        n_layer=int(get("num_hidden_layers")),
        vocab_size=vocab_rows,
        pattern=Pattern.MAMBA,
        ssm=SsmKind.MAMBA2,
        mlp=Mlp.NONE,
        norm_eps=float(get("layer_norm_epsilon")),
        tie_embeddings=bool(get("tie_word_embeddings")),
        init_std=float(get("initializer_range")),
        mamba2=mamba2_mixer_config(get, d_model, where, InteropError),
    )
    cfg.validate()
    return cfg


def hf_config_from_model(cfg: ModelConfig, eos_id: int | None = None) -> dict[str, Any]:
    """The config.json of a MambaForCausalLM (Mamba2ForCausalLM) with the same function as a dense Mamba
    (Mamba-2) ModelConfig."""
    if is_dense_mamba2(cfg):
        return {**mamba2_mixer_keys(cfg), **_shared_hf_keys(cfg, eos_id)}
    if cfg.pattern != Pattern.MAMBA or cfg.mlp != Mlp.NONE or cfg.ssm != SsmKind.MAMBA:
        raise InteropError(f"model family {cfg.family!r}: only dense Mamba and Mamba-2 (pattern=mamba, ssm=mamba or "
                           "mamba2, mlp=none) have a transformers MambaForCausalLM / Mamba2ForCausalLM equivalent; "
                           "save RoM, Gated DeltaNet and hybrid models with rom.interop.save_pretrained")
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "intermediate_size": cfg.d_inner,
        "expand": cfg.mamba.expand,
        "state_size": cfg.mamba.d_state,
        "conv_kernel": cfg.mamba.d_conv,
        "time_step_rank": cfg.dt_rank,
        "time_step_min": cfg.mamba.dt_min,
        "time_step_max": cfg.mamba.dt_max,
        "time_step_floor": cfg.mamba.dt_init_floor,
        "time_step_scale": 1.0,
        "time_step_init_scheme": "random",
        "use_bias": cfg.mamba.proj_bias,
        "use_conv_bias": cfg.mamba.conv_bias,
        **_shared_hf_keys(cfg, eos_id),
    }


def _shared_hf_keys(cfg: ModelConfig, eos_id: int | None) -> dict[str, Any]:
    """The config.json keys transformers' Mamba and Mamba-2 configs have alike (one token id for pad/bos/eos)."""
    token = 0 if eos_id is None else int(eos_id)
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "layer_norm_epsilon": cfg.norm_eps,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "rescale_prenorm_residual": False,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": token,
        "bos_token_id": token,
        "eos_token_id": token,
        "use_cache": True,
        "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------------------------- weights


_MAMBA1_MIXER_NAMES = [(n, n) for n in ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias",
                                          "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight",
                                          "out_proj.bias")] + [("A_log", "ssm.A_log"), ("D", "ssm.D")]


def _mixer_names(i: int, cfg: ModelConfig) -> list[tuple[str, str]]:
    """(transformers name, rom name) of layer i's norm and mixer tensors (conv weight reshaped separately)."""
    hf, rom = f"backbone.layers.{i}.", f"layers.{i}."
    names = MAMBA2_MIXER_NAMES if cfg.ssm == SsmKind.MAMBA2 else _MAMBA1_MIXER_NAMES
    return [(hf + "norm.weight", rom + "norm.weight")] + [(hf + "mixer." + a, rom + "mixer." + b) for a, b in names]


def _biases(cfg: ModelConfig) -> tuple[bool, bool]:
    """(projection bias, conv bias) of the model's mixer."""
    mixer = cfg.mamba2 if cfg.ssm == SsmKind.MAMBA2 else cfg.mamba
    return mixer.proj_bias, mixer.conv_bias


def state_dict_from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig,
                       where: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The rom state dict (every parameter of build_model(cfg), fp32) from transformers' tensor names."""
    weights = dict(weights)
    if "backbone.embedding.weight" in weights and "backbone.embeddings.weight" not in weights:
        weights["backbone.embeddings.weight"] = weights.pop("backbone.embedding.weight")  # older conversions
    pairs = [("backbone.embeddings.weight", "embedding.weight"), ("backbone.norm_f.weight", "norm_f.weight")]
    for i in range(cfg.n_layer):
        pairs += _mixer_names(i, cfg)
    proj_bias, conv_bias = _biases(cfg)
    optional = {n for n in (hf for hf, _ in pairs) if n.endswith(("in_proj.bias", "out_proj.bias", "conv1d.bias"))}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for hf, rom in pairs:
        if hf not in weights:
            wanted = (hf.endswith(("in_proj.bias", "out_proj.bias")) and proj_bias) or (
                hf.endswith("conv1d.bias") and conv_bias)
            if hf in optional and not wanted:
                continue
            raise InteropError(f"{where}: tensor {hf} is missing")
        t = weights[hf]
        if hf.endswith("conv1d.weight"):
            if t.ndim != 3 or t.shape[1] != 1:
                raise InteropError(f"{where}: {hf} has shape {tuple(t.shape)}, expected (channels, 1, d_conv)")
            t = t[:, 0, :]
        out[rom] = t.float().contiguous()
        used.add(hf)
    if cfg.tie_embeddings:
        head = weights.get("lm_head.weight")
        if head is not None and not torch.equal(head.float(), out["embedding.weight"]):
            raise InteropError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
        out["lm_head.weight"] = out["embedding.weight"]
    else:
        if "lm_head.weight" not in weights:
            raise InteropError(f"{where}: tie_word_embeddings is false but lm_head.weight is missing")
        out["lm_head.weight"] = weights["lm_head.weight"].float().contiguous()
    used.add("lm_head.weight")
    extra = sorted(k for k in weights if k not in used)
    if extra:
        raise InteropError(f"{where}: tensors this model has no place for: {extra[:8]}"
                           f"{' ...' if len(extra) > 8 else ''} (is num_hidden_layers right?)")
    return out


def state_dict_to_hf(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers' tensor names for a dense Mamba state dict (the tied head left out, as transformers saves)."""
    out: dict[str, torch.Tensor] = {
        "backbone.embeddings.weight": state_dict["embedding.weight"],
        "backbone.norm_f.weight": state_dict["norm_f.weight"],
    }
    for i in range(cfg.n_layer):
        for hf, rom in _mixer_names(i, cfg):
            if rom not in state_dict:
                continue  # biases the config does not have
            t = state_dict[rom]
            out[hf] = t[:, None, :] if hf.endswith("conv1d.weight") else t
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state_dict["lm_head.weight"]
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------- models


def load_hf_mamba(path_or_repo_id: str | Path, device: str | torch.device = "cpu", revision: str | None = None,
                  backend: str = "auto"):
    """A transformers MambaForCausalLM or Mamba2ForCausalLM checkpoint (directory or hub repo id) as a rom
    ``LanguageModel`` in eval mode (fp32 weights, ``model.cfg`` its ModelConfig)."""
    model, _ = load_hf_mamba_with_source(path_or_repo_id, device=device, revision=revision, backend=backend)
    return model


def load_hf_mamba_with_source(path_or_repo_id: str | Path, device: str | torch.device = "cpu",
                              revision: str | None = None, backend: str = "auto"):
    """(model, local directory it was read from): see ``load_hf_mamba``."""
    from rom.models.lm import build_model

    directory = resolve_source(path_or_repo_id, revision)
    config = read_hf_config(directory)
    weights = read_hf_weights(directory)
    emb = weights.get("backbone.embeddings.weight", weights.get("backbone.embedding.weight"))
    if emb is None or emb.ndim != 2:
        raise InteropError(f"{directory}: no backbone.embeddings.weight (vocab, hidden) tensor")
    cfg = model_config_from_hf(config, int(emb.shape[0]), directory / HF_CONFIG)
    if int(emb.shape[1]) != cfg.d_model:
        raise InteropError(f"{directory}: embedding width {emb.shape[1]} != hidden_size {cfg.d_model}")
    state = state_dict_from_hf(weights, cfg, directory)
    model = build_model(cfg, backend=backend)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InteropError(f"{directory}: weights do not fit the config: {e}") from None
    return model.to(device).eval(), directory
