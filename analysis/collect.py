"""Collect final run records into one tidy table: one row per run and evaluation context length, plus one row
per WSD cooldown branch of a run (``point`` = branch: a point of its own token budget at the training length,
``source_run_id`` = the run; see BRANCH_POINT). ``main_rows`` drops the branch rows (tables of runs, the
context-length and downstream claims); ``main_budget`` is the study's token budget that one-budget fits use.

Columns carry their unit in the name where one applies (``*_nats``, ``*_s``, ``flops_*`` in FLOPs,
``params_*`` in parameters, ``*_tokens`` in tokens); ``COLUMNS`` documents each one. Provenance
(git SHA, package versions, device, config) rides along as JSON strings so that later steps (report)
need nothing but the table.
"""

from __future__ import annotations

import glob
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from analysis.errors import AnalysisError
from rom.errors import RomError
from rom.io import atomic_path
from analysis.families import SSM_KINDS, family_columns, family_of_record
from rom.records import RecordError, config_as_read, load_record

log = logging.getLogger(__name__)

# Column -> (unit, description). The order here is the column order of the written table.
COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("", "run id (name + config hash); a cooldown branch's point: '<run id>@<fraction>'"),
    "point": ("", "main (the run's own record) | branch (a WSD cooldown branch of the run: a point of its own "
                  "token budget, see BRANCH_POINT)"),
    "source_run_id": ("", "the training run the point comes from (its own run_id for main points): the run "
                          "bootstrap draws a run's points together"),
    "name": ("", "run name"),
    "study": ("", "study the run belongs to"),
    "role": ("", "scaling | ablation | seed | extrapolation"),
    "family": ("", "mamba | rom | hybrid-mamba | hybrid-rom, optionally +moe (derived from the typed fields "
                   "below, see analysis.families)"),
    "pattern": ("", "layer pattern (record model.pattern): mamba | rom | hybrid"),
    "ssm_mixer": ("", "the SSM mixer (model.pattern, or config.model.hybrid_ssm for hybrids): mamba | rom"),
    "ssm": ("", "the SSM architecture (config.model.ssm; 'mamba' in records made before the field): mamba | "
                "mamba2 | gated-deltanet"),
    "base_family": ("", "family without the '+moe' suffix"),
    "ffn_moe": ("bool", "the MLPs are FFN-MoE (record model.mlp == 'moe')"),
    "uses_rom": ("bool", "the SSM mixer is routed (Routing Mamba)"),
    "expertization": ("", "which projections are experts: dense (no RoM) | selective | comprehensive | "
                          "custom[<model.expert_projections>] (see expertization_of)"),
    "d_model": ("", "model width"),
    "n_layer": ("", "number of layers"),
    "num_experts": ("", "experts per RoM layer (1 for dense)"),
    "top_k": ("", "experts per token"),
    "params_total": ("parameters", "all parameters"),
    "params_active": ("parameters", "parameters used per token"),
    "params_total_nonembedding": ("parameters", "all parameters without embeddings"),
    "params_active_nonembedding": ("parameters", "active parameters without embeddings"),
    "params_embedding": ("parameters", "embedding parameters"),
    "flops_per_token_fwd": ("FLOPs/token", "analytic forward FLOPs per token"),
    "flops_per_token_fwd_head": ("FLOPs/token", "analytic forward FLOPs per token of the LM head "
                                                "(flops.components.head; 0 when the record itemises none)"),
    "flops_per_token_train": ("FLOPs/token", "analytic training FLOPs per token (3x forward)"),
    "flops_train_total": ("FLOPs", "training FLOPs of the whole run (flops.train_total)"),
    "train_tokens": ("tokens", "training tokens"),
    "train_steps": ("steps", "optimizer steps"),
    "train_seq_len": ("tokens", "training sequence length"),
    "train_seed": ("", "training seed"),
    "train_passes": ("passes", "passes over the training split (training tokens / split tokens)"),
    "final_train_loss_nats": ("nats/token", "last training loss"),
    "wall_time_s": ("s", "training wall time"),
    "tokens_per_s": ("tokens/s", "training throughput"),
    "diverged": ("bool", "training diverged (excluded from fits)"),
    "device": ("", "training device"),
    "precision": ("", "training precision"),
    "context_length": ("tokens", "evaluation context length of this row"),
    "context_multiple": ("x", "context_length / train_seq_len"),
    "at_train_length": ("bool", "context_length == train_seq_len (the row used by the fits)"),
    "loss_nats": ("nats/token", "validation loss at this context length"),
    "ppl": ("", "validation perplexity exp(loss)"),
    "bpb": ("bits/byte", "validation bits per byte"),
    "eval_tokens": ("tokens", "validation tokens scored"),
    "eval_device": ("", "device of the evaluation (record field eval.device: cuda, cpu; under precision auto a "
                        "CPU scores in fp32 where CUDA autocasts to bf16); in a cooldown-branch row the training "
                        "device, whose trainer scored it"),
    "git_sha": ("", "git commit of the code that trained the run"),
    "config_hash": ("", "hash of the run config"),
    "hardware": ("", "machine description from the record's provenance (e.g. GPU model)"),
    "python": ("", "python version"),
    "created": ("", "record creation time (UTC)"),
    "packages_json": ("JSON", "package versions {name: version}"),
    "config_json": ("JSON", "the full run config"),
    "record_path": ("path", "the final record this row came from"),
    "metrics_path": ("path", "the run's step metrics JSONL ('' if the record names none)"),
}
# rom.config.Expertization values (config.model.rom.expertization; "custom" in records made before the field);
# tests/test_analysis_expertization.py checks them against the enum. A RoM run's column is the named setting, or
# for "custom" the record's projection list: "custom[conv,gate,out]" (a custom list equal to a preset stays
# custom: the record says what was asked for, and the expertization table compares the named settings only).
EXPERTIZATIONS = ("custom", "selective", "comprehensive")
DENSE_EXPERTIZATION = "dense"  # the column's value for runs without RoM
DOWNSTREAM_PREFIX = "downstream."  # columns "downstream.<task>.<metric>", one value per run
MAIN_POINT = "main"
BRANCH_POINT = "branch"
# A cooldown branch (record field ``branches``, written by a WSD run with train.cooldown_branches) becomes one
# row beside its run's rows: the branch's own token budget (``train_tokens``, ``train_steps``,
# ``train_passes``), its validation loss at the training length on the final validation's windows
# (``loss_nats``; one row, at the training length), training FLOPs = flops per token x the branch's tokens
# (the compute of a separate run of that budget, which the branch stands in for; the branch itself reused the
# main run's first steps), wall time = the main run's time to the branch plus the branch (a run of that
# budget). ``eval_tokens`` is 0 there (the trainer's validation does not record it) and downstream scores are
# empty. Its run_id is '<run id>@<fraction>' and ``source_run_id`` the run's id.


