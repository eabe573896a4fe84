"""Pooled dense + RoM fits, seed noise, the paper-scale prediction and the FLOP conventions (analysis)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.errors import read_json
from rom.io import atomic_write_json_safe as write_json
from analysis.conventions import HEAD_COLUMN, flops_without_head
from analysis.fit import FitStatus
from analysis.noise import estimate_noise, seed_groups
from analysis.pooled import (PooledFit, PooledX, _Problem, batched_fit, fit_pooled, quantity, slope, x_ratio)
from analysis.prediction import Prediction, choose_prediction, predict_at
from analysis.synthetic import pooled_study, synthetic_record, table, true_ratio


def test_exact_recovery_of_a_constant_ratio_without_noise() -> None:
    df = table(pooled_study(equivalence=2.5, noise=0.0, seeds=0))
    fit = fit_pooled(df, "mamba", "rom", bootstrap=0)
    assert fit.status == FitStatus.CONVERGED, fit.message
    assert fit.params["E"] == pytest.approx(1.8, rel=1e-4)
    assert fit.params["alpha"] == pytest.approx(0.35, rel=1e-4)
    assert fit.get("ratio").value == pytest.approx(2.5, rel=1e-4)
    assert fit.ci is None and "bootstrap disabled" in fit.ci_note
    assert fit.n_points == 9 and fit.n_units == 9 and fit.dof == 9 - 4


def test_per_family_exponents_recover_an_n_dependent_ratio_and_its_slope() -> None:
    df = table(pooled_study(rom_alpha=0.32, noise=0.0, seeds=0))
    fit = fit_pooled(df, "mamba", "rom", shared_exponent=False, bootstrap=0)
    assert fit.status == FitStatus.CONVERGED, fit.message
    n_max = 9_000_000
    assert fit.get("ratio").at == n_max
    assert fit.get("ratio").value == pytest.approx(true_ratio(n_max, rom_alpha=0.32), rel=1e-3)
    assert fit.get("slope").value == pytest.approx(0.32 / 0.35 - 1, abs=1e-3)
    assert x_ratio(fit.params, "mamba", "rom", 1.3e9) == pytest.approx(true_ratio(1.3e9, rom_alpha=0.32), rel=1e-2)


def test_ratio_and_saving_arithmetic() -> None:
    p = {"E": 1.0, "A[d]": 8.0, "A[r]": 2.0, "alpha": 0.5}
    assert x_ratio(p, "d", "r") == pytest.approx(16.0)  # (8/2)^(1/0.5)
    assert quantity(PooledX.PARAMS, 16.0) == 16.0 and quantity(PooledX.FLOPS, 4.0) == 0.75
    assert slope(p, "d", "r") == 0.0
    q = {"E": 1.0, "A[d]": 8.0, "A[r]": 2.0, "alpha[d]": 0.5, "alpha[r]": 0.6}
    # equal loss: 8 N_eq^-0.5 = 2 x^-0.6  ->  N_eq = (4 x^0.6)^2
    for x in (1e3, 1e6):
        assert x_ratio(q, "d", "r", x) == pytest.approx((4 * x ** 0.6) ** 2 / x, rel=1e-9)
    assert slope(q, "d", "r") == pytest.approx(0.2)


def test_too_few_points_and_exactly_determined() -> None:
    recs = pooled_study(sizes=(2_000_000,), rom_sizes=(2_000_000,), seeds=0)
    fit = fit_pooled(table(recs), "mamba", "rom", bootstrap=10)
    assert fit.status == FitStatus.TOO_FEW_POINTS and fit.params is None and fit.derived == ()
    assert len(fit.points) == 2  # listed, not dropped
    exact = fit_pooled(table(pooled_study(sizes=(1e6, 4e6, 16e6), rom_sizes=(4e6,), seeds=0)), "mamba", "rom",
                       bootstrap=10)
    assert exact.dof == 0 and exact.ci is None and "exactly determined" in exact.ci_note
    free = fit_pooled(table(pooled_study(rom_sizes=(4_000_000,), seeds=0)), "mamba", "rom", shared_exponent=False)
    assert free.status == FitStatus.TOO_FEW_POINTS and "1 distinct rom" in free.message


def test_excluded_runs_are_listed() -> None:
    recs = pooled_study(seeds=0)
    recs.append(synthetic_record(name="abl", n_active_nonembedding=3_000_000, loss=3.0, family="rom", role="ablation",
                                 num_experts=8, context_multipliers=(1,)))
    fit = fit_pooled(table(recs), "mamba", "rom", bootstrap=0)
    assert any("role=ablation" in why for _, why in fit.excluded)


def test_seed_groups_and_noise_estimate() -> None:
    df = table(pooled_study(seeds=2, noise=0.002, seed=4))
    groups = seed_groups(df)
    assert set(groups) == {"mamba", "rom"} and all(len(g) == 1 and len(g[0]) == 3 for g in groups.values())
    noise = estimate_noise(df)
    for fam in ("mamba", "rom"):
        y = np.log(groups[fam][0]["loss_nats"].to_numpy(float))
        assert noise[fam].sigma_log == pytest.approx(np.std(y, ddof=1)) and noise[fam].dof == 2
        assert noise[fam].source == "seeds"
    only_rom = table(pooled_study(seeds=0) + [r for r in pooled_study(seeds=2, seed=4) if r["role"] == "seed"
                                              and r["family"] == "rom"])
    borrowed = estimate_noise(only_rom)
    assert borrowed["mamba"].source == "seeds of rom" and borrowed["mamba"].dof == 2
    none = estimate_noise(table(pooled_study(seeds=0)))
    assert none["rom"].dof == 0 and math.isnan(none["rom"].sigma_log)


def test_no_seeds_falls_back_to_residual_noise() -> None:
    fit = fit_pooled(table(pooled_study(seeds=0, noise=0.002, seed=1)), "mamba", "rom", bootstrap=30)
    assert all(n.source == "fit residuals" for n in fit.noise.values())
    assert {b.kind: b.ok for b in fit.bootstraps} == {"runs": 30, "noise": 30}
    assert "residual spread" in fit.message


def test_batched_fit_matches_lbfgsb() -> None:
    df = table(pooled_study(noise=0.002, seed=2))
    fit = fit_pooled(df, "mamba", "rom", bootstrap=0)
    rng = np.random.default_rng(0)
    pts = fit.points
    fam = np.asarray([0 if p.family == "mamba" else 1 for p in pts])
    x = np.asarray([p.x for p in pts])
    ref = float(np.exp(np.log(x).mean()))
    base = _Problem(np.log(x / ref), fam, None, np.log([p.loss for p in pts]), 2, True, None, None)
    theta, _, _ = base.optimise(base.starts())
    logy = np.log([p.pred for p in pts])[None, :] + 0.003 * rng.standard_normal((5, len(pts)))
    th, ok = batched_fit(base, theta, logy, np.ones_like(logy))
    assert ok.all()
    for b in range(5):
        pb = base.with_data(logy=logy[b])
        ref_th, ref_val, _ = pb.optimise([theta])
        assert pb.objective(th[b])[0] <= ref_val * (1 + 1e-6) + 1e-15
        np.testing.assert_allclose(th[b], ref_th, rtol=2e-3, atol=2e-4)


def test_run_bootstrap_draws_runs_not_points() -> None:
    df = table(pooled_study(noise=0.002, seed=3, seeds=0))
    # Two points of one run (a cooldown branch): they must be drawn together.
    big = df[df["run_id"] == df[df["family"] == "mamba"]["run_id"].iloc[-1]].copy()
    big["run_id"] = big["run_id"] + "-branch"
    big["train_tokens"] = big["train_tokens"] // 2
    big["loss_nats"] = big["loss_nats"] + 0.05
    big["source_run_id"] = df[df["family"] == "mamba"]["run_id"].iloc[-1]
    df2 = pd.concat([df.assign(source_run_id=""), big], ignore_index=True)
    fit = fit_pooled(df2, "mamba", "rom", bootstrap=20)
    assert fit.token_term and "B" in fit.params and fit.n_points == fit.n_units + 1
    assert {p.unit for p in fit.points if p.run_id.endswith("-branch")} == {big["source_run_id"].iloc[0]}


def test_pooled_fit_round_trips_through_json(tmp_path) -> None:
    df = table(pooled_study(noise=0.002, seed=5))
    fit = fit_pooled(df, "mamba", "rom", shared_exponent=False, bootstrap=20)
    write_json(tmp_path / "f.json", fit.to_dict())
    back = PooledFit.from_dict(read_json(tmp_path / "f.json", "pooled fit"))
    assert back == fit
    pred = predict_at(fit)
    assert Prediction.from_dict(json.loads(json.dumps(pred.to_dict()))) == pred


def test_prediction_uses_the_per_family_exponents_and_brackets_truth() -> None:
    df = table(pooled_study(noise=0.0005, seed=6, rom_alpha=0.33))
    fits = [fit_pooled(df, "mamba", "rom", shared_exponent=s, bootstrap=60) for s in (True, False)]
    pred = choose_prediction(fits)
    assert pred.fit_key.startswith("pooled-free:") and pred.n_active == 1.3e9 and pred.quantity == "ratio"
    assert pred.extrapolation == pytest.approx(1.3e9 / 9e6)
    lo, hi = pred.interval
    assert lo < pred.value < hi
    assert lo <= true_ratio(1.3e9, rom_alpha=0.33) <= hi
    shared_only = choose_prediction([fits[0]])
    assert shared_only.fit_key.startswith("pooled:") and "does not change with N" in shared_only.note


def test_saving_fits_and_flops_without_head() -> None:
    df = table(pooled_study(noise=0.0, seeds=0))
    fit = fit_pooled(df, "mamba", "rom", kind=PooledX.FLOPS, bootstrap=0)
    assert fit.status == FitStatus.CONVERGED and fit.get("saving") is not None
    # synthetic C = 6 (N + embedding) D: the saving is below 1 - 1/ratio because the embedding FLOPs dilute it
    assert 0 < fit.get("saving").value
    df2 = df.copy()
    df2[HEAD_COLUMN] = 0.25 * df2["flops_per_token_fwd"]
    np.testing.assert_allclose(flops_without_head(df2), 0.75 * df2["flops_train_total"])
    nohead = fit_pooled(df2, "mamba", "rom", kind=PooledX.FLOPS_NO_HEAD, bootstrap=0)
    assert nohead.ok and "head" in nohead.x_column
    wall = fit_pooled(df, "mamba", "rom", kind=PooledX.WALL, bootstrap=0)
    assert wall.x_column == "wall_time_s"
