"""RoM checkpoints as an lm-eval model: ``rom lm-eval --model rom --model_args run_dir=RUN_DIR --device cuda ...``.

Importing this module registers the model class under the name ``rom``; lm-eval's own ``lm_eval`` command
cannot import it, so ``rom lm-eval`` (rom/commands/lm_eval.py) imports it and then runs lm-eval's CLI. All scoring is delegated to
``rom.eval.scorer.LMScorer`` (shared with the built-in scorer, which is what makes the two agree exactly).

model_args: run_dir (required unless a scorer is passed from Python), device (cpu | cuda | cuda:N, default
cpu), batch_size (default 8), max_length (tokens kept, left-truncating longer inputs; default: the run's
training sequence length), tokenizer (path to the tokenizer.json; default: found from the run directory).
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from rom.eval import scorer as scorer_module
from rom.eval.scorer import LMScorer, ScorerError

DEFAULT_BATCH_SIZE = 8


def _int_or_default(value: Any, default: int | None, name: str) -> int | None:
    """lm-eval passes model args as strings and batch_size may be 'auto'."""
    if value is None or value == "" or (isinstance(value, str) and value.startswith("auto")):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ScorerError(f"rom model arg {name}={value!r}: expected an integer") from None


@register_model("rom")
class RomLM(LM):
    def __init__(self, run_dir: str | None = None, device: str | None = "cpu",
                 batch_size: int | str | None = DEFAULT_BATCH_SIZE, max_length: int | str | None = None,
                 tokenizer: str | None = None, max_batch_size: int | None = None,
                 scorer: LMScorer | None = None, show_progress: bool = True, **unused: Any) -> None:
        super().__init__()
        if scorer is None:
            if not run_dir:
                raise ScorerError("the rom lm-eval model needs model_args run_dir=RUN_DIR")
            # looked up at call time (not bound at import), so the module stays patchable in tests
            scorer, _ = scorer_module.load_scorer(
                run_dir,
                device=device or "cpu",
                batch_size=_int_or_default(batch_size, DEFAULT_BATCH_SIZE, "batch_size"),
                max_length=_int_or_default(max_length, None, "max_length"),
                tokenizer=tokenizer,
                show_progress=show_progress,
            )
        self.scorer = scorer
        self._device = scorer.device

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def tokenizer_name(self) -> str:
        return "rom-" + str(getattr(self.scorer.tokenizer, "file_hash", "tokenizer"))

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood([tuple(r.args[:2]) for r in requests])

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        return self.scorer.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self.scorer.generate_until([r.args[0] for r in requests], [dict(r.args[1] or {}) for r in requests])


def set_offline_env() -> None:
    """No hub access: without these, datasets / huggingface_hub retry network lookups for ~20 s."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


def evaluate_with_lm_eval(scorer: LMScorer, tasks_dir: str, task_names: list[str],
                          limit: int | None = None) -> tuple[dict[str, dict], dict[str, int]]:
    """Run the exported tasks through lm-eval's ``simple_evaluate``: ({task: metrics}, {task: documents}).

    Metrics use our task keys (``hellaswag``, not ``rom_hellaswag``); stderrs of the mean metrics are computed
    from lm-eval's per-sample values with lm-eval's formula (bootstrap is off: it is random and slow).
    """
    set_offline_env()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from rom.eval.scorer import mean_stderr
    from rom.eval.tasks import get_task, load_manifest

    manifest = load_manifest(tasks_dir)
    missing = [n for n in task_names if n not in manifest["tasks"]]
    if missing:
        raise ScorerError(f"{tasks_dir}: tasks {missing} were not exported (rom export-tasks --out {tasks_dir})")
    lm_names = {get_task(n).lm_eval_task: n for n in task_names}
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    out = simple_evaluate(model=RomLM(scorer=scorer), tasks=list(lm_names), task_manager=manager, limit=limit,
                          bootstrap_iters=0, log_samples=True)
    results, counts = {}, {}
    for lm_name, name in lm_names.items():
        row = out["results"][lm_name]
        samples = sorted(out["samples"][lm_name], key=lambda s: s["doc_id"])
        metrics: dict[str, float | None] = {}
        for metric in get_task(name).metrics:
            metrics[metric] = float(row[f"{metric},none"])
            if metric != "perplexity":
                metrics[f"{metric}_stderr"] = mean_stderr([float(s[metric]) for s in samples])
        results[name] = metrics
        counts[name] = len(samples)
    return results, counts
