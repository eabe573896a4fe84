"""Run records: the versioned JSON files that the analysis reads. Plain Python, no torch.

A run directory ``results/<study>/runs/<run_id>/`` holds one part per pipeline stage, each a JSON object
with ``schema_version`` and ``part``:

* ``train.json``      written by ``rom train``  (part="train")
* ``eval.json``       written by ``rom eval``   (part="eval")
* ``flops.json``      written by ``rom flops --run`` (part="flops")
* ``downstream.json`` written by the downstream stage (part="downstream"), optional

``collect_parts`` loads the parts of a run directory and ``merge_parts`` joins them into ``final.json``
(part="final"), the one record per run that analysis reads.
``validate_record`` checks a final record and raises ``RecordError`` naming the file and the field.

Final record layout (schema version 1)::

    schema_version: 1
    part: "final"
    run_id, name, study, role: str          # role: scaling | ablation | seed | extrapolation
    family: str                             # mamba | rom | hybrid-mamba | hybrid-rom (+ "+moe")
    config: {model, data, train, eval}      # rom.config.to_dict(RunConfig)
    config_hash: str
    model: {d_model, n_layer, pattern, num_experts, top_k, routing, expert_projections, mlp}
    params: {total, active, total_nonembedding, active_nonembedding, embedding,
             components: {name: {total: int, active: int}}}   # rom.accounting.ParamCount.to_dict()
    flops: {per_token_fwd, per_token_train, train_total, seq_len,
            components: {name: per-token forward FLOPs},
            torch_counter_fwd: float|None, fvcore_fwd: float|None}   # measured cross-checks, per token
    training: {tokens, steps, seq_len, batch_size, passes, wall_time_s, tokens_per_s,
               final_train_loss, seed, device, precision, backend, world_size, diverged: bool,
               schedule: {kind, lr, min_lr, total_steps, warmup_steps, decay_start, decay_steps, decay_shape},
               branch_time_s,                  # schedule, branch_time_s: records written since issue 23
               divergence: str|None}           # since issue 28: why a diverged run stopped (null otherwise);
                                            # final_train_loss is null only in a diverged run without a finite loss
    data_identity: {tokenizer_sha256, tokenizer_kind, corpus_sha256}   # optional (since issue 28): what made
                                            # the training tokens (rom.data.identity)
    branches: [{fraction, tokens, steps, start_step, passes, val_loss: float|None, final_train_loss,
                diverged, wall_time_s, branch_time_s, schedule: {as training.schedule}}]   # optional
                                            # train.cooldown_branches of a wsd run: each branch is a point of
                                            # its own token budget (tokens = its steps x tokens per step);
                                            # val_loss on the final validation's windows; wall_time_s = main
                                            # run's time to the branch + the branch (a run of that budget);
                                            # several points of one run: bootstrap by run, not by point
    eval: {tokenizer_bytes_per_token: float,
           results: [{context_length, loss, ppl, bpb, tokens}],
           max_tokens, device, packages: {name: version}}   # where it was scored (device, packages: since
                                                              # 2026-12-07; provenance is the training host's)
    downstream: {task: {metric: value}} | null          # e.g. {"hellaswag": {"acc": .., "acc_norm": ..}}
    provenance: {git_sha, config_hash, packages: {name: version}, device, python, created}
    metrics_file: str                       # name of the step metrics JSONL beside final.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from rom.config import RunConfig, from_dict, to_dict
from rom.errors import RomError

SCHEMA_VERSION = 1
PART_NAMES = ("train", "eval", "flops", "downstream")
FINAL_PART = "final"

# Required fields of a final record: dotted path -> expected python type(s).
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "name": (str,),
    "study": (str,),
    "role": (str,),
    "family": (str,),
    "config": (dict,),
    "model": (dict,),
    "model.d_model": (int,),
    "model.n_layer": (int,),
    "model.num_experts": (int,),
    "model.top_k": (int,),
    "params.total": (int,),
    "params.active": (int,),
    "params.total_nonembedding": (int,),
    "params.active_nonembedding": (int,),
    "params.embedding": (int,),
    "params.components": (dict,),
    "flops.per_token_fwd": (int, float),
    "flops.per_token_train": (int, float),
    "flops.train_total": (int, float),
    "training.tokens": (int,),
    "training.steps": (int,),
    "training.seq_len": (int,),
    "training.passes": (int, float),
    "training.wall_time_s": (int, float),
    "training.tokens_per_s": (int, float),
    "training.final_train_loss": (int, float),
    "eval.results": (list,),
    "provenance": (dict,),
}
# Required fields that may be null in a record of a diverged run (training.diverged true): no finite value exists
NULLABLE_IF_DIVERGED = {"training.final_train_loss"}
EVAL_RESULT_FIELDS = {"context_length": (int,), "loss": (int, float), "ppl": (int, float), "bpb": (int, float)}


class RecordError(RomError, ValueError):
    """A run record is missing a field, has the wrong type, or another schema version."""


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    node: Any = record
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    return node


def _diverged(record: Mapping[str, Any]) -> bool:
    training = record.get("training")
    return isinstance(training, Mapping) and training.get("diverged") is True


def validate_record(record: Mapping[str, Any], source: str | Path = "<record>") -> dict:
    """Check a final record; raise RecordError naming ``source`` and the offending field."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{source}: a run record must be a JSON object")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version is {version!r}, this toolkit reads version {SCHEMA_VERSION}")
    for dotted, types in REQUIRED_FIELDS.items():
        try:
            value = _get(record, dotted)
        except KeyError:
            raise RecordError(f"{source}: missing field '{dotted}'") from None
        if value is None and dotted in NULLABLE_IF_DIVERGED and _diverged(record):
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise RecordError(f"{source}: field '{dotted}' must be {names}, got {value!r}")
    for i, row in enumerate(record["eval"]["results"]):
        for key, types in EVAL_RESULT_FIELDS.items():
            if key not in row:
                raise RecordError(f"{source}: missing field 'eval.results[{i}].{key}'")
            if isinstance(row[key], bool) or not isinstance(row[key], types):
                raise RecordError(f"{source}: field 'eval.results[{i}].{key}' must be a number, got {row[key]!r}")
    return dict(record)


