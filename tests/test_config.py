import pytest

from rom.config import (
    AttentionConfig,
    ConfigError,
    Mixer,
    Mlp,
    ModelConfig,
    Pattern,
    Projection,
    RunConfig,
    load_model_config,
    load_run_config,
    model_preset,
    preset_names,
    run_config_from_dict,
    save_yaml,
    to_dict,
)


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_run_config(None, ["model.pattern=rom", "model.rom.num_experts=4", "train.seq_len=64"])
    assert cfg.model.rom.num_experts == 4 and cfg.train.seq_len == 64
    path = tmp_path / "run.yaml"
    save_yaml(cfg, path)
    again = load_run_config(path)
    assert again == cfg
    assert again.run_id == cfg.run_id


def test_run_id_depends_on_config_not_on_runtime_fields():
    a = load_run_config(None, ["name=x"])
    b = load_run_config(None, ["name=x", "train.backend=reference", "train.log_every=3"])
    c = load_run_config(None, ["name=x", "model.d_model=128"])
    assert a.run_id == b.run_id != c.run_id
    assert a.run_id.startswith("x-")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.rom.num_expert=4", "unknown key 'model.rom.num_expert'"),
        ("model.pattern=transformer", "model.pattern='transformer' is not allowed"),
        ("model.rom.top_k=9", "model.rom.top_k must be in [1, num_experts=8]"),
        ("model.d_model=-3", "model.d_model must be > 0"),
        ("model.rom.expert_projections=[conv, nope]", "model.rom.expert_projections[1]='nope'"),
        ("train.batch_size=abc", "train.batch_size must be an integer"),
        ("model.rom.renormalize=maybe", "model.rom.renormalize must be true or false"),
        ("data.source=files", "data.paths must list at least one file"),
    ],
)
def test_errors_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_run_config(None, [override])
    assert fragment in str(e.value)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  d_modle: 12\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'model.d_modle'"):
        load_run_config(path)


def test_presets_and_layer_patterns():
    assert {"mamba-115m", "mamba-1.3b", "samba-421m", "rom-mamba-1.3b-e8"} <= set(preset_names())
    samba = model_preset("samba-421m")
    assert samba.layers()[:2] == [(Mixer.MAMBA, Mlp.DENSE), (Mixer.ATTENTION, Mlp.DENSE)]
    rom = model_preset("rom-mamba-1.3b-e8")
    assert rom.pattern == Pattern.ROM and rom.rom.num_experts == 8 and rom.rom.top_k == 1
    assert rom.rom.expert_projections == (Projection.CONV, Projection.GATE, Projection.OUT)
    assert load_model_config("rom-mamba-1.3b-e8", ["rom.num_experts=16"]).rom.num_experts == 16
    cfg = run_config_from_dict({"model": {"preset": "mamba-115m", "n_layer": 2}})
    assert cfg.model.d_model == 768 and cfg.model.n_layer == 2


def test_moe_every_alternates_dense_and_moe():
    cfg = ModelConfig(pattern=Pattern.HYBRID, n_layer=4, mlp=Mlp.MOE, moe_every=2, attention=AttentionConfig(n_heads=4))
    assert [m for _, m in cfg.layers()] == [Mlp.MOE, Mlp.DENSE, Mlp.MOE, Mlp.DENSE]


def test_to_dict_is_plain():
    d = to_dict(RunConfig())
    assert d["model"]["pattern"] == "mamba" and isinstance(d["model"]["rom"]["expert_projections"], list)


@pytest.mark.parametrize("section", ["rom", "moe"])
def test_renormalised_top1_is_rejected(section):
    """Renormalised top-1 weights are p/p = 1: the router would get no language-model gradient."""
    with pytest.raises(ConfigError, match=rf"model\.{section}\.renormalize=true with model\.{section}\.top_k=1"):
        load_run_config(None, [f"model.{section}.top_k=1", f"model.{section}.renormalize=true"])
    load_run_config(None, [f"model.{section}.top_k=2", f"model.{section}.renormalize=true"])
    load_run_config(None, [f"model.{section}.top_k=1", f"model.{section}.renormalize=false"])


