"""Metric history: rows per run, baselines as medians of recent runs on this host, gates that name
cell, metric, value and baseline; concurrent writers do not lose rows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from matrix.history import Gate, History, Metric, check_gate


def metric(value: float, cell: str = "c", name: str = "t_ready", accel: str = "tcg") -> Metric:
    return Metric(cell, name, value, "s", "10.0.13", "trixie", accel)


def test_baseline_is_the_median_of_recent_runs_excluding_this_one(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    for run, values in (("r1", [1.0, 9.0, 1.2]), ("r2", [2.0]), ("r3", [3.0]), ("now", [50.0])):
        history.record(run, "run", [metric(v) for v in values])
    assert history.baseline("c", "t_ready", "tcg", exclude_run="now") == (2.0, 3)  # median of 1.2, 2, 3
    assert history.baseline("c", "t_ready", "kvm", exclude_run="now") is None  # other accelerator
    assert history.baseline("other", "t_ready", "tcg", exclude_run="now") is None


def test_gate_breach_names_cell_metric_value_and_baseline(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    gate = Gate("t_ready", tolerance=0.5, slack=0.5, min_runs=3)
    for run in ("a", "b"):
        history.record(run, "run", [metric(2.0)])
    assert check_gate(history, gate, "c", 10.0, accel="tcg", run="now") is None  # only 2 runs so far
    history.record("c3", "run", [metric(2.0)])
    assert check_gate(history, gate, "c", 3.4, accel="tcg", run="now") is None  # limit 2 * 1.5 + 0.5 = 3.5
    breach = check_gate(history, gate, "c", 3.6, accel="tcg", run="now")
    assert breach == ("gate breach: c t_ready = 3.600, baseline 2.000 (median of 3 runs on this host), "
                      "limit 3.500 (+50 % + 0.5)")


def _writer(path: str, run: str) -> None:
    history = History(Path(path))
    for index in range(20):
        history.record(run, "pytest", [metric(float(index))])


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    History(path)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(str(path), f"run{i}")) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert len(History(path).rows()) == 80
