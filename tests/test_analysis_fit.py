"""analysis.fit: parameter recovery, statuses, bootstrap determinism, serialisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect
from analysis.fit import (
    FitKind,
    FitResult,
    FitStatus,
    FlopConvention,
    ParamConvention,
    fit_all,
    fit_family,
    fits_document,
    inverse,
    load_fits,
    power_law_inverse,
    predict,
)
from analysis.synthetic import scaling_study, synthetic_record, write_study

E, A, ALPHA = 1.8, 400.0, 0.35
SIZES = tuple(1_000_000 * 2**i for i in range(8))


def _table(tmp_path: Path, records: list[dict]) -> pd.DataFrame:
    return collect(write_study(records, tmp_path / "raw", metrics=False))


def _dense(tmp_path: Path, noise: float, seed: int = 0, sizes: tuple[int, ...] = SIZES) -> pd.DataFrame:
    return _table(tmp_path, scaling_study(E=E, A=A, alpha=ALPHA, sizes=sizes, rom_sizes=(), noise=noise,
                                          seed=seed, hybrids=False, downstream=False))


def test_exact_recovery_without_noise(tmp_path: Path) -> None:
    fit = fit_family(_dense(tmp_path, 0.0), "mamba", FitKind.PARAMS, bootstrap=0)
    assert fit.status == FitStatus.CONVERGED, fit.message
    assert fit.params["E"] == pytest.approx(E, rel=1e-6)
    assert fit.params["A"] == pytest.approx(A, rel=1e-5)
    assert fit.params["alpha"] == pytest.approx(ALPHA, rel=1e-6)
    assert max(abs(p.log_residual) for p in fit.points) < 1e-8
    assert fit.param_convention == "active_nonembedding" and fit.flop_convention == "train_total"
    assert fit.x_columns == ("params_active_nonembedding",) and fit.dof == len(SIZES) - 3


def test_recovery_with_noise_and_ci_covers_truth(tmp_path: Path) -> None:
    fit = fit_family(_dense(tmp_path, 0.003, seed=7), "mamba", FitKind.PARAMS, bootstrap=60, seed=1)
    assert fit.status == FitStatus.CONVERGED, fit.message
    assert fit.params["alpha"] == pytest.approx(ALPHA, abs=0.05)
    assert fit.params["E"] == pytest.approx(E, abs=0.15)
    assert fit.ci is not None and fit.bootstrap.ok >= 30
    lo, hi = fit.ci["alpha"]
    assert lo <= fit.params["alpha"] <= hi and lo <= ALPHA <= hi


def test_bootstrap_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    df = _dense(tmp_path, 0.003, seed=2, sizes=SIZES[:6])
    a = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=20, seed=5)
    b = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=20, seed=5)
    c = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=20, seed=6)
    assert a.bootstrap.samples == b.bootstrap.samples and a.ci == b.ci
    assert a.bootstrap.samples != c.bootstrap.samples


def test_too_few_points_gives_status(tmp_path: Path) -> None:
    df = _dense(tmp_path, 0.0, sizes=SIZES[:2])
    fit = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=10)
    assert fit.status == FitStatus.TOO_FEW_POINTS and fit.params is None and not fit.ok
    assert fit.n_points == 2 and fit.dof == -1 and "2 distinct" in fit.message
    # No points at all (family absent) is a status too.
    assert fit_family(df, "rom", FitKind.PARAMS).status == FitStatus.TOO_FEW_POINTS


def test_exactly_determined_fit_has_no_ci(tmp_path: Path) -> None:
    fit = fit_family(_dense(tmp_path, 0.0, sizes=SIZES[:3]), "mamba", FitKind.PARAMS, bootstrap=20)
    assert fit.ok and fit.dof == 0
    assert fit.ci is None and "exactly determined" in fit.ci_note
    assert max(abs(p.log_residual) for p in fit.points) < 1e-6


def test_fixed_E_reduces_free_parameters(tmp_path: Path) -> None:
    df = _dense(tmp_path, 0.0, sizes=SIZES[:3])
    fit = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=20, fixed_E=E)
    assert fit.ok and fit.dof == 1 and fit.fixed == {"E": E}
    assert fit.params["alpha"] == pytest.approx(ALPHA, rel=1e-5)
    assert fit.ci is not None and set(fit.ci) == {"A", "alpha"}
    assert all(p["E"] == E for p in fit.sample_params())
    two = fit_family(_dense(tmp_path / "b", 0.0, sizes=SIZES[:2]), "mamba", FitKind.PARAMS, bootstrap=0, fixed_E=E)
    assert two.ok and two.dof == 0


def test_hit_bound_when_loss_does_not_fall(tmp_path: Path) -> None:
    recs = [synthetic_record(name=f"m{i}", n_active_nonembedding=n, loss=3.0 + 0.01 * i)
            for i, n in enumerate(SIZES[:5])]
    fit = fit_family(_table(tmp_path, recs), "mamba", FitKind.PARAMS, bootstrap=0)
    assert fit.status == FitStatus.HIT_BOUND and "alpha=0 at lower bound 0" in fit.message


def test_flops_fit_and_conventions(tmp_path: Path) -> None:
    df = _dense(tmp_path, 0.0)
    fit = fit_family(df, "mamba", FitKind.FLOPS, ParamConvention.ACTIVE, FlopConvention.SIX_ND, bootstrap=0)
    assert fit.ok and fit.param_names == ("E", "B", "beta")
    assert fit.flop_convention == "6ND" and fit.param_convention == "active"
    # With 6ND on active non-embedding params at a fixed budget, L(C) is the L(N) law rescaled exactly.
    fit_c = fit_family(df, "mamba", FitKind.FLOPS, flop_convention=FlopConvention.SIX_ND, bootstrap=0)
    assert fit_c.params["beta"] == pytest.approx(ALPHA, rel=1e-5)
    assert fit_c.params["E"] == pytest.approx(E, rel=1e-5)


def test_joint_fit_needs_varying_budgets_and_recovers(tmp_path: Path) -> None:
    df = _dense(tmp_path, 0.0)
    assert fit_family(df, "mamba", FitKind.JOINT).status == FitStatus.TOO_FEW_POINTS
    e, a, al, b, be = 1.7, 300.0, 0.33, 900.0, 0.3
    recs = []
    for n in SIZES[:4]:
        for d in (1_000_000, 4_000_000, 16_000_000):
            loss = e + a * n**-al + b * d**-be
            recs.append(synthetic_record(name=f"m{n}-{d}", n_active_nonembedding=n, loss=loss, tokens=d))
    fit = fit_family(_table(tmp_path / "j", recs), "mamba", FitKind.JOINT, bootstrap=0)
    assert fit.ok, fit.message
    for name, truth in zip(fit.param_names, (e, a, al, b, be)):
        assert fit.params[name] == pytest.approx(truth, rel=1e-3), name
    # A one-variable fit is a fit at one budget: the study's main one (the most common among scaling runs;
    # a tie goes to the largest), the others listed as excluded with the reason.
    one = fit_family(_table(tmp_path / "j2", recs), "mamba", FitKind.PARAMS, bootstrap=0)
    assert one.n_points == 4 and "token budgets vary" not in one.message
    assert len(one.excluded) == 8 and all("main token budget 16000000" in why for _, why in one.excluded)


def test_inverse_and_predict() -> None:
    assert power_law_inverse(E + A * 1e6**-ALPHA, E, A, ALPHA) == pytest.approx(1e6, rel=1e-12)
    assert math.isinf(power_law_inverse(E, E, A, ALPHA))
    assert math.isinf(power_law_inverse(E - 0.1, E, A, ALPHA))


def test_fits_round_trip_through_json(tmp_path: Path) -> None:
    df = _table(tmp_path, scaling_study(sizes=SIZES[:4], rom_sizes=(2_000_000,), noise=0.002, hybrids=False))
    fits = fit_all(df, bootstrap=10, seed=3)
    assert {f.key for f in fits} == {"params:mamba", "flops:mamba", "joint:mamba", "params:rom", "flops:rom",
                                     "joint:rom"}
    doc = json.loads(json.dumps(fits_document(fits, seed=3)))  # strict JSON (no NaN)
    back = load_fits(doc)
    for f in fits:
        g = back[f.key]
        assert g.status == f.status and g.params == f.params and g.bootstrap.samples == f.bootstrap.samples
        assert g.points == f.points or f.params is None
    fit = back["params:mamba"]
    x = 3_000_000.0
    assert inverse(fit, float(predict(fit, None, x))) == pytest.approx(x, rel=1e-9)
    assert isinstance(back["params:mamba"], FitResult)


def test_diverged_and_other_roles_are_listed_not_dropped(tmp_path: Path) -> None:
    recs = scaling_study(sizes=SIZES[:4], rom_sizes=(), hybrids=False, downstream=False)
    recs[0]["training"]["diverged"] = True
    recs.append(synthetic_record(name="abl", n_active_nonembedding=3_000_000, loss=3.0, role="ablation"))
    fit = fit_family(_table(tmp_path, recs), "mamba", FitKind.PARAMS, bootstrap=0)
    reasons = dict(fit.excluded)
    assert reasons[recs[0]["run_id"]] == "training diverged"
    assert "role=ablation" in reasons[recs[-1]["run_id"]]
    assert fit.n_points == 3
    assert np.isfinite(fit.objective)


def test_default_objective_is_least_squares(tmp_path: Path) -> None:
    fit = fit_family(_dense(tmp_path, 0.003, seed=3), "mamba", FitKind.PARAMS, bootstrap=0)
    assert math.isinf(fit.huber_delta)
    assert fit.objective == pytest.approx(0.5 * sum(p.log_residual ** 2 for p in fit.points), rel=1e-9)
    back = FitResult.from_dict(json.loads(json.dumps(fits_document([fit])["fits"][0], default=str)))
    assert math.isinf(back.huber_delta)


def test_profile_over_E_when_the_fit_sits_at_a_bound(tmp_path: Path) -> None:
    """Few sizes of a law with a small true E, noisy: E is poorly determined; the profile accepts a wide range
    of E that contains the truth, each accepted E with a usable curve."""
    from analysis.fit import profile_E

    df = _table(tmp_path, scaling_study(E=0.3, A=40.0, alpha=0.2, sizes=(1_000_000, 3_000_000, 9_000_000,
                                                                           27_000_000),
                                        rom_sizes=(), noise=0.004, seed=5, hybrids=False, downstream=False))
    prof = profile_E(df, "mamba", FitKind.PARAMS, sigma_log=0.004)
    lo, hi = prof.accepted_range
    assert lo <= 0.3 <= hi and hi - lo > 0.2
    assert len(prof.accepted_params()) == sum(prof.accepted) > 3
    assert "sigma_log = 0.004" in prof.criterion
    no_sigma = profile_E(df, "mamba", FitKind.PARAMS)
    assert no_sigma.accepted_range is not None and "residuals" in no_sigma.criterion


def _steep(tmp_path: Path) -> pd.DataFrame:
    """A law steeper than the fit's exponent bound (alpha 4.5 > 3) over a narrow size range (2x): the fit puts
    alpha at its upper bound, as the miniature study's width series did with beta."""
    sizes = (1_000_000, 1_200_000, 1_400_000, 1_700_000, 2_000_000)
    return _table(tmp_path, scaling_study(E=2.0, A=0.1 * 1e6 ** 4.5, alpha=4.5, sizes=sizes, rom_sizes=(),
                                          noise=0.0005, seed=3, hybrids=False, downstream=False))