def test_presets_validate():
    """Every shipped preset passes validation (renormalised top-1 among the checks; the shipped studies are
    checked by tests/test_pipeline_studies.py::test_shipped_studies_are_valid)."""
    for name in preset_names():
        model_preset(name).validate()


# ---------------------------------------------------------------------------------- SSM architecture (issue 27)

_REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_committed_run_configs_still_hash_to_their_run_ids():
    """model.ssm, model.mamba2 and rom.expertization, at their defaults, leave every existing run id unchanged."""
    paths = sorted(_REPO.glob("results/*/runs/*/config.yaml"))
    assert paths, "no committed run configs found"
    for path in paths:
        cfg = load_run_config(path)
        assert cfg.run_id == path.parent.name, path


def test_new_model_fields_change_the_hash_only_away_from_their_defaults():
    base = load_run_config(None, ["name=x"])
    same = load_run_config(None, ["name=x", "model.ssm=mamba", "model.rom.expertization=custom",
                                  "model.mamba2.headdim=64"])
    assert base.run_id == same.run_id
    assert load_run_config(None, ["name=x", "model.mamba2.headdim=32"]).run_id != base.run_id
    sel = load_run_config(None, ["name=x", "model.rom.expertization=selective"])
    assert sel.run_id != base.run_id  # the label is hashed even where it resolves to the default list
    assert sel.model.rom.expert_projections == (Projection.CONV, Projection.GATE, Projection.OUT)


def test_expertization_presets_per_architecture():
    from rom.config import SSM_PROJECTIONS, Expertization, SsmKind

    comp = load_run_config(None, ["model.pattern=rom", "model.rom.expertization=comprehensive"]).model
    assert comp.rom.expertization == Expertization.COMPREHENSIVE
    assert comp.rom.expert_projections == SSM_PROJECTIONS[SsmKind.MAMBA].all
    # a list that agrees with the preset is fine; a different one contradicts it
    load_run_config(None, ["model.pattern=rom", "model.rom.expertization=comprehensive",
                           "model.rom.expert_projections=[conv, gate, out, x, dt, conv1d]"])
    with pytest.raises(ConfigError, match="contradicts model.rom.expertization=selective"):
        load_run_config(None, ["model.pattern=rom", "model.rom.expertization=selective",
                               "model.rom.expert_projections=[conv, out]"])
    for pset in SSM_PROJECTIONS.values():
        assert set(pset.selective) < set(pset.all)


def test_projection_of_another_architecture_is_rejected():
    with pytest.raises(ConfigError, match=r"\['q'\] are not projections of a mamba mixer"):
        load_run_config(None, ["model.pattern=rom", "model.rom.expert_projections=[conv, q]"])
    # a dense model does not use rom.expert_projections
    load_run_config(None, ["model.pattern=mamba", "model.rom.expert_projections=[q]"])


def test_unimplemented_architecture_is_a_clear_error(monkeypatch):
    import rom.config

    # every SsmKind is implemented now: take one row out of the table to see the error
    monkeypatch.delitem(rom.config.SSM_MIXERS, rom.config.SsmKind.GATED_DELTANET)
    with pytest.raises(ConfigError, match="model.ssm='gated-deltanet' is not implemented yet"):
        load_run_config(None, ["model.ssm=gated-deltanet"])
    with pytest.raises(ConfigError, match="model.ssm='transformer' is not allowed"):
        load_run_config(None, ["model.ssm=transformer"])


def test_family_of_mamba1_models_unchanged():
    assert ModelConfig(pattern=Pattern.MAMBA).family == "mamba"
    assert ModelConfig(pattern=Pattern.ROM, mlp=Mlp.MOE).family == "rom+moe"
    assert ModelConfig(pattern=Pattern.HYBRID, hybrid_ssm=Mixer.ROM).family == "hybrid-rom"
    assert ModelConfig(pattern=Pattern.HYBRID).layers()[:2] == [(Mixer.MAMBA, Mlp.NONE), (Mixer.ATTENTION, Mlp.NONE)]
