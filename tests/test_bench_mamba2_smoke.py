"""benchmarks/gpu_mamba2.py's CPU smoke path (tiny shapes, reference rows only): the GPU benchmark's rows, the
weight map to mamba-ssm's Mamba2 and the JSON keep running where CI has no GPU. Times nothing."""

from __future__ import annotations

import json

from script_loader import load_script


def _load():
    return load_script("benchmarks/gpu_mamba2.py")


def test_bench_mamba2_cpu_smoke(tmp_path):
    bench = _load()
    out = tmp_path / "bench.json"
    payload = bench.main(["--device", "cpu", "--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and saved["benchmark"] == "mamba2_gdn_layers"
    timed = {r["layer"] for r in payload["results"] if "fwd_bwd_ms" in r}
    assert timed == {"mamba2 dense, ours (reference)", "mamba2 RoM e4 comprehensive (reference)",
                     "gdn dense (reference)", "gdn RoM e4 comprehensive (reference)",
                     "scan only: ssd_scan ours (reference)"}, timed
    # the weight map names exactly mamba_ssm Mamba2's parameters, in its layouts (conv1d as nn.Conv1d)
    shapes = payload["parity"]["state_dict_shapes"]
    assert set(shapes) == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                           "out_proj.weight"}
    d_model, d_inner, heads, d_state = 64, 128, 128 // 16, 8
    assert shapes["in_proj.weight"] == [2 * d_inner + 2 * d_state + heads, d_model]
    assert shapes["conv1d.weight"] == [d_inner + 2 * d_state, 1, 4]
    # our fp32 reference layer against itself in float64: the parity harness measures what it says
    ref = payload["parity"]["ours (reference), fp32"]
    assert ref["out"] < 1e-5 and ref["d_input"] < 1e-5
    assert max(ref["d_params"].values()) < 1e-4


def test_bench_mamba2_time_budget_ends_by_itself_with_every_row_accounted_for(tmp_path):
    """A spent --time-budget starts no further row: each says why in 'note', and the JSON is still written."""
    bench = _load()
    out = tmp_path / "bench.json"
    payload = bench.main(["--device", "cpu", "--smoke", "--no-parity", "--time-budget", "1e-9", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["time_budget_s"] == 1e-9
    rows = payload["results"]
    assert rows and not [r for r in rows if "fwd_bwd_ms" in r]
    assert all("--time-budget of 1e-09 s was spent" in r["note"] for r in rows), [r.get("note") for r in rows]
    assert {r["layer"] for r in rows} >= {"mamba2 dense, ours (reference)", "scan only: ssd_scan ours (reference)"}


def test_bench_mamba2_parity_check_yields_to_the_timing_rows_after_half_the_budget(tmp_path):
    """The untimed parity check starts no variant once half of --time-budget is spent, and says so per variant."""
    bench = _load()
    payload = bench.main(["--device", "cpu", "--smoke", "--time-budget", "1e-9", "--out", str(tmp_path / "b.json")])
    variants = {k: v for k, v in payload["parity"].items() if k.startswith("ours (") and ", " in k}  # name, mode
    assert set(variants) == {"ours (reference), fp32"}, sorted(payload["parity"])  # on CPU: fp32 reference only
    assert all(isinstance(v, str) and "half of the --time-budget of 1e-09 s was spent" in v
               for v in variants.values()), variants
    assert payload["results"] and all("--time-budget of 1e-09 s was spent" in r["note"] for r in payload["results"])


def test_bench_mamba2_rejects_a_negative_time_budget():
    bench = _load()
    try:
        bench.main(["--device", "cpu", "--smoke", "--no-parity", "--time-budget", "-5"])
    except SystemExit as err:
        assert "--time-budget must be >= 0 seconds, got -5.0" in str(err)
    else:
        raise AssertionError("a negative --time-budget was accepted")
