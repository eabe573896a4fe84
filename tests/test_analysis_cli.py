"""`python -m analysis ...` end to end in a fresh interpreter; the analysis never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PIPELINE = """
import sys, json
from pathlib import Path
from analysis.synthetic import scaling_study, write_study
from analysis.cli import main

out = Path(sys.argv[1])
write_study(scaling_study(sizes=(1_000_000, 2_000_000, 4_000_000, 8_000_000), rom_sizes=(2_000_000,),
                          hybrids=False, noise=0.002), out / "raw")
steps = [
    ["collect", "--records", str(out / "raw"), "--out", str(out / "table.csv")],
    ["fit", "--table", str(out / "table.csv"), "--out", str(out / "fits.json"), "--bootstrap", "8", "--seed", "1",
     "--param-convention", "active_nonembedding", "--flop-convention", "train_total"],
    ["claims", "--table", str(out / "table.csv"), "--fits", str(out / "fits.json"), "--out", str(out / "claims.json")],
    ["figures", "--table", str(out / "table.csv"), "--fits", str(out / "fits.json"), "--claims",
     str(out / "claims.json"), "--out", str(out / "figures")],
    ["tables", "--table", str(out / "table.csv"), "--fits", str(out / "fits.json"), "--claims",
     str(out / "claims.json"), "--out", str(out / "tables")],
    ["report", "--table", str(out / "table.csv"), "--fits", str(out / "fits.json"), "--claims",
     str(out / "claims.json"), "--figures", str(out / "figures"), "--out", str(out / "report.html")],
]
for argv in steps:
    rc = main(["-q", *argv])
    assert rc == 0, (argv, rc)
print(json.dumps({"torch": "torch" in sys.modules, "modules": sorted(m for m in sys.modules if m.startswith("torch"))}))
"""

BLOCKED = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import analysis, analysis.collect, analysis.fit, analysis.claims, analysis.figures, analysis.tables
import analysis.report, analysis.synthetic, analysis.cli
from analysis.cli import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code == 0
print("ok")
"""


def test_cli_pipeline_imports_no_torch(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PIPELINE, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "modules": []}
    for path in ("table.csv", "fits.json", "claims.json", "figures/figures.json", "tables/claims.tex",
                 "report.html", "report.md"):
        assert (tmp_path / path).stat().st_size > 0, path
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert fits["settings"]["seed"] == 1 and fits["settings"]["param_convention"] == "active_nonembedding"
    assert all(f["param_convention"] == "active_nonembedding" for f in fits["fits"])


def test_analysis_works_with_torch_blocked() -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BLOCKED)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "analysis", "fit", "--table", str(tmp_path / "none.csv"),
                           "--out", str(tmp_path / "f.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "none.csv" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "f.json").exists()
