"""Synthetic final records from known scaling laws: for tests and for trying the analysis without training.

Every record passes ``rom.records.validate_record``. Losses follow L(N) = E + A N^-alpha in active
non-embedding parameters N, with multiplicative log-normal noise; a RoM run of N_r active parameters gets
the dense loss at ``equivalence * N_r`` (so its true equivalence ratio is known). Training FLOPs are
6 * (active parameters) * tokens, so at a fixed token budget L(C) is a power law as well.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analysis.errors import AnalysisError
from rom.io import atomic_write_json_safe as write_json, atomic_write_text as write_text
from analysis.families import SSM_MIXERS, Family

# Family name -> Family: the families a synthetic record can be (names are looked up here, never parsed).
KNOWN_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (Family(hybrid=h, ssm=m, moe=e) for h in (False, True) for m in SSM_MIXERS for e in (False, True))
}

VOCAB = 4096


def dense_loss(n: float, E: float, A: float, alpha: float) -> float:
    return E + A * n ** -alpha


def synthetic_record(
    *,
    name: str,
    n_active_nonembedding: int,
    loss: float,
    family: str = "mamba",
    role: str = "scaling",
    study: str = "synthetic",
    seq_len: int = 256,
    tokens: int = 2_000_000,
    num_experts: int = 1,
    top_k: int = 1,
    context_multipliers: Sequence[int] = (1, 2, 4),
    ppl_growth: float = 0.0,
    downstream: dict[str, dict[str, float]] | None = None,
    seed: int = 0,
    d_model: int = 256,
    lr: float | None = None,
    model_config: dict[str, Any] | None = None,
    branches: Sequence[tuple[float, float]] = (),
) -> dict[str, Any]:
    """One final record. ``ppl_growth``: loss increase per doubling of the eval length beyond ``seq_len``.
    ``lr``: config.train.lr; ``model_config``: extra config.model fields (e.g. ``{"mamba": {"expand": 4}}``);
    ``branches``: (fraction, validation loss) of WSD cooldown branches (record field ``branches``)."""
    n_active_nonembedding = int(n_active_nonembedding)
    embedding = VOCAB * d_model
    expert_share = 0.75  # fraction of a dense layer's parameters that RoM turns into experts
    total_nonemb = int(n_active_nonembedding * (1 + expert_share * (num_experts - top_k) / max(top_k, 1)))
    active = n_active_nonembedding + embedding
    per_token_fwd = 2.0 * active
    results = []
    for m in context_multipliers:
        lm = loss + ppl_growth * math.log2(m)
        results.append({"context_length": seq_len * m, "loss": lm, "ppl": math.exp(lm),
                        "bpb": lm / math.log(2) / 3.5, "tokens": 65536})
    fam = KNOWN_FAMILIES.get(family)
    if fam is None:
        raise AnalysisError(f"synthetic_record: unknown family {family!r}; known: {sorted(KNOWN_FAMILIES)}")
    pattern = "hybrid" if fam.hybrid else fam.ssm
    mlp = "moe" if fam.moe else "none"
    digest = hashlib.sha256(f"{name}|{n_active_nonembedding}|{family}|{seed}|{role}".encode()).hexdigest()
    run_id = f"{name}-{digest[:10]}"
    steps = max(1, tokens // (8 * seq_len))
    model_cfg = {"d_model": d_model, "pattern": pattern, "hybrid_ssm": fam.ssm if fam.hybrid else "mamba", "mlp": mlp,
                 **(model_config or {})}
    train_cfg: dict[str, Any] = {"tokens": tokens, "seq_len": seq_len, "seed": seed}
    if lr is not None:
        train_cfg["lr"] = lr
    if branches:
        train_cfg.update(schedule="wsd", cooldown_branches=[float(f) for f, _ in branches])
    branch_records = []
    for fraction, b_loss in branches:
        b_steps = max(1, int(steps * fraction))
        b_tokens = b_steps * 8 * seq_len
        branch_records.append({
            "fraction": float(fraction), "tokens": b_tokens, "steps": b_steps,
            "start_step": int(b_steps * 0.8), "passes": float(fraction), "val_loss": float(b_loss),
            "final_train_loss": float(b_loss) - 0.02, "diverged": False, "wall_time_s": 10.0 * fraction + 1.0,
            "branch_time_s": 1.0, "schedule": {"kind": "wsd"}})
    return {
        "schema_version": 1,
        "part": "final",
        "run_id": run_id,
        "name": name,
        "study": study,
        "role": role,
        "family": family,
        "config": {"name": name, "study": study, "role": role, "model": model_cfg,
                   "data": {"source": "sotu"}, "train": train_cfg,
                   "eval": {"context_multipliers": list(context_multipliers)}},
        "config_hash": run_id.rsplit("-", 1)[1],
        "model": {"d_model": d_model, "n_layer": 4, "pattern": pattern, "num_experts": num_experts, "top_k": top_k,
                  "routing": "shared" if fam.routed else "none",
                  "expert_projections": ["conv", "gate", "out"] if fam.routed else [], "mlp": mlp},
        "params": {"total": total_nonemb + embedding, "active": active, "total_nonembedding": total_nonemb,
                   "active_nonembedding": n_active_nonembedding, "embedding": embedding,
                   "components": {"embedding": embedding, "mixer": n_active_nonembedding}},
        "flops": {"per_token_fwd": per_token_fwd, "per_token_train": 3 * per_token_fwd,
                  "train_total": 3 * per_token_fwd * tokens, "seq_len": seq_len,
                  "components": {"mixer": per_token_fwd}, "torch_counter_fwd": None, "fvcore_fwd": None},
        "training": {"tokens": tokens, "steps": steps, "seq_len": seq_len, "batch_size": 8, "passes": 1.0,
                     "wall_time_s": 10.0, "tokens_per_s": tokens / 10.0, "final_train_loss": loss - 0.02,
                     "seed": seed, "device": "cpu", "precision": "fp32", "backend": "reference",
                     "world_size": 1, "diverged": False},
        **({"branches": branch_records} if branch_records else {}),
        "eval": {"tokenizer_bytes_per_token": 3.5, "results": results},
        "downstream": downstream,
        "provenance": {"git_sha": "0123456789abcdef", "config_hash": run_id.rsplit("-", 1)[1],
                       "packages": {"numpy": np.__version__}, "device": "synthetic-cpu",
                       "python": "3.11", "created": "2026-01-01T00:00:00Z"},
        "metrics_file": "metrics.jsonl",
    }


def metrics_lines(record: dict[str, Any], n_steps: int = 20) -> list[dict[str, Any]]:
    """A plausible step metrics log: decaying train loss, val loss every 5 steps, router load for RoM."""
    final = record["training"]["final_train_loss"]
    tokens = record["training"]["tokens"]
    lines = []
    for i in range(1, n_steps + 1):
        frac = i / n_steps
        row: dict[str, Any] = {"step": i, "tokens": int(tokens * frac), "train/loss": final + 3.0 * (1 - frac) ** 2}
        if i % 5 == 0:
            row["val/loss"] = row["train/loss"] + 0.03
        if record["model"]["num_experts"] > 1:
            for layer in range(record["model"]["n_layer"]):
                row[f"router/layer{layer}/load_cv"] = 0.1 + 0.05 * layer * frac
                # Shares of the routed tokens, as the trainer logs them (uniform = 1 / num_experts).
                uniform = 1.0 / record["model"]["num_experts"]
                row[f"router/layer{layer}/load_max"] = uniform * (1.2 + 0.1 * layer)
                row[f"router/layer{layer}/load_min"] = uniform * (0.8 - 0.05 * layer)
        lines.append(row)
    return lines


def write_study(records: Sequence[dict[str, Any]], root: str | Path, metrics: bool = True) -> list[Path]:
    """Write root/<run_id>/final.json (+ metrics.jsonl); return the record paths."""
    paths = []
    for rec in records:
        run_dir = Path(root) / rec["run_id"]
        write_json(run_dir / "final.json", rec)
        if metrics:
            write_text(run_dir / rec["metrics_file"], "".join(json.dumps(l) + "\n" for l in metrics_lines(rec)))
        paths.append(run_dir / "final.json")
    return paths


def scaling_study(
    *,
    E: float = 1.8,
    A: float = 400.0,
    alpha: float = 0.35,
    sizes: Sequence[int] = (2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000, 64_000_000),
    rom_sizes: Sequence[int] = (4_000_000, 16_000_000),
    equivalence: float = 2.0,
    noise: float = 0.0,
    hybrids: bool = True,
    seed: int = 0,
    seq_len: int = 256,
    downstream: bool = True,
) -> list[dict[str, Any]]:
    """Dense Mamba + RoM (+ hybrid pair) scaling runs from known laws; RoM's true equivalence is known."""
    rng = np.random.default_rng(seed)
    records = []

    def noisy(x: float) -> float:
        return x * math.exp(noise * rng.standard_normal()) if noise else x

    def scores(loss: float) -> dict[str, dict[str, float]] | None:
        if not downstream:
            return None
        base = max(0.05, min(0.95, 1.2 - 0.25 * loss))
        return {"lambada_openai": {"acc": base}, "hellaswag": {"acc": base - 0.05, "acc_norm": base},
                "piqa": {"acc": base + 0.1}, "arc_easy": {"acc": base + 0.05},
                "arc_challenge": {"acc": base - 0.2, "acc_norm": base - 0.15}, "winogrande": {"acc": 0.5}}

    fams = [("mamba", "rom", E, A, alpha)]
    if hybrids:
        fams.append(("hybrid-mamba", "hybrid-rom", E - 0.1, A * 0.9, alpha))
    for dense_fam, rom_fam, e, a, al in fams:
        for n in sizes:
            loss = noisy(dense_loss(n, e, a, al))
            records.append(synthetic_record(name=f"{dense_fam}-{n // 1000}k", n_active_nonembedding=n, loss=loss,
                                            family=dense_fam, seq_len=seq_len, ppl_growth=0.02,
                                            downstream=scores(loss), seed=seed))
        for n in rom_sizes:
            loss = noisy(dense_loss(equivalence * n, e, a, al))
            records.append(synthetic_record(name=f"{rom_fam}-{n // 1000}k", n_active_nonembedding=n, loss=loss,
                                            family=rom_fam, num_experts=8, top_k=1, seq_len=seq_len,
                                            ppl_growth=0.005, downstream=scores(loss), seed=seed))
    return records