def expand_record_paths(specs: Sequence[str | Path]) -> list[Path]:
    """Each spec is a file, a directory (searched recursively for final.json) or a glob pattern."""
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(p.rglob("final.json"))
            if not found:
                raise AnalysisError(f"{p}: directory holds no final.json record")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            found = sorted(Path(m) for m in glob.glob(str(spec), recursive=True))
            if not found:
                raise AnalysisError(f"{spec}: no record file matches (expected a file, a directory or a glob)")
            paths.extend(found)
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def ssm_of_family(mixer: str) -> str:
    """The SSM architecture (a key of ``SSM_KINDS``, config.model.ssm) whose dense or routed mixer ``mixer`` is."""
    kinds = [kind for kind, mixers in SSM_KINDS.items() if mixer in mixers]
    if len(kinds) != 1:
        raise AnalysisError(f"SSM mixer {mixer!r} belongs to {len(kinds)} architectures of SSM_KINDS "
                            f"({sorted(SSM_KINDS)}); it must belong to exactly one (analysis/families.py)")
    return kinds[0]


def expertization_of(config: Any, projections: Any, uses_rom: bool, source: str | Path) -> str:
    """The ``expertization`` column of a run (see ``EXPERTIZATIONS``): config.model.rom.expertization ("custom"
    when the config has none), and for "custom" the run's expert projections (the record's typed
    ``model.expert_projections``). An unknown setting or a custom run without projections is an error naming
    ``source``."""
    if not uses_rom:
        return DENSE_EXPERTIZATION
    model = config.get("model") if isinstance(config, dict) else None
    rom = model.get("rom") if isinstance(model, dict) else None
    value = rom.get("expertization", "custom") if isinstance(rom, dict) else "custom"  # records made before it
    if value not in EXPERTIZATIONS:
        raise AnalysisError(f"{source}: field 'config.model.rom.expertization' is {value!r}, a setting the analysis "
                            f"does not know ({list(EXPERTIZATIONS)}); add it to EXPERTIZATIONS in analysis/collect.py")
    if value != "custom":
        return str(value)
    if (not isinstance(projections, list) or not projections
            or not all(isinstance(p, str) and p for p in projections)):
        raise AnalysisError(f"{source}: field 'model.expert_projections' must be a non-empty list of projection "
                            f"names for a RoM run of custom expertization, got {projections!r}")
    return f"custom[{','.join(projections)}]"


