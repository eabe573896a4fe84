# Study loading: the study file is validated against workflow/schemas/study.schema.yaml, then every run's
# RunConfig is built with rom.config (torch-free) so that its run id (name + config hash) names its directory.
import copy
import json
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from rom.config import ConfigError, run_config_from_dict, to_dict

STUDIES_DIR = Path("config/studies")
STUDY_SCHEMA = "../schemas/study.schema.yaml"  # relative to this file


def study_file(spec):
    """A study name under config/studies/ or a path to a study YAML file."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        candidate = path
    else:
        candidate = STUDIES_DIR / f"{spec}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")))
        raise WorkflowError(f"config 'study': {spec!r} is neither a study in {STUDIES_DIR}/ ({known}) nor a file")
    return candidate


def _schema_error_text(err):
    """One line naming the offending key of a jsonschema ValidationError."""
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    return f"{where or '<top level>'}: {err.message}"


def load_study(path):
    """Read and schema-validate a study file; defaults from the schema are filled in."""
    try:
        study = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise WorkflowError(f"study file {path} is not valid YAML: {e}")
    if not isinstance(study, dict):
        raise WorkflowError(f"study file {path} must hold a mapping at the top level")
    try:
        validate(study, STUDY_SCHEMA)
    except WorkflowError as e:
        cause = e.__cause__ or e.__context__  # the jsonschema ValidationError behind Snakemake's message
        detail = _schema_error_text(cause) if hasattr(cause, "absolute_path") else str(e)
        raise WorkflowError(f"study file {path}: {detail}")
    return study


def _deep_merge(base, update):
    """A copy of ``base`` with ``update`` merged in; mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(base) if base else {}
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_dict(study, run):
    """The plain RunConfig mapping of one run: study defaults with the run's own sections on top."""
    return {
        "name": run["name"],
        "study": study["study"],
        "role": run["role"],
        "model": _deep_merge(study.get("model"), run["model"]),
        "data": copy.deepcopy(study["data"]),
        "train": _deep_merge(study.get("train"), run.get("train")),
        "eval": _deep_merge(study.get("eval"), run.get("eval")),
    }


def build_runs(study, path):
    """{run_id: resolved RunConfig mapping} in study order; errors name the study file, the run and the key."""
    runs = {}
    names = set()
    for i, run in enumerate(study["runs"]):
        if run["name"] in names:
            raise WorkflowError(f"study file {path}: runs[{i}].name {run['name']!r} is used twice")
        names.add(run["name"])
        try:
            cfg = run_config_from_dict(run_dict(study, run))
        except ConfigError as e:
            raise WorkflowError(f"study file {path}: runs[{i}] ({run['name']}): {e}")
        runs[cfg.run_id] = to_dict(cfg)
    return runs


def data_dict(study, path):
    """The RunConfig mapping the data stages read (only its data section matters to them)."""
    try:
        cfg = run_config_from_dict({"name": "data", "study": study["study"], "data": study["data"]})
    except ConfigError as e:
        raise WorkflowError(f"study file {path}: {e}")
    return to_dict(cfg)


def downstream_runs(study, runs, path):
    """Run ids scored on the downstream tasks."""
    selected = study["downstream"]["runs"]
    by_name = {cfg["name"]: run_id for run_id, cfg in runs.items()}
    if selected == "all":
        return list(runs)
    unknown = [n for n in selected if n not in by_name]
    if unknown:
        raise WorkflowError(f"study file {path}: downstream.runs names unknown runs {unknown}; runs are {sorted(by_name)}")
    return [by_name[n] for n in selected]


STUDY_FILE = study_file(config["study"])
STUDY = load_study(STUDY_FILE)
RUNS = build_runs(STUDY, STUDY_FILE)
DATA_CONFIG = data_dict(STUDY, STUDY_FILE)
DOWNSTREAM_RUNS = downstream_runs(STUDY, RUNS, STUDY_FILE)
FIT = STUDY["fit"]

OUT = f"results/{STUDY['study']}"
DATA = f"{OUT}/data"
RUN = f"{OUT}/runs/{{run_id}}"
POST_TRAIN_PRIORITY = 10  # eval, flops, downstream and record of a trained run (rules/train.smk)
LOGS = f"{OUT}/logs"
ANALYSIS = f"{OUT}/analysis"

wildcard_constraints:
    run_id="|".join(re.escape(r) for r in sorted(RUNS)),


SOFTWARE = "../envs/rom.yaml"  # conda environment of every rule (used with --sdm conda)


def torch_env(wildcards, threads):
    """Environment prefix that pins a torch job to the threads Snakemake gave it."""
    return f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"


