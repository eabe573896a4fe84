"""mamba_ssm's own checkpoint format (the state-spaces mamba-* and mamba2-* repositories: mamba_ssm's config.json
and pytorch_model.bin) imported as the transformers model of the same function. The directories are written
here from small random transformers models, renamed as mamba_ssm names them; transformers' forward is the
reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rom.cli import main as rom_main  # noqa: E402
from rom.config import SsmKind  # noqa: E402
from rom.interop import InteropError, load_hf_mamba, load_pretrained  # noqa: E402
from test_interop_hf import ATOL, hf_logits, rom_logits  # noqa: E402


def native_dir(tmp_path: Path, hf_model: torch.nn.Module, config: dict, padded_rows: int | None = None) -> Path:
    """A mamba_ssm checkpoint directory holding hf_model's weights under mamba_ssm's names (embedding padded to
    padded_rows with zero rows, as mamba_ssm's pad_vocab_size_multiple does)."""
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf_model.state_dict().items()}
    if padded_rows is not None:
        for name in ("backbone.embedding.weight", "lm_head.weight"):
            w = state[name]
            state[name] = torch.cat([w, torch.zeros(padded_rows - w.shape[0], w.shape[1])])
    if config.get("tie_embeddings", True):
        state["lm_head.weight"] = state["backbone.embedding.weight"]
    out = tmp_path / "native"
    out.mkdir()
    torch.save(state, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(config))
    return out


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # make D, the norms and the conv bias matter (they are 1 / 0 at init)
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "norm.weight", "norm_f.weight", "conv1d.bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_native_mamba2_gives_transformers_logits(tmp_path, ngroups):
    torch.manual_seed(0)
    hf = _perturbed(transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, expand=2, head_dim=16, num_heads=4, n_groups=ngroups,
        state_size=8, chunk_size=8, tie_word_embeddings=True)))
    src = native_dir(tmp_path, hf, {"d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": 50,
                                    "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "headdim": 16, "ngroups": ngroups,
                                                "chunk_size": 8},
                                    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
                                    "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True},
                     padded_rows=64)
    model = load_hf_mamba(src)
    assert model.cfg.ssm == SsmKind.MAMBA2 and model.cfg.vocab_size == 64 and model.cfg.mamba2.ngroups == ngroups
    ids = torch.randint(0, 50, (2, 21), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rom_logits(model, ids)[..., :50], hf_logits(hf, ids), atol=ATOL, rtol=1e-4)


def test_native_mamba1_gives_transformers_logits(tmp_path):
    torch.manual_seed(0)
    hf = _perturbed(transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=48, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, tie_word_embeddings=True)))
    src = native_dir(tmp_path, hf, {"d_model": 32, "n_layer": 2, "vocab_size": 48, "ssm_cfg": {"d_state": 8},
                                    "rms_norm": True, "residual_in_fp32": True, "pad_vocab_size_multiple": 8})
    model = load_hf_mamba(src)
    assert model.cfg.ssm == SsmKind.MAMBA and model.cfg.mamba.d_state == 8 and model.cfg.dt_rank == 2
    ids = torch.randint(0, 48, (2, 17), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rom_logits(model, ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)


def test_import_command_records_the_mamba_ssm_source(tmp_path):
    torch.manual_seed(0)
    hf = _perturbed(transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, expand=2, head_dim=8, num_heads=4, n_groups=1,
        state_size=4, chunk_size=16, tie_word_embeddings=True)))
    src = native_dir(tmp_path, hf, {"d_model": 16, "n_layer": 1, "vocab_size": 40,
                                    "ssm_cfg": {"layer": "Mamba2", "d_state": 4, "headdim": 8, "chunk_size": 16}})
    out = tmp_path / "imported"
    assert rom_main(["import-hf", str(src), "--out", str(out), "--seq-len", "64"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["kind"] == "mamba_ssm-mamba2" and meta["source"]["hf_config"]["d_model"] == 16
    ids = torch.randint(0, 40, (1, 9))
    torch.testing.assert_close(rom_logits(load_pretrained(out), ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("change, match", [
    ({"attn_layer_idx": [1]}, "attn_layer_idx=\\[1\\]"),
    ({"d_intermediate": 64}, "d_intermediate=64"),
    ({"rms_norm": False}, "rms_norm=false"),
    ({"ssm_cfg": {"layer": "Mamba3"}}, "ssm_cfg.layer='Mamba3'"),
    ({"ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "ssm_cfg.norm_before_gate=True"),
    ({"ssm_cfg": {"layer": "Mamba2", "D_has_hdim": True}}, "ssm_cfg.D_has_hdim=True"),
    ({"ssm_cfg": {"layer": "Mamba2", "d_ssm": 32}}, "ssm_cfg.d_ssm=32"),
    ({"ssm_cfg": {"layer": "Mamba2", "dt_limit": [0.001, 0.1]}}, "ssm_cfg.dt_limit=\\[0.001, 0.1\\]"),
])
def test_native_configs_without_an_equivalent_are_refused_by_key(tmp_path, change, match):
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 32, "n_layer": 1, "vocab_size": 40, **change}))
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(InteropError, match=match):
        load_hf_mamba(tmp_path)