def test_profile_over_the_exponent_sees_past_its_bound(tmp_path: Path) -> None:
    from analysis.fit import EXPONENT_BOUNDS, profile_exponent

    df = _steep(tmp_path)
    fit = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=0)
    assert fit.status == FitStatus.HIT_BOUND and fit.message.startswith("alpha=3 at upper bound"), fit.message
    prof = profile_exponent(df, "mamba", FitKind.PARAMS, sigma_log=0.002)  # grid steps are 8% apart
    lo, hi = prof.accepted_range
    assert prof.name == "alpha" and lo <= 4.5 <= hi and hi > EXPONENT_BOUNDS[1]
    # every accepted curve passes near the data: its read-off at a loss inside the range is interpolated
    x = [inverse(fit, 2.05, p) for p in prof.accepted_params()]
    assert all(1_000_000 < v < 2_000_000 for v in x), x
    assert all(p["alpha"] in prof.grid and 0 <= p["E"] < 2.0 + 0.1 for p in prof.accepted_params())


def test_a_claim_on_a_fit_with_its_exponent_at_a_bound_says_how_far_the_profile_moves_it(tmp_path: Path) -> None:
    from analysis.claims.common import ReadOff, _exponent_at_bound, _exponent_profile_note, claim_inputs

    df = _steep(tmp_path)
    fit = fit_family(df, "mamba", FitKind.PARAMS, bootstrap=0)
    assert _exponent_at_bound(fit) == "alpha"
    inputs = claim_inputs(df, {fit.key: fit})
    x_run = 1_000_000.0
    head = ReadOff("r", "rom", fit.key, x_run, 2.05, inverse(fit, 2.05), inverse(fit, 2.05) / x_run, None, 0,
                   False, "")
    note = _exponent_profile_note(head, fit, inputs, FitKind.PARAMS, "ratio")
    assert note.startswith("alpha at a bound, checked by a profile: with alpha fixed")
    assert "not part of the interval or the verdict" in note
    lo, hi = (float(v) for v in note.split("ranges over [")[1].split("]")[0].split(", "))
    truth = 2.0 ** (1 / 4.5)  # 2.0 + 0.1 (x / 1e6)^-4.5 = 2.05 at x = 1e6 * 2^(1/4.5)
    assert lo - 0.01 <= truth <= hi + 0.01 and hi - lo < 0.1  # 0.01: the grid's steps, with 5 near-exact points
    assert head.value > hi + 0.02  # the fit held at alpha = 3 reads past what the data allow: why the note exists
    converged = fit_family(_dense(tmp_path / "dense", 0.0), "mamba", FitKind.PARAMS, bootstrap=0)
    assert _exponent_at_bound(converged) is None
