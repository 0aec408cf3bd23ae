"""Metric history: rows per run, baselines as medians of recent runs on this host, gates that name
cell, metric, value and baseline; concurrent writers do not lose rows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from matrix.history import Gate, History, Metric, check_gate, configuration_hash

CONFIG = "c0nf1g"


def metric(value: float, cell: str = "c", name: str = "t_ready", accel: str = "tcg", config: str = CONFIG) -> Metric:
    return Metric(cell, name, value, "s", "10.0.13", "trixie", accel, config=config)


def test_baseline_is_the_median_of_recent_runs_excluding_this_one(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    for run, values in (("r1", [1.0, 9.0, 1.2]), ("r2", [2.0]), ("r3", [3.0]), ("now", [50.0])):
        history.record(run, "run", [metric(v) for v in values])
    same: dict[str, Any] = {"exclude_run": "now", "config": CONFIG, "source": "run"}
    assert history.baseline("c", "t_ready", "tcg", **same) == (2.0, 3)  # median of 1.2, 2, 3
    assert history.baseline("c", "t_ready", "kvm", **same) is None  # other accelerator
    assert history.baseline("other", "t_ready", "tcg", **same) is None


def test_gate_breach_names_cell_metric_value_and_baseline(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    gate = Gate("t_ready", tolerance=0.5, slack=0.5, min_runs=3)
    for run in ("a", "b"):
        history.record(run, "run", [metric(2.0)])
    same = {"accel": "tcg", "run": "now", "config": CONFIG, "source": "run"}
    assert check_gate(history, gate, "c", 10.0, **same) is None  # only 2 runs so far
    history.record("c3", "run", [metric(2.0)])
    assert check_gate(history, gate, "c", 3.4, **same) is None  # limit 2 * 1.5 + 0.5 = 3.5
    breach = check_gate(history, gate, "c", 3.6, **same)
    assert breach == ("gate breach: c t_ready = 3.600, baseline 2.000 (median of 3 runs of this configuration on "
                      "this host), limit 3.500 (+50 % + 0.5)")


def test_gates_compare_only_rows_of_the_same_configuration_and_source(tmp_path: Path) -> None:
    """Fast pytest boots and boots under another QEMU build exist for the cell: the gate of
    `bootmatrix run` ignores both, and judges only against run rows of its own configuration."""
    history = History(tmp_path / "h.sqlite")
    gate = Gate("t_ready", tolerance=0.5, slack=0.5, min_runs=3)
    for run in ("p1", "p2", "p3"):
        history.record(run, "pytest", [metric(0.5)])  # same configuration, but from pytest
    for run in ("q1", "q2", "q3"):
        history.record(run, "run", [metric(0.5, config="other-qemu-build")])
    same = {"accel": "tcg", "run": "now", "source": "run"}
    assert check_gate(history, gate, "c", 9.0, config=CONFIG, **same) is None  # nothing comparable yet
    for run in ("r1", "r2", "r3"):
        history.record(run, "run", [metric(4.0)])
    assert check_gate(history, gate, "c", 6.4, config=CONFIG, **same) is None  # 4 * 1.5 + 0.5 = 6.5
    assert check_gate(history, gate, "c", 6.6, config=CONFIG, **same) is not None
    assert check_gate(history, gate, "c", 1.3, config="other-qemu-build", **same) is not None  # 1.25


def test_configuration_hash_is_stable_across_runs_and_sees_every_change(tmp_path: Path) -> None:
    from harness.net import DgramLink, UserNet
    from harness.spec import MachineSpec, Pflash

    store_kernel = tmp_path / "a/entries" / ("ab" * 32) / "content/kernel"
    other_store = tmp_path / "b/entries" / ("ab" * 32) / "content/kernel"

    def spec(**changes: object) -> MachineSpec:
        base = {"arch": "riscv64", "machine": "virt", "kernel": store_kernel, "append": "quiet",
                "pflash": (Pflash(tmp_path / "vm1/pflash1-VARS.fd", readonly=False),)}
        return MachineSpec(**{**base, **changes})  # type: ignore[arg-type]

    first = configuration_hash({"spec": spec(nics=(DgramLink(5),))}, tmp_path / "vm1")
    assert first == configuration_hash({"spec": spec(kernel=other_store, nics=(DgramLink(9),),
                                                     pflash=(Pflash(tmp_path / "vm2/pflash1-VARS.fd", False),))},
                                       tmp_path / "vm2")  # another cache root, fd and work folder
    for change in ({"append": "quiet bm.prebuild=1"}, {"memory_mib": 1024}, {"smp": 2},
                   {"nics": (DgramLink(5), UserNet())}):
        changed = spec(**{"nics": (DgramLink(5),), **change})
        assert configuration_hash({"spec": changed}, tmp_path / "vm1") != first, change


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
