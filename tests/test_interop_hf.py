"""Models that travel (issue 26): Hugging Face MambaForCausalLM in (rom.interop.load_hf_mamba, rom import-hf) and
out (rom export-hf), this toolkit's model directories (load_pretrained), the safetensors model file and the
legacy model.pt, and `rom lm-eval`. CPU, tiny random models; transformers' own forward is the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from rom.cli import main as rom_main  # noqa: E402
from rom.config import run_config_from_dict, to_dict  # noqa: E402
from rom.interop import (InteropError, hf_config_from_model, load_hf_mamba, load_pretrained,  # noqa: E402
                         model_config_from_hf)
from rom.models.files import (LEGACY_MODEL_FILE, MODEL_FILE, CheckpointError, load_state_dict,  # noqa: E402
                              load_trained_model, save_model)
from rom.models.lm import build_model  # noqa: E402
from rom.train.loop import train  # noqa: E402
from test_train_support import make_data, tiny_config  # noqa: E402

ATOL = 2e-5  # fp32: the chunked scan and transformers' sequential scan sum in different orders

HF_SHAPES = {
    # vocab 101 is no multiple of pad_vocab_size_multiple: the model keeps exactly the checkpoint's rows
    "padded-vocab": dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, state_size=8,
                         pad_vocab_size_multiple=8),
    "untied-bias-rank": dict(vocab_size=64, hidden_size=48, num_hidden_layers=1, state_size=4, expand=3,
                             conv_kernel=3, time_step_rank=5, use_bias=True, use_conv_bias=False,
                             layer_norm_epsilon=1e-6, tie_word_embeddings=False),
    "deeper": dict(vocab_size=96, hidden_size=16, num_hidden_layers=3, state_size=16, expand=2, conv_kernel=4),
}


def hf_model(tmp_path: Path, **kw) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(**kw)).eval()
    with torch.no_grad():  # make D, the conv bias and the norms matter (they are 1 / 0 at init)
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "norm.weight", "norm_f.weight", "conv1d.bias")):
                p.add_(0.3 * torch.randn_like(p))
    out = tmp_path / "hf"
    model.save_pretrained(out)
    return out, model


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def rom_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("shape", sorted(HF_SHAPES))
def test_imported_model_gives_transformers_logits(tmp_path, shape):
    kw = HF_SHAPES[shape]
    src, hf = hf_model(tmp_path, **kw)
    model = load_hf_mamba(str(src))
    assert model.cfg.vocab_size == kw["vocab_size"] and model.cfg.n_layer == kw["num_hidden_layers"]
    assert model.cfg.tie_embeddings == kw.get("tie_word_embeddings", True)
    ids = torch.randint(0, kw["vocab_size"], (2, 19), generator=torch.Generator().manual_seed(1))
    a, b = hf_logits(hf, ids), rom_logits(model, ids)
    assert a.shape == b.shape
    torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)
    assert not torch.allclose(b[:, :-1], b[:, 1:])  # not a degenerate constant output


def test_embedding_rows_beyond_config_vocab_are_kept(tmp_path):
    """A padded checkpoint (embedding rows > config vocab_size): the model keeps every row."""
    src, hf = hf_model(tmp_path, vocab_size=104, hidden_size=16, num_hidden_layers=1, state_size=4)
    config = json.loads((src / "config.json").read_text())
    config["vocab_size"] = 101  # what the tokenizer has; the weights stay padded to 104
    (src / "config.json").write_text(json.dumps(config))
    model = load_hf_mamba(src)
    assert model.cfg.vocab_size == 104
    ids = torch.randint(0, 101, (1, 7))
    torch.testing.assert_close(rom_logits(model, ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)


def test_import_errors_name_the_problem(tmp_path):
    src, _ = hf_model(tmp_path, vocab_size=32, hidden_size=16, num_hidden_layers=1, state_size=4)
    with pytest.raises(InteropError, match="not a model directory"):
        load_hf_mamba(tmp_path / "missing" / "dir")
    cfg = json.loads((src / "config.json").read_text())
    with pytest.raises(InteropError, match="hidden_act='gelu'"):
        model_config_from_hf({**cfg, "hidden_act": "gelu"}, 32)
    with pytest.raises(InteropError, match="only 'mamba'"):
        (src / "config.json").write_text(json.dumps({**cfg, "model_type": "jamba"}))
        load_hf_mamba(src)
    (src / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    with pytest.raises(InteropError, match="backbone.layers.1.norm.weight is missing"):
        load_hf_mamba(src)
    hybrid = run_config_from_dict({"model": {"pattern": "hybrid", "mlp": "dense", "d_model": 32, "n_layer": 2,
                                             "attention": {"n_heads": 2}}})
    with pytest.raises(InteropError, match="only dense Mamba"):
        hf_config_from_model(hybrid.model)


def _tokenizer(path: Path, vocab: int) -> Path:
    from rom.data.tokenizer import train_bpe

    text = " ".join(f"the state of the union is strong {i} and the people {i % 7}" for i in range(400))
    train_bpe([text], vocab_size=vocab, out=path, progress=False)
    return path


def test_import_command_writes_a_model_directory_eval_and_downstream_accept(tmp_path, capsys):
    src, hf = hf_model(tmp_path, vocab_size=384, hidden_size=32, num_hidden_layers=2, state_size=8)
    _tokenizer(src / "tokenizer.json", 384)
    out = tmp_path / "imported"
    assert rom_main(["import-hf", str(src), "--out", str(out), "--seq-len", "64"]) == 0
    assert "with its tokenizer" in capsys.readouterr().err
    assert (out / MODEL_FILE).is_file() and (out / "tokenizer.json").is_file()
    meta = json.loads((out / "config.json").read_text())
    assert meta["rom_format"] == 1 and meta["source"]["kind"] == "transformers-mamba"
    from rom.data.tokenizer import load_tokenizer
    from rom.models.files import read_model_metadata

    assert read_model_metadata(out)["tokenizer_sha256"] == load_tokenizer(src / "tokenizer.json").file_hash
    model, cfg = load_trained_model(out)  # what rom eval / rom downstream call
    assert cfg.train.seq_len == 64 and cfg.study == "imported"
    ids = torch.randint(0, 384, (1, 11))
    torch.testing.assert_close(rom_logits(model, ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(rom_logits(load_pretrained(out), ids), rom_logits(model, ids), atol=0, rtol=0)
    torch.testing.assert_close(rom_logits(load_pretrained(src), ids), rom_logits(model, ids), atol=0, rtol=0)

    from rom.eval.scorer import load_scorer

    scorer, _ = load_scorer(out)  # the downstream scorer finds the imported tokenizer
    (ll, _greedy), = scorer.loglikelihood([("the state of the", " union")])
    assert ll < 0

    data = make_data(tmp_path / "data", n_train=2000, n_val=600, vocab=384)
    meta = json.loads((data / "val.json").read_text())  # shards of the imported model's tokenizer
    meta["tokenizer_sha256"] = load_tokenizer(src / "tokenizer.json").file_hash
    (data / "val.json").write_text(json.dumps(meta))
    assert rom_main(["eval", "--run", str(out), "--data", str(data), "--out", str(tmp_path / "eval.json"),
                     "--device", "cpu", "--set", "eval.max_tokens=256"]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["eval"]["results"]


def test_import_of_a_missing_source_is_one_line(tmp_path, capsys):
    assert rom_main(["import-hf", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rom import-hf: error:") and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- export


def _trained(tmp_path: Path, model: dict, vocab: int = 384) -> Path:
    """A run trained for 4 steps (the tiny study's dense shapes: d_model 32, 2 layers, d_state 8)."""
    data = make_data(tmp_path / "data", n_train=4000, n_val=600, vocab=vocab)
    cfg = tiny_config(tokens=32 * 4 * 4, eval_every=0, checkpoint_every=100)
    cfg["model"] = {"vocab_size": vocab, **model}
    run = tmp_path / "run"
    train(run_config_from_dict(cfg), data, run)
    _tokenizer(run / "tokenizer.json", vocab)
    return run


def exported_to_transformers(run: Path, out: Path, capsys, architecture: str):
    """`rom export-hf RUN --out OUT`, then (transformers' model read back by AutoModelForCausalLM, the run's model)."""
    assert rom_main(["export-hf", str(run), "--out", str(out)]) == 0
    assert f"transformers {architecture}" in capsys.readouterr().err
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == architecture
    return hf, load_trained_model(run)[0]


def test_dense_run_exports_to_transformers_with_the_same_logits(tmp_path, capsys):
    run = _trained(tmp_path, {"pattern": "mamba", "d_model": 32, "n_layer": 2, "mamba": {"d_state": 8}})
    assert (run / MODEL_FILE).is_file() and not (run / LEGACY_MODEL_FILE).exists()
    out = tmp_path / "hf"
    hf, ours = exported_to_transformers(run, out, capsys, "MambaForCausalLM")
    ids = torch.randint(0, 384, (2, 23))
    torch.testing.assert_close(hf_logits(hf, ids), rom_logits(ours, ids), atol=ATOL, rtol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    from rom.data.tokenizer import load_tokenizer

    text = "the state of the union 3"
    assert tok(text, add_special_tokens=False)["input_ids"] == load_tokenizer(run / "tokenizer.json").encode(text)
    # and back in: the round trip through transformers' format changes nothing
    torch.testing.assert_close(rom_logits(load_hf_mamba(out), ids), rom_logits(ours, ids), atol=0, rtol=0)


def test_rom_run_exports_to_the_toolkit_format(tmp_path):
    run = _trained(tmp_path, {"pattern": "rom", "d_model": 32, "n_layer": 2, "mamba": {"d_state": 8},
                              "rom": {"num_experts": 4, "top_k": 1}})
    out = tmp_path / "exported"
    assert rom_main(["export-hf", str(run), "--out", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "rom" and meta["tokenizer"] == "tokenizer.json" and "model_type" not in meta
    ours, cfg = load_trained_model(run)
    loaded = load_pretrained(out)
    assert loaded.cfg == cfg.model
    ids = torch.randint(0, 384, (2, 17))
    torch.testing.assert_close(rom_logits(loaded, ids), rom_logits(ours, ids), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- model files


def test_legacy_model_pt_still_loads(tmp_path):
    cfg = run_config_from_dict({"model": {"d_model": 16, "n_layer": 1, "vocab_size": 40}})
    model = build_model(cfg.model)
    torch.save({"config": to_dict(cfg), "state_dict": model.state_dict()}, tmp_path / LEGACY_MODEL_FILE)
    loaded, loaded_cfg = load_trained_model(tmp_path)
    assert loaded_cfg.run_id == cfg.run_id
    ids = torch.randint(0, 40, (1, 9))
    torch.testing.assert_close(rom_logits(loaded, ids), rom_logits(model, ids), atol=0, rtol=0)
    save_model(tmp_path, cfg, model.state_dict())  # both present: model.safetensors wins
    assert set(load_state_dict(tmp_path)) == set(model.state_dict())


def test_model_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no trained model here"):
        load_trained_model(tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_trained_model(tmp_path)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / MODEL_FILE))  # a safetensors file of someone else
    with pytest.raises(CheckpointError, match="no 'rom_config' metadata"):
        load_trained_model(tmp_path)


# ----------------------------------------------------------------------------------------------- lm-eval


def test_lm_eval_passthrough_help(capsys):
    assert rom_main(["lm-eval", "--help"]) == 0
    assert "lm-eval" in capsys.readouterr().out


def test_lm_eval_passthrough_scores_a_run(tmp_path, monkeypatch, capsys):
    """`rom lm-eval --model rom ...` is lm-eval's command line; a two-document local task, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run = tmp_path / "run"
    tok = _tokenizer(tmp_path / "tokenizer.json", 300)
    cfg = run_config_from_dict({"model": {"d_model": 16, "n_layer": 1, "vocab_size": 300},
                                "train": {"seq_len": 32}})
    save_model(run, cfg, build_model(cfg.model).state_dict())
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    docs = [{"text": "the state of the", "options": [" union", " people"], "gold": 0},
            {"text": "the people", "options": [" 3", " and"], "gold": 1}]
    (tasks / "tiny.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "rom_tiny_mc.yaml").write_text(
        "task: rom_tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tasks / 'tiny.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{text}}'\ndoc_to_choice: '{{options}}'\ndoc_to_target: gold\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n")
    out = tmp_path / "results"
    code = rom_main(["lm-eval", "--model", "rom", "--model_args", f"run_dir={run},tokenizer={tok}",
                     "--device", "cpu", "--batch_size", "2", "--include_path", str(tasks), "--tasks", "rom_tiny_mc",
                     "--limit", "2", "--output_path", str(out)])
    assert code == 0
    results = [json.loads(p.read_text()) for p in out.rglob("results_*.json")]
    assert results and 0.0 <= results[0]["results"]["rom_tiny_mc"]["acc,none"] <= 1.0


def test_a_repo_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    """With network a repo id is downloaded (huggingface_hub.snapshot_download, stood in for here)."""
    import huggingface_hub

    src, hf = hf_model(tmp_path, vocab_size=40, hidden_size=16, num_hidden_layers=1, state_size=4)
    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_hf_mamba("state-spaces/tiny-hf")
    assert calls and calls[0][0] == "state-spaces/tiny-hf" and "*.safetensors" in calls[0][2]
    ids = torch.randint(0, 40, (1, 5))
    torch.testing.assert_close(rom_logits(model, ids), hf_logits(hf, ids), atol=ATOL, rtol=1e-4)

    def offline(repo_id, revision=None, allow_patterns=None):
        raise OSError("no network\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(InteropError, match="cannot download from the Hugging Face hub") as info:
        load_hf_mamba("state-spaces/tiny-hf")
    assert "\n" not in str(info.value)