def load_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: file does not exist") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: a record must be a JSON object")
    return data


def load_record(path: str | Path) -> dict:
    """Load and validate one final record."""
    return validate_record(load_json(path), path)


def make_part(part: str, run_id: str, payload: Mapping[str, Any]) -> dict:
    if part not in PART_NAMES:
        raise RecordError(f"unknown record part {part!r}; expected one of {PART_NAMES}")
    return {"schema_version": SCHEMA_VERSION, "part": part, "run_id": run_id, **payload}


def load_part(path: str | Path, part: str) -> dict:
    data = load_json(path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{path}: schema_version is {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if data.get("part") != part:
        raise RecordError(f"{path}: expected a '{part}' part, found part={data.get('part')!r}")
    return data


def collect_parts(run_dir: str | Path, require: Sequence[str] = ()) -> dict[str, dict]:
    """Load RUN_DIR/<part>.json for every part present; train and ``require`` must exist."""
    run_dir = Path(run_dir)
    unknown = [p for p in require if p not in PART_NAMES]
    if unknown:
        raise RecordError(f"--require {','.join(unknown)}: unknown part(s); known parts: {', '.join(PART_NAMES)}")
    parts = {}
    for name in PART_NAMES:
        path = run_dir / f"{name}.json"
        if path.exists():
            parts[name] = load_part(path, name)
        elif name == "train" or name in require:
            raise RecordError(f"{path}: required part '{name}' is missing")
    return parts


def merge_parts(parts: Mapping[str, Mapping[str, Any]], source: str = "<merge>") -> dict:
    """Join stage parts (keyed by part name) into a validated final record.

    The train part carries the identity (run_id, name, study, role, family, config, model, params,
    training, provenance, metrics_file); eval adds ``eval``; flops adds ``flops``; downstream adds
    ``downstream``. All parts must agree on run_id.
    """
    if "train" not in parts:
        raise RecordError(f"{source}: the 'train' part is required")
    run_ids = {p.get("run_id") for p in parts.values()}
    if len(run_ids) != 1:
        raise RecordError(f"{source}: parts disagree on run_id: {sorted(map(str, run_ids))}")
    record: dict[str, Any] = {k: v for k, v in parts["train"].items() if k != "part"}
    record["part"] = FINAL_PART
    for name in ("eval", "flops", "downstream"):
        if name in parts:
            record[name] = parts[name][name]
    record.setdefault("downstream", None)
    return validate_record(record, source)


def config_as_read(config: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``config`` as this code reads it: every field present, defaults filled in.

    A record written before a field existed then compares equal to a new record of the same run, since a new
    field's default is what the code did before it (the rule ``RunConfig.config_hash`` relies on too). Raises
    ``rom.config.ConfigError`` naming a key this code does not know."""
    return to_dict(from_dict(RunConfig, config))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
