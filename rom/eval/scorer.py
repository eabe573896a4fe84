"""Scoring text with a RoM language model, and the built-in downstream scorer that needs no lm-eval.

``LMScorer`` is the one engine behind both paths: the lm-eval model class (``rom.eval.lm_eval_model``) calls it
for lm-eval's requests, and ``evaluate_builtin`` calls it for the requests ``rom.eval.tasks.doc_requests``
builds. Batches are formed from the content of the requests (sorted by token length, then tokens), never from
their arrival order, so the same set of requests gives bit-identical log-likelihoods on either path.

Semantics follow lm-eval's conventions for causal LMs: trailing spaces of a context move to the continuation
before tokenizing; the continuation's tokens are the tail of the tokenized whole; an empty context is the EOS
token; sequences longer than ``max_length + 1`` tokens lose tokens on the left; acc_norm divides each choice's
log-likelihood by the choice's length in characters (lm-eval's ``completion_len``); perplexity is
exp(-mean log-likelihood). A continuation longer than ``max_length`` is scored in windows (see ``windows``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rom.errors import RomError
from rom.eval.tasks import DocRequests, doc_requests, get_task, iter_task_docs

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256


class ScorerError(RomError, ValueError):
    """A request cannot be scored as asked (too long, unsupported generation option, bad argument)."""


def _logits(out: Any) -> torch.Tensor:
    """The model contract returns LMOutput(.logits); a bare tensor is accepted too."""
    return out.logits if hasattr(out, "logits") else out


class LMScorer:
    """Log-likelihoods and greedy generation for a model mapping (B, L) token ids to (B, L, vocab) logits."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: str | torch.device = "cpu",
                 batch_size: int = 8, max_length: int = 2048, show_progress: bool = True) -> None:
        if int(batch_size) < 1:
            raise ScorerError(f"batch_size must be >= 1, got {batch_size!r}")
        if int(max_length) < 2:
            raise ScorerError(f"max_length must be >= 2 tokens, got {max_length!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.eos_id = int(tokenizer.eos_id)
        self.show_progress = show_progress

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:  # " word" tokenizes as one piece; keep the space with the continuation
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            return [self.eos_id], self.encode(continuation)
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    # ------------------------------------------------------------------ log-likelihoods
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), whether greedy decoding would produce it) per pair."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in pairs])

    def windows(self, ctx: list[int], cont: list[int]) -> list[tuple[tuple[int, ...], int, tuple[int, ...]]]:
        """(model input, number of predicted tokens, predicted tokens) windows that score ``cont`` after ``ctx``.

        Every window holds at most ``max_length`` input tokens. Usually one window does (a long context loses
        tokens on the left); a continuation longer than ``max_length`` is cut into chunks, each predicted with
        as much preceding text as fits, so each token is predicted once (lm-eval's rolling scheme).
        """
        if not ctx:
            raise ScorerError("a context of at least one token is needed (use EOS for an empty context)")
        if not cont:
            raise ScorerError("cannot score an empty continuation")
        full = ctx + cont
        out = []
        for start in range(0, len(cont), self.max_length):
            pred = cont[start:start + self.max_length]
            end = len(ctx) + start + len(pred)  # index in `full` just after the last predicted token
            inp = full[max(0, end - (self.max_length + 1)):end - 1]
            out.append((tuple(inp), len(pred), tuple(pred)))
        return out

    @torch.inference_mode()
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        per_request = [self.windows(ctx, cont) for ctx, cont in requests]
        unique = sorted({w for ws in per_request for w in ws}, key=lambda k: (-len(k[0]), k[0], k[2]))
        scores: dict[tuple, tuple[float, bool]] = {}  # content order only: batches do not depend on arrival
        batches = range(0, len(unique), self.batch_size)
        for start in tqdm(batches, desc="loglikelihood", disable=not self.show_progress or len(batches) < 2):
            batch = unique[start:start + self.batch_size]
            width = len(batch[0][0])
            ids = torch.full((len(batch), width), self.eos_id, dtype=torch.long)
            for row, (inp, _, _) in enumerate(batch):
                ids[row, :len(inp)] = torch.tensor(inp, dtype=torch.long)  # right padding: causal, harmless
            logits = _logits(self.model(ids.to(self.device)))
            for row, key in enumerate(batch):
                inp, n_pred, pred = key
                # logits at position t predict token t+1: the last n_pred inputs predict the window's tokens
                logprobs = F.log_softmax(logits[row, len(inp) - n_pred:len(inp)].float(), dim=-1)
                target = torch.tensor(pred, dtype=torch.long, device=logprobs.device)
                ll = float(logprobs.gather(-1, target[:, None]).double().sum())
                scores[key] = (ll, bool((logprobs.argmax(dim=-1) == target).all()))
        results = []
        for ws in per_request:
            parts = [scores[w] for w in ws]
            results.append((parts[0][0] if len(parts) == 1 else math.fsum(p[0] for p in parts),
                            all(p[1] for p in parts)))
        return results

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Log-likelihood of each whole text after EOS, in windows of ``max_length`` (lm-eval's rolling)."""
        return [ll for ll, _ in self.loglikelihood_tokens([([self.eos_id], self.encode(t)) for t in texts])]

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate_until(self, contexts: Sequence[str], gen_kwargs: Sequence[dict]) -> list[str]:
        """Greedy continuation of each context, cut at the first stop string (``until``) or EOS."""
        outputs: list[str] = [""] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: (-len(contexts[i]), contexts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc="generate_until",
                          disable=not self.show_progress or len(order) <= self.batch_size):
            idx = order[start:start + self.batch_size]
            # one batch shares generation settings; split where they differ
            groups: dict[str, list[int]] = {}
            for i in idx:
                groups.setdefault(json.dumps(gen_kwargs[i], sort_keys=True, default=str), []).append(i)
            for members in groups.values():
                for i, text in zip(members, self._generate([contexts[i] for i in members], gen_kwargs[members[0]])):
                    outputs[i] = text
        return outputs

    def _generate(self, contexts: list[str], kwargs: dict) -> list[str]:
        kwargs = dict(kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0.0:
            raise ScorerError("the rom model generates greedily only (do_sample=False, temperature=0)")
        if kwargs:
            log.warning("generate_until ignores options %s", sorted(kwargs))
        budget = max(1, self.max_length - max_gen)
        seqs = [(self.encode(c) or [self.eos_id])[-budget:] for c in contexts]
        gen: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        texts = [""] * len(contexts)
        for _ in range(max_gen):
            active = [i for i in range(len(seqs)) if not done[i]]
            if not active:
                break
            rows = [(seqs[i] + gen[i])[-self.max_length:] for i in active]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.eos_id, dtype=torch.long)
            for r, toks in enumerate(rows):
                ids[r, :len(toks)] = torch.tensor(toks, dtype=torch.long)  # right padding: causal, harmless
            logits = _logits(self.model(ids.to(self.device)))
            for r, i in enumerate(active):
                nxt = int(logits[r, len(rows[r]) - 1].argmax())
                if nxt == self.eos_id:
                    done[i] = True
                    continue
                gen[i].append(nxt)
                texts[i] = self.tokenizer.decode(gen[i])
                if any(s and s in texts[i] for s in until):
                    done[i] = True
        for i, text in enumerate(texts):
            for s in until:
                if s:
                    text = text.split(s)[0]
            texts[i] = text
        return texts


# ---------------------------------------------------------------------------------- metrics (lm-eval's rules)
def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Sample standard deviation over sqrt(n), as lm-eval reports for mean metrics."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def doc_metrics(task: str, req: DocRequests, scores: Sequence[tuple[float, bool]]) -> dict[str, float]:
    """Per-document metric values for one task (lm-eval's ``process_results`` for these tasks)."""
    spec = get_task(task)
    if spec.output_type == "loglikelihood":
        ((ll, greedy),) = scores
        return {"perplexity": ll, "acc": int(greedy)}
    lls = [s[0] for s in scores]
    completion_len = np.array([float(len(c)) for c in req.choices])
    pred = np.argmax(lls)
    pred_norm = np.argmax(lls / completion_len)
    out = {"acc": 1.0 if pred == req.gold else 0.0, "acc_norm": 1.0 if pred_norm == req.gold else 0.0}
    return {k: v for k, v in out.items() if k in spec.metrics}


def aggregate(task: str, per_doc: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """Task scores from per-document values: means, lm-eval's perplexity, and stderr of the means."""
    spec = get_task(task)
    out: dict[str, float | None] = {}
    for metric in spec.metrics:
        values = [d[metric] for d in per_doc]
        if metric == "perplexity":
            out["perplexity"] = math.exp(-mean(values))
        else:
            out[metric] = mean(values)
            out[f"{metric}_stderr"] = mean_stderr(values)
    return out


@dataclass
class TaskRun:
    """The requests of one task, as the built-in scorer builds them."""

    name: str
    docs: list[dict]
    requests: list[DocRequests] = field(default_factory=list)


def evaluate_builtin(scorer: LMScorer, tasks_dir: str | Path, task_names: Iterable[str],
                     limit: int | None = None) -> tuple[dict[str, dict], dict[str, int]]:
    """Score the exported tasks without lm-eval: ({task: metrics}, {task: documents scored}).

    All tasks' requests go to the scorer in one call, as lm-eval sends them, so batches (and so the
    floating-point results) are the same as under lm-eval.
    """
    runs = []
    for name in task_names:
        docs = list(iter_task_docs(tasks_dir, name, limit))
        if not docs:
            raise ScorerError(f"{tasks_dir}: task {name} has no documents (limit={limit})")
        runs.append(TaskRun(name, docs, [doc_requests(name, d) for d in docs]))
    pairs = [p for run in runs for req in run.requests for p in req.pairs]
    log.info("built-in scorer: %d requests over %s", len(pairs), [r.name for r in runs])
    scores = iter(scorer.loglikelihood(pairs))
    results, counts = {}, {}
    for run in runs:
        per_doc = [doc_metrics(run.name, req, [next(scores) for _ in req.pairs]) for req in run.requests]
        results[run.name] = aggregate(run.name, per_doc)
        counts[run.name] = len(per_doc)
    return results, counts


# ---------------------------------------------------------------------------------- loading a trained run
def find_tokenizer(run_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """The run's tokenizer file: ``explicit``, else RUN_DIR/tokenizer.json, else a path the train part names."""
    run_dir = Path(run_dir)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ScorerError(f"tokenizer {path} does not exist")
        return path
    candidates = [run_dir / "tokenizer.json"]
    train_part = run_dir / "train.json"
    if train_part.is_file():
        try:
            part = json.loads(train_part.read_text())
        except json.JSONDecodeError:
            part = {}
        for node in (part, part.get("data", {}), part.get("training", {}), part.get("provenance", {})):
            if isinstance(node, dict):
                for key in ("tokenizer_path", "tokenizer"):
                    value = node.get(key)
                    if isinstance(value, str) and value:
                        candidates.append(Path(value))
    for path in candidates:
        if path.is_file():
            return path
    raise ScorerError(f"{run_dir}: no tokenizer found (looked at {[str(c) for c in candidates]}); "
                      "pass the tokenizer.json the run was trained with (--tokenizer / tokenizer=...)")


def load_scorer(run_dir: str | Path, device: str = "cpu", batch_size: int = 8, max_length: int | None = None,
                tokenizer: str | Path | None = None, show_progress: bool = True) -> tuple[LMScorer, Any]:
    """An LMScorer for a trained run (its model file + tokenizer); returns (scorer, RunConfig).

    ``max_length`` defaults to the training sequence length: longer inputs are left-truncated to it.
    """
    from rom.data.tokenizer import load_tokenizer
    from rom.models.files import load_trained_model

    model, cfg = load_trained_model(run_dir, device)
    tok_path = find_tokenizer(run_dir, tokenizer)
    tok = load_tokenizer(tok_path)
    if tok.vocab_size > cfg.model.vocab_size:
        raise ScorerError(f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model in {run_dir} only "
                          f"{cfg.model.vocab_size}: not the tokenizer this run was trained with")
    length = int(max_length) if max_length else int(cfg.train.seq_len)
    return LMScorer(model, tok, device=device, batch_size=batch_size, max_length=length,
                    show_progress=show_progress), cfg


__all__ = ["LMScorer", "ScorerError", "evaluate_builtin", "doc_metrics", "aggregate", "load_scorer",
           "find_tokenizer"]