def _config_as_read(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The record's config with every field this code knows (defaults filled in), so that seed groups and
    width series match a record written before a field existed with a new one of the same run. A config
    this code cannot read stays as written (and then matches only configs written the same way)."""
    try:
        return config_as_read(config)
    except (RomError, TypeError) as exc:
        log.warning("%s: config kept as written, not read with defaults: %s", path, exc)
        return config


def _row_base(record: dict[str, Any], path: Path) -> dict[str, Any]:
    model, params, flops = record["model"], record["params"], record["flops"]
    training, prov = record["training"], record.get("provenance", {})
    family = family_of_record(record, path)  # typed fields; an unknown pattern or mixer is an error
    ssm = ssm_of_family(family.ssm)
    metrics_file = record.get("metrics_file") or ""
    return {
        "run_id": record["run_id"],
        "point": MAIN_POINT,
        "source_run_id": record["run_id"],
        "name": record["name"],
        "study": record["study"],
        "role": record["role"],
        **family_columns(family, model["pattern"]),
        "ssm": ssm,
        "expertization": expertization_of(record["config"], model.get("expert_projections"), family.routed, path),
        "d_model": model["d_model"],
        "n_layer": model["n_layer"],
        "num_experts": model["num_experts"],
        "top_k": model["top_k"],
        "params_total": params["total"],
        "params_active": params["active"],
        "params_total_nonembedding": params["total_nonembedding"],
        "params_active_nonembedding": params["active_nonembedding"],
        "params_embedding": params["embedding"],
        "flops_per_token_fwd": float(flops["per_token_fwd"]),
        "flops_per_token_fwd_head": float((flops.get("components") or {}).get("head", 0.0)),
        "flops_per_token_train": float(flops["per_token_train"]),
        "flops_train_total": float(flops["train_total"]),
        "train_tokens": training["tokens"],
        "train_steps": training["steps"],
        "train_seq_len": training["seq_len"],
        "train_seed": training.get("seed"),
        "train_passes": float(training["passes"]),
        # null in a diverged run that logged no finite loss (records since issue 28)
        "final_train_loss_nats": math.nan if training["final_train_loss"] is None else float(training["final_train_loss"]),
        "wall_time_s": float(training["wall_time_s"]),
        "tokens_per_s": float(training["tokens_per_s"]),
        "diverged": bool(training.get("diverged", False)),
        "divergence": str(training.get("divergence") or ""),  # why (issue 28); an extra column, not in COLUMNS
        "device": str(training.get("device", prov.get("device", ""))),
        "precision": str(training.get("precision", "")),
        "git_sha": str(prov.get("git_sha", "")),
        "config_hash": str(record.get("config_hash", prov.get("config_hash", ""))),
        "hardware": str(prov.get("device", "")),
        "python": str(prov.get("python", "")),
        "created": str(prov.get("created", "")),
        "packages_json": json.dumps(prov.get("packages", {}), sort_keys=True),
        "config_json": json.dumps(_config_as_read(record["config"], path), sort_keys=True),
        "record_path": str(path),
        "metrics_path": str(path.parent / metrics_file) if metrics_file else "",
    }


def record_rows(record: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Rows of one validated record: one per eval result (a record without eval rows gives none)."""
    base = _row_base(record, path)
    downstream = record.get("downstream") or {}
    if not isinstance(downstream, dict):
        raise AnalysisError(f"{path}: field 'downstream' must be an object {{task: {{metric: value}}}} or null")
    for task, metrics in downstream.items():
        if not isinstance(metrics, dict):
            raise AnalysisError(f"{path}: field 'downstream.{task}' must be an object {{metric: value}}")
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # lm-eval 0.4 names metrics "acc,none" (metric,filter); keep the metric name when unambiguous.
                name = metric.split(",", 1)[0] if metric.split(",", 1)[0] not in metrics else metric
                base[f"{DOWNSTREAM_PREFIX}{task}.{name}"] = float(value)
    rows = []
    seq_len = base["train_seq_len"]
    for result in record["eval"]["results"]:
        ctx = int(result["context_length"])
        rows.append(
            {
                **base,
                "context_length": ctx,
                "context_multiple": ctx / seq_len,
                "at_train_length": ctx == seq_len,
                "loss_nats": float(result["loss"]),
                "ppl": float(result["ppl"]),
                "bpb": float(result["bpb"]),
                "eval_tokens": int(result.get("tokens", 0) or 0),
                "eval_device": str(record["eval"].get("device", "")),
            }
        )
    if not rows and base["diverged"]:
        # a diverged run is not evaluated (issue 28): one row at the training length without a loss, so the
        # fits list it among the runs they leave out, with the reason
        rows.append({**base, "context_length": seq_len, "context_multiple": 1.0, "at_train_length": True,
                     "loss_nats": math.nan, "ppl": math.nan, "bpb": math.nan, "eval_tokens": 0, "eval_device": ""})
    if not rows:
        log.warning("%s: record has no eval results; the run contributes no rows", path)
    return rows + branch_rows(record, path, base)


def branch_id(run_id: str, fraction: float) -> str:
    """The point id of a run's cooldown branch at ``fraction`` of its token budget."""
    return f"{run_id}@{fraction:g}"


def branch_rows(record: dict[str, Any], path: Path, base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per cooldown branch of the record (field ``branches``; see BRANCH_POINT for what each column is)."""
    branches = record.get("branches") or []
    if not isinstance(branches, list):
        raise AnalysisError(f"{path}: field 'branches' must be a list of cooldown branches")
    base = _row_base(record, path) if base is None else base
    base = {k: v for k, v in base.items() if not k.startswith(DOWNSTREAM_PREFIX)}
    bytes_per_token = (record.get("eval") or {}).get("tokenizer_bytes_per_token")
    seq_len = base["train_seq_len"]
    rows = []
    for i, b in enumerate(branches):
        where = f"{path}: field 'branches[{i}]'"
        if not isinstance(b, dict):
            raise AnalysisError(f"{where} must be an object")
        try:
            fraction, tokens, steps = float(b["fraction"]), int(b["tokens"]), int(b["steps"])
            wall = float(b["wall_time_s"])
        except (KeyError, TypeError, ValueError) as e:
            raise AnalysisError(f"{where} lacks a number it needs ({e!r}): fraction, tokens, steps, wall_time_s")
        if tokens <= 0:
            raise AnalysisError(f"{where}.tokens must be positive, got {tokens}")
        val = b.get("val_loss")
        loss = float(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else math.nan
        train_loss = b.get("final_train_loss")
        rows.append({
            **base,
            "run_id": branch_id(base["run_id"], fraction),
            "point": BRANCH_POINT,
            "source_run_id": base["run_id"],
            "flops_train_total": base["flops_per_token_train"] * tokens,
            "train_tokens": tokens,
            "train_steps": steps,
            "train_passes": float(b.get("passes", math.nan)),
            "final_train_loss_nats": float(train_loss) if train_loss is not None else math.nan,
            "wall_time_s": wall,
            "tokens_per_s": tokens / wall if wall > 0 else math.nan,
            "diverged": bool(b.get("diverged", False)) or not math.isfinite(loss),
            "context_length": seq_len,
            "context_multiple": 1.0,
            "at_train_length": True,
            "loss_nats": loss,
            "ppl": math.exp(loss) if math.isfinite(loss) else math.nan,
            "bpb": loss / math.log(2) / float(bytes_per_token) if bytes_per_token else math.nan,
            "eval_tokens": 0,
            "eval_device": base["device"],
        })
    return rows


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Load and validate every record (RecordError names the file) and build the tidy table."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        record = load_record(path)  # raises RecordError naming the file and the field
        if record["run_id"] in seen:
            raise RecordError(f"{path}: run_id {record['run_id']!r} already read from {seen[record['run_id']]}")
        seen[record["run_id"]] = path
        rows.extend(record_rows(record, path))
    if not rows:
        raise AnalysisError("no evaluation rows in the given records; nothing to analyse")
    df = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in df.columns]
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    df = df[ordered + extra].sort_values(["family", "params_active_nonembedding", "run_id", "context_length"])
    return df.reset_index(drop=True)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by ``collect``; check the columns the later steps need."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: table file does not exist (run `python -m analysis collect` first)")
    df = pd.read_csv(path, dtype={"run_id": str, "source_run_id": str, "point": str, "name": str, "pattern": str,
                                  "ssm_mixer": str, "ssm": str, "expertization": str, "git_sha": str,
                                  "config_hash": str,
                                  "metrics_path": str, "record_path": str})
    if "run_id" in df.columns and "point" not in df.columns:  # written before cooldown branches: all main rows
        df.insert(1, "point", MAIN_POINT)
    if "run_id" in df.columns and "source_run_id" not in df.columns:
        df.insert(2, "source_run_id", df["run_id"])
    if {"ssm_mixer", "uses_rom", "config_json"} <= set(df.columns):  # written before the two columns existed
        if "ssm" not in df.columns:
            df.insert(df.columns.get_loc("ssm_mixer") + 1, "ssm", [ssm_of_family(str(m)) for m in df["ssm_mixer"]])
        if "expertization" not in df.columns:
            configs = [json.loads(c) for c in df["config_json"]]  # the projections: the config's own list
            df.insert(df.columns.get_loc("uses_rom") + 1, "expertization", [
                expertization_of(c, ((c.get("model") or {}).get("rom") or {}).get("expert_projections"), bool(u),
                                 f"{path}: run {r}")
                for c, u, r in zip(configs, df["uses_rom"], df["run_id"])])
    if "eval_device" not in df.columns:  # collected before the column existed: the device is unknown
        df["eval_device"] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: table lacks columns {missing}; was it written by `analysis collect`?")
    for col in ("metrics_path", "git_sha", "device", "eval_device", "hardware", "precision", "python", "created"):
        df[col] = df[col].fillna("").astype(str)
    for col in ("ffn_moe", "uses_rom", "diverged", "at_train_length"):
        df[col] = df[col].astype(bool)
    return df


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the runs' own records (no cooldown-branch points): what tables of runs, context-length and
    downstream claims use. A table without the ``point`` column (written before branches existed) is all main."""
    if "point" not in df.columns:
        return df
    return df[df["point"] == MAIN_POINT]


def main_budget(df: pd.DataFrame) -> int | None:
    """The study's main token budget: the most common ``train_tokens`` among the main rows of role ``scaling``
    (ties: the largest); None without scaling runs."""
    runs = main_rows(df)
    runs = runs[runs["role"] == "scaling"].drop_duplicates("run_id")
    if runs.empty:
        return None
    counts = runs["train_tokens"].astype(int).value_counts()
    top = counts[counts == counts.max()].index
    return int(max(top))


def runs_at_train_length(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its own evaluation at the training length (cooldown-branch points left out; see
    ``points_at_train_length``)."""
    return points_at_train_length(main_rows(df))


def points_at_train_length(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point (a run's own record and each of its cooldown branches) at the training length."""
    return df[df["at_train_length"]].drop_duplicates("run_id").reset_index(drop=True)


def runs_without_train_length(df: pd.DataFrame) -> list[str]:
    at = set(df.loc[df["at_train_length"], "run_id"])
    return sorted(set(df["run_id"]) - at)