def parent(name):
    """A params function: the directory holding the rule's output (or input) named ``name``."""

    def directory_of(wildcards, input, output):
        files = output if name in output.keys() else input
        return str(Path(getattr(files, name)).parent)

    return directory_of


def train_launcher(wildcards, resources):
    """`python -m rom`, or torchrun running the rom CLI on every GPU the job holds (config train_launcher)."""
    choice = config["train_launcher"]
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if choice == "none" or (choice == "auto" and gpus <= 1):
        return "python -m rom"
    if choice == "auto":
        return f"torchrun --standalone --nproc-per-node={gpus} -m rom"
    return choice


def on_divergence():
    """The --on-divergence flag of `rom train`: the study's on_divergence (fail: exit 3, exclude: exit 0)."""
    return f"--on-divergence {STUDY.get('on_divergence', 'fail')}"


def downstream_limit():
    """The --limit flag of `rom downstream` (a study's limit 0 means the full sets: no flag)."""
    limit = STUDY["downstream"]["limit"]
    return f"--limit {limit}" if limit else ""


def record_parts(wildcards):
    """The parts `rom record` merges: train, eval, flops, and downstream for the selected runs."""
    parts = [f"{OUT}/runs/{wildcards.run_id}/{name}.json" for name in ("train", "eval", "flops")]
    if wildcards.run_id in DOWNSTREAM_RUNS:
        parts.append(f"{OUT}/runs/{wildcards.run_id}/downstream.json")
    return parts


def record_paths():
    return expand(f"{OUT}/runs/{{run_id}}/final.json", run_id=list(RUNS))


def records():
    """The final records the analysis reads.

    Normal mode: every run of the study (Snakemake produces the missing ones). Regenerate mode: the committed
    records, never produced here. They are the study's current run ids when all exist; otherwise (the config
    tree gained a field since they were recorded, so the hashes moved) every results/<study>/runs/*/final.json,
    which must then hold at most one record for each run name of the study (records of other names are left
    out). A study that runs over several sittings regenerates from the runs recorded so far, with a warning that
    names the others.
    """
    expected = record_paths()
    if not config["regenerate"] or all(Path(p).is_file() for p in expected):
        return expected
    found = sorted(Path(OUT).glob("runs/*/final.json"))
    if not found:
        raise WorkflowError(f"regenerate=true but no run records match {OUT}/runs/*/final.json")
    by_name = {}
    for path in found:
        try:
            name = json.loads(path.read_text())["name"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WorkflowError(f"{path}: not a readable run record ({e})")
        by_name.setdefault(name, []).append(str(path))
    names = [cfg["name"] for cfg in RUNS.values()]
    missing = [name for name in names if name not in by_name]
    if len(missing) == len(names):
        raise WorkflowError(f"regenerate=true: no record under {OUT}/runs/ for any of the study's runs {names}")
    if missing:  # a study that runs over several sittings: analyse what has run, say what has not
        logger.warning(f"regenerate=true: {len(names) - len(missing)} of the study's {len(names)} runs have records "
                       f"under {OUT}/runs/; the analysis reads those; not yet run: {', '.join(missing)}")
        names = [name for name in names if name in by_name]
    repeated = {name: by_name[name] for name in names if len(by_name[name]) > 1}
    if repeated:
        raise WorkflowError(
            f"regenerate=true: several records per run name under {OUT}/runs/ (stale runs of an older study "
            f"version?); keep one of each: {repeated}"
        )
    return [by_name[name][0] for name in names]


# What the analysis writes: the one list of figure and table names (and their captions) in analysis/outputs.py,
# importable here because the toolkit is installed (pyproject.toml packages rom* and analysis*).
from analysis import outputs as ANALYSIS_NAMES

FIGURES = list(ANALYSIS_NAMES.FIGURES)
TABLES = list(ANALYSIS_NAMES.TABLES)
ANALYSIS_OUTPUTS = ANALYSIS_NAMES.all_files(ANALYSIS)


def report_labels(name, captions):
    """Labels of one figure or table in Snakemake's report: its name and caption (braces escaped for Snakemake)."""
    return {"name": name, "caption": captions[name].replace("{", "{{").replace("}", "}}")}


def regenerate_target(wildcards):
    """Inputs of the `regenerate` target: the analysis in regenerate mode; a pointer to that mode otherwise."""
    if not config["regenerate"]:
        raise WorkflowError(
            "regeneration is a mode, not only a target: run `snakemake --cores 2 --config regenerate=true` "
            "(add study=NAME for another study); it includes only the analysis rules, so nothing upstream of "
            "the committed run records can be scheduled"
        )
    return ANALYSIS_OUTPUTS

