"""Mamba-2 travels too: transformers' Mamba2ForCausalLM in (rom.interop.load_hf_mamba, rom import-hf) and a dense
Mamba-2 run out (rom export-hf). CPU, tiny random models; transformers' own forward (its pure-torch chunked path)
is the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from rom.cli import main as rom_main  # noqa: E402
from rom.config import ModelConfig, SsmKind, run_config_from_dict  # noqa: E402
from rom.interop import InteropError, hf_config_from_model, load_hf_mamba, model_config_from_hf  # noqa: E402
from test_interop_hf import ATOL, _trained, exported_to_transformers, hf_logits, rom_logits  # noqa: E402

HF_MAMBA2_SHAPES = {
    # two groups of heads sharing B and C; 23 tokens over chunks of 8: transformers pads the last chunk
    "groups-chunked": dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, expand=2, head_dim=16,
                           num_heads=4, n_groups=2, state_size=8, chunk_size=8),
    "tied-bias-noconvbias": dict(vocab_size=64, hidden_size=24, num_hidden_layers=1, expand=3, head_dim=8,
                                 num_heads=9, n_groups=3, state_size=4, conv_kernel=3, chunk_size=16, use_bias=True,
                                 use_conv_bias=False, layer_norm_epsilon=1e-6, tie_word_embeddings=True),
}


def hf_mamba2(tmp_path: Path, **kw) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kw)).eval()
    with torch.no_grad():  # make D, the norms and the biases matter (they are 1 / 0 at init)
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "norm.weight", "norm_f.weight", "bias")) and "dt_bias" not in name:
                p.add_(0.3 * torch.randn_like(p))
    out = tmp_path / "hf2"
    model.save_pretrained(out)
    return out, model


@pytest.mark.parametrize("shape", sorted(HF_MAMBA2_SHAPES))
def test_imported_mamba2_gives_transformers_logits(tmp_path, shape):
    kw = HF_MAMBA2_SHAPES[shape]
    src, hf = hf_mamba2(tmp_path, **kw)
    model = load_hf_mamba(src)
    m = model.cfg
    assert m.ssm == SsmKind.MAMBA2 and m.n_layer == kw["num_hidden_layers"] and m.vocab_size == kw["vocab_size"]
    assert (m.mamba2.headdim, m.mamba2.ngroups, m.mamba2.d_state) == (kw["head_dim"], kw["n_groups"],
                                                                       kw["state_size"])
    assert m.tie_embeddings == kw.get("tie_word_embeddings", False)  # transformers' Mamba2 default: untied
    ids = torch.randint(0, kw["vocab_size"], (2, 23), generator=torch.Generator().manual_seed(1))
    a, b = hf_logits(hf, ids), rom_logits(model, ids)
    assert a.shape == b.shape
    torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)
    assert not torch.allclose(b[:, :-1], b[:, 1:])


def test_mamba2_config_errors_name_the_key(tmp_path):
    src, _ = hf_mamba2(tmp_path, **HF_MAMBA2_SHAPES["groups-chunked"])
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["model_type"] == "mamba2"
    with pytest.raises(InteropError, match="num_heads=5"):
        model_config_from_hf({**cfg, "num_heads": 5}, 101)
    with pytest.raises(InteropError, match=r"time_step_limit=\[0.001, 0.1\]"):
        model_config_from_hf({**cfg, "time_step_limit": [0.001, 0.1]}, 101)
    with pytest.raises(InteropError, match="n_groups=3"):
        model_config_from_hf({**cfg, "n_groups": 3}, 101)
    with pytest.raises(InteropError, match="hidden_act='relu'"):
        model_config_from_hf({**cfg, "hidden_act": "relu"}, 101)
    (src / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(InteropError, match="backbone.layers.2.norm.weight is missing"):
        load_hf_mamba(src)


def test_rom_mamba2_has_no_transformers_equivalent():
    rom2 = run_config_from_dict({"model": {"pattern": "rom", "ssm": "mamba2", "d_model": 32, "n_layer": 2,
                                           "mamba2": {"headdim": 16, "d_state": 8},
                                           "rom": {"num_experts": 4, "top_k": 1}}})
    with pytest.raises(InteropError, match="only dense Mamba and Mamba-2"):
        hf_config_from_model(rom2.model)
    assert hf_config_from_model(ModelConfig(ssm=SsmKind.MAMBA2))["architectures"] == ["Mamba2ForCausalLM"]


def test_dense_mamba2_run_exports_to_transformers_with_the_same_logits(tmp_path, capsys):
    run = _trained(tmp_path, {"pattern": "mamba", "ssm": "mamba2", "d_model": 32, "n_layer": 2,
                              "mamba2": {"headdim": 16, "d_state": 8, "ngroups": 2, "chunk_size": 16}})
    out = tmp_path / "hf"
    hf, ours = exported_to_transformers(run, out, capsys, "Mamba2ForCausalLM")
    ids = torch.randint(0, 384, (2, 37), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(hf_logits(hf, ids), rom_logits(ours, ids), atol=ATOL, rtol=1e-4)
    # and back in: the round trip through transformers' format changes nothing
    back = load_hf_mamba(out)
    assert back.cfg.mamba2 == ours.cfg.mamba2
    torch.testing.assert_close(rom_logits(back, ids), rom_logits(ours, ids), atol=0, rtol=0)


def test_import_command_takes_a_mamba2(tmp_path, capsys):
    src, hf = hf_mamba2(tmp_path, **HF_MAMBA2_SHAPES["groups-chunked"])
    out = tmp_path / "imported"
    assert rom_main(["import-hf", str(src), "--out", str(out), "--seq-len", "64"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["kind"] == "transformers-mamba2" and meta["family"] == "mamba2"
    from rom.interop import load_pretrained

    ids = torch.randint(0, 101, (1, 19))
    torch.testing.assert_close(rom_logits(load_pretrained(out), ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)
