"""`analysis fit` runs its independent fits in worker processes; the numbers must not depend on how many."""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.parallel import available_cores, run_tasks
from analysis.synthetic import scaling_study, write_study


def test_run_tasks_keeps_the_order_in_processes() -> None:
    tasks = [functools.partial(operator.mul, i, i) for i in range(7)]
    assert run_tasks(tasks, 1) == run_tasks(tasks, 3) == [i * i for i in range(7)]
    assert available_cores() >= 1
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_tasks(tasks, 0)


def test_task_errors_reach_the_caller() -> None:
    tasks = [functools.partial(operator.truediv, 1, 1), functools.partial(operator.truediv, 1, 0)]
    with pytest.raises(ZeroDivisionError):
        run_tasks(tasks, 2)


def test_fit_document_is_the_same_with_one_or_two_workers(tmp_path: Path) -> None:
    # dense + RoM scaling runs with seed replicates and a hybrid width series: per-family, series and pooled
    # fits (with their run and noise bootstraps) all take part
    write_study(scaling_study(sizes=(1_000_000, 2_000_000, 4_000_000, 8_000_000), rom_sizes=(2_000_000, 4_000_000),
                              noise=0.003), tmp_path / "raw")
    assert main(["-q", "collect", "--records", str(tmp_path / "raw"), "--out", str(tmp_path / "table.csv")]) == 0
    docs = []
    for workers in (1, 2):
        out = tmp_path / f"fits-{workers}.json"
        assert main(["-q", "fit", "--table", str(tmp_path / "table.csv"), "--out", str(out), "--bootstrap", "12",
                     "--seed", "5", "--workers", str(workers)]) == 0
        docs.append(json.loads(out.read_text()))
    assert docs[0]["fits"] and docs[0]["pooled"]
    assert docs[0] == docs[1]


def test_workers_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "f.json"), "--workers", "0"])
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err