def pooled_study(
    *,
    E: float = 1.8,
    A: float = 400.0,
    alpha: float = 0.35,
    rom_A: float | None = None,
    rom_alpha: float | None = None,
    equivalence: float = 2.0,
    sizes: Sequence[int] = (1_000_000, 2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000),
    rom_sizes: Sequence[int] = (1_000_000, 3_000_000, 9_000_000),
    seeds: int = 2,
    noise: float = 0.0,
    outliers: Sequence[tuple[str, int, float]] = (),
    seed: int = 0,
    dense_family: str = "mamba",
    rom_family: str = "rom",
) -> list[dict[str, Any]]:
    """Dense and RoM runs from two chosen laws, for recovery tests of the pooled fits.

    Dense: L = E + A N^-alpha. RoM: L = E + rom_A N^-rom_alpha; by default rom_alpha = alpha and rom_A =
    A * equivalence^-alpha, so the true equivalence ratio is ``equivalence`` at every size; another rom_alpha
    makes the ratio depend on N (see ``true_ratio``). ``seeds`` extra runs of role ``seed`` (identical config
    but the seed) at the middle dense and RoM sizes; ``noise`` is the log-space standard deviation of every
    loss (multiplicative log-normal); ``outliers``: (family, size, log shift) added to that run's loss.
    """
    rng = np.random.default_rng(seed)
    rom_alpha = alpha if rom_alpha is None else rom_alpha
    rom_A = A * equivalence ** -alpha if rom_A is None else rom_A
    shifts = {(f, int(n)): s for f, n, s in outliers}
    records = []
    for fam, a, al, ns, experts in ((dense_family, A, alpha, sizes, 1), (rom_family, rom_A, rom_alpha, rom_sizes, 8)):
        middle = ns[len(ns) // 2]
        for n in ns:
            for s in range(1 + (seeds if n == middle else 0)):
                loss = dense_loss(n, E, a, al) * math.exp(noise * rng.standard_normal() + shifts.get((fam, int(n)), 0.0))
                records.append(synthetic_record(name=f"{fam}-{n // 1000}k", n_active_nonembedding=n, loss=loss,
                                                family=fam, role="seed" if s else "scaling", seed=s,
                                                num_experts=experts, top_k=1, context_multipliers=(1,)))
    return records


def true_ratio(n_rom: float, *, E: float = 1.8, A: float = 400.0, alpha: float = 0.35, rom_A: float | None = None,
               rom_alpha: float | None = None, equivalence: float = 2.0) -> float:
    """N_eq / N_r of the laws of ``pooled_study`` at RoM size n_rom."""
    rom_alpha = alpha if rom_alpha is None else rom_alpha
    rom_A = A * equivalence ** -alpha if rom_A is None else rom_A
    gap = rom_A * n_rom ** -rom_alpha  # L_r - E
    return (A / gap) ** (1.0 / alpha) / n_rom


def table(records: Sequence[dict[str, Any]]) -> "pd.DataFrame":
    """The collected table of in-memory records (as ``analysis collect`` builds it, without files)."""
    import pandas as pd

    from analysis.collect import COLUMNS, record_rows

    rows = [row for rec in records for row in record_rows(rec, Path("synthetic") / rec["run_id"] / "final.json")]
    df = pd.DataFrame(rows)
    return df[[c for c in COLUMNS if c in df.columns] + sorted(c for c in df.columns if c not in COLUMNS)]


# The miniature study's shapes (config/studies/miniature.yaml): active non-embedding parameters.
MINIATURE_DENSE = {"mamba-xxs": (131_000, 64), "mamba-xs": (273_000, 96), "mamba-s": (467_000, 128),
                   "mamba-m": (889_000, 160), "mamba-l": (1_510_000, 192), "mamba-xl": (3_066_000, 256)}
MINIATURE_ROM = {"rom-xs": (276_000, 96), "rom-s": (471_000, 128), "rom-m": (895_000, 160)}
MINIATURE_WIDTH = {2: 1_980_000, 3: 2_230_000, 4: 2_480_000, 6: 2_990_000, 8: 3_490_000}  # hybrid d192 by expand
MINIATURE_WHOLE = {128: 880_000, 160: 1_375_000, 224: 2_700_000}  # hybrid at expand 2 by d_model


def miniature_study(
    *,
    E: float = 1.9,
    A: float = 60.0,
    alpha: float = 0.3,
    B: float = 400.0,
    beta: float = 0.35,
    equivalence: float = 1.8,
    hybrid_equivalence: float = 1.5,
    tokens: int = 2 ** 26,
    branches: Sequence[float] = (0.25, 0.5),
    noise: float = 0.0,
    seeds: int = 2,
    width_series: bool = True,
    lr: float = 2e-3,
    lr_penalty: dict[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Records shaped like the ``miniature`` study: every run at ``tokens`` with WSD cooldown branches at
    ``branches`` (their own points), 6 dense Mamba and 3 RoM sizes, seeds at mamba-s / rom-s and at the hybrid
    pair, a hybrid whose Mamba layers widen (expand 2..8; ``width_series=False`` drops expand 3..8) against the
    RoM hybrid at expand 2, the whole-hybrid series (d_model 128/160/224), one routing ablation, and the
    learning-rate check (0.5x / 2x at a quarter of ``tokens`` for the smallest and largest dense and RoM runs).

    Laws: L(N, D) = E + A N^-alpha + B D^-beta (hybrids: E - 0.1); a RoM run of N gets the dense loss at
    ``equivalence * N`` (the RoM hybrid: the dense hybrid's at ``hybrid_equivalence * N``), at every budget.
    ``lr_penalty``: family -> (loss added at 0.5x, at 2x) relative to the 1x branch; default mamba (0.03,
    0.004) and rom (0.02, 0.003): 1x is the best rate for both."""
    rng = np.random.default_rng(seed)
    penalty = {"mamba": (0.03, 0.004), "rom": (0.02, 0.003), **(lr_penalty or {})}

    def law(n: float, d: float, hybrid: bool = False) -> float:
        return (E - (0.1 if hybrid else 0.0)) + A * n ** -alpha + B * d ** -beta

    def noisy(x: float) -> float:
        return x * math.exp(noise * rng.standard_normal()) if noise else x

    def run(name: str, family: str, n: int, n_eq: float, d_model: int, role: str = "scaling", s: int = 0,
            model: dict[str, Any] | None = None, hybrid: bool = False, ppl_growth: float = 0.02) -> dict[str, Any]:
        routed = KNOWN_FAMILIES[family].routed
        loss = noisy(law(n_eq, tokens, hybrid))
        return synthetic_record(
            name=name, n_active_nonembedding=n, loss=loss, family=family, role=role, study="miniature", seq_len=1024,
            tokens=tokens, num_experts=8 if routed else 1, top_k=1, seed=s, d_model=d_model, lr=lr,
            model_config=model, ppl_growth=ppl_growth, downstream=None,
            branches=[(f, noisy(law(n_eq, tokens * f, hybrid))) for f in branches])

    recs = []
    for name, (n, d) in MINIATURE_DENSE.items():
        recs.append(run(name, "mamba", n, n, d))
    for name, (n, d) in MINIATURE_ROM.items():
        recs.append(run(name, "rom", n, equivalence * n, d, model={"rom": {"load_balance_coef": 0.0}},
                        ppl_growth=0.005))
    for s in range(1, seeds + 1):
        n, d = MINIATURE_DENSE["mamba-s"]
        recs.append(run(f"mamba-s-seed{s}", "mamba", n, n, d, "seed", s))
        n, d = MINIATURE_ROM["rom-s"]
        recs.append(run(f"rom-s-seed{s}", "rom", n, equivalence * n, d, "seed", s,
                        model={"rom": {"load_balance_coef": 0.0}}, ppl_growth=0.005))
    n, d = MINIATURE_ROM["rom-s"]
    recs.append(run("rom-s-lb", "rom", n, equivalence * n * 0.95, d, "ablation",
                    model={"rom": {"load_balance_coef": 0.01}}, ppl_growth=0.005))
    hyb = {"attention": {"n_heads": 4, "window": 512}}
    rom_hyb = {**hyb, "rom": {"load_balance_coef": 0.0}, "mamba": {"expand": 2}}
    for e, n in MINIATURE_WIDTH.items():
        if e == 2 or width_series:
            recs.append(run(f"hybrid-e{e}", "hybrid-mamba", n, n, 192, model={**hyb, "mamba": {"expand": e}},
                            hybrid=True))
    n_rh = MINIATURE_WIDTH[2]
    recs.append(run("rom-hybrid-e2", "hybrid-rom", n_rh, hybrid_equivalence * n_rh, 192, model=rom_hyb, hybrid=True,
                    ppl_growth=0.005))
    for s in range(1, seeds + 1):
        recs.append(run(f"hybrid-e2-seed{s}", "hybrid-mamba", n_rh, n_rh, 192, "seed", s,
                        model={**hyb, "mamba": {"expand": 2}}, hybrid=True))
        recs.append(run(f"rom-hybrid-e2-seed{s}", "hybrid-rom", n_rh, hybrid_equivalence * n_rh, 192, "seed", s,
                        model=rom_hyb, hybrid=True, ppl_growth=0.005))
    for d, n in MINIATURE_WHOLE.items():
        recs.append(run(f"hybrid-d{d}", "hybrid-mamba", n, n, d, model={**hyb, "mamba": {"expand": 2}}, hybrid=True))
    # the learning-rate check: a quarter of the budget, no branches, 0.5x and 2x the rate
    quarter = tokens // 4
    checks = [("mamba-xxs", "mamba", MINIATURE_DENSE["mamba-xxs"], 1.0, None),
              ("mamba-xl", "mamba", MINIATURE_DENSE["mamba-xl"], 1.0, None),
              ("rom-xs", "rom", MINIATURE_ROM["rom-xs"], equivalence, {"rom": {"load_balance_coef": 0.0}}),
              ("rom-m", "rom", MINIATURE_ROM["rom-m"], equivalence, {"rom": {"load_balance_coef": 0.0}})]
    for base, family, (n, d), k, model in checks:
        for mult, extra in ((0.5, penalty[family][0]), (2.0, penalty[family][1])):
            loss = noisy(law(k * n, quarter)) + extra
            recs.append(synthetic_record(
                name=f"{base}-lr{mult:g}", n_active_nonembedding=n, loss=loss, family=family, role="ablation",
                study="miniature", seq_len=1024, tokens=quarter, num_experts=8 if family == "rom" else 1, top_k=1,
                d_model=d, lr=lr * mult, model_config=model, downstream=None))
    return recs
