"""Reports end to end, through real boots: allure results with the VM's attachments, JUnit XML, metric
history rows that grow run by run, `bootmatrix history` and its plots, gates that fail a run, and the
exit codes of `bootmatrix run --cell`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from matrix.history import History, Metric

pytestmark = pytest.mark.vm
BIN = Path(sys.executable).parent
CELLS = ["riscv64-opensbi-direct", "aarch64-virt-direct"]  # the two fastest boots

SAMPLE_TEST = '''
import pytest

@pytest.mark.bootmatrix_cold  # the report's boot phases are the point: no snapshot restore
def test_boot(vm, cell):
    guest = vm()
    assert guest.run("echo $((6*7))") == ("42", 0)
    guest.metric("answer", 42.0, "count")
'''


def run_pytest(folder: Path, history: Path, round_: int) -> subprocess.CompletedProcess[str]:
    (folder / "test_sample.py").write_text(SAMPLE_TEST)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            f"--rootdir={folder}", str(folder / "test_sample.py"),
            f"--alluredir={folder / f'allure-{round_}'}", f"--junitxml={folder / f'junit-{round_}.xml'}",
            f"--bootmatrix-history={history}", f"--bootmatrix-results={folder / 'results'}"]
    for cell in CELLS:
        argv.append(f"--bootmatrix-cell={cell}")
    return subprocess.run(argv, capture_output=True, text=True, cwd=folder, timeout=600, check=False)


def allure_results(folder: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_text()) for p in folder.glob("*-result.json")]


def test_two_cells_twice_give_allure_junit_history_and_plots(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    for round_ in (1, 2):
        done = run_pytest(tmp_path, history, round_)
        assert done.returncode == 0, done.stdout + done.stderr

    results = allure_results(tmp_path / "allure-1")
    # allure records parameter values as repr()s
    assert sorted(r["parameters"][0]["value"].strip("'") for r in results) == sorted(CELLS)
    containers = [json.loads(p.read_text()) for p in (tmp_path / "allure-1").glob("*-container.json")]
    for result in results:
        assert result["status"] == "passed"
        # What the vm fixture reports at teardown lands in the containers of the test's fixtures.
        teardowns = [a for c in containers if result["uuid"] in c.get("children", []) for a in c.get("afters", [])]
        attachments = [*result.get("attachments", []), *(x for t in teardowns for x in t.get("attachments", []))]
        names = {a["name"] for a in attachments}
        for label in ("console transcript", "QEMU argv", "QMP events", "boot timeline", "metrics"):
            assert f"vm: {label}" in names, (label, names)
        steps = [step["name"] for t in teardowns for step in t.get("steps", [])]
        assert any(step.startswith("vm: kernel at ") for step in steps), steps
        assert any(step.startswith("vm: ready at ") for step in steps), steps
        parameters = {p["name"]: p["value"].strip("'") for p in result["parameters"]}
        assert {"arch", "firmware", "media", "firmware set", "accelerator"} <= set(parameters)
        assert parameters["accelerator"] in ("tcg", "kvm")

    junit = ET.parse(tmp_path / "junit-1.xml").getroot()
    cases = list(junit.iter("testcase"))
    assert len(cases) == 2 and not list(junit.iter("failure"))

    with sqlite3.connect(history) as db:
        runs = db.execute("SELECT COUNT(DISTINCT run) FROM metrics WHERE metric = 't_ready'").fetchone()[0]
        answers = db.execute("SELECT cell, value FROM metrics WHERE metric = 'answer' ORDER BY cell").fetchall()
    assert runs == 2
    assert sorted(answers) == sorted([(c, 42.0) for c in CELLS] * 2)

    shown = subprocess.run([str(BIN / "bootmatrix"), "history", "--history", str(history), "--plots",
                            str(tmp_path / "plots"), "--metric", "t_ready"],
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for cell in CELLS:
        assert cell in shown.stdout
        plot = tmp_path / "plots" / f"{cell}.png"
        from PIL import Image

        with Image.open(plot) as image:
            image.verify()
            assert image.format == "PNG"

    svg = next((tmp_path / "results").rglob("timeline.svg"))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}rect")) >= 4


def bootmatrix_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(BIN / "bootmatrix"), "run", "--results", str(tmp_path / "results"), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def test_gate_breach_in_history_fails_the_run(tmp_path: Path) -> None:
    history_path = tmp_path / "history.sqlite"
    cell = "riscv64-opensbi-direct"
    first = bootmatrix_run(tmp_path, "--cell", cell, "--history", str(history_path))
    assert first.returncode == 0, first.stdout
    history = History(history_path)
    (real,) = [r for r in history.rows(cell, "t_ready") if r.source == "run"]
    for run in ("seed-1", "seed-2", "seed-3"):  # a baseline no real boot can meet: 0.2 s to a shell
        history.record(run, "run", [Metric(cell, "t_ready", 0.2, "s", real.qemu_version, real.firmware_set,
                                           real.accel, config=real.config)])
    for run in ("other-1", "other-2", "other-3"):  # as fast, but another configuration: never a baseline
        history.record(run, "run", [Metric(cell, "t_ready", 0.1, "s", real.qemu_version, real.firmware_set,
                                           real.accel, config="another-configuration")])
    done = bootmatrix_run(tmp_path, "--cell", cell, "--history", str(history_path))
    assert done.returncode == 1, done.stdout
    assert f"gate breach: {cell} t_ready = " in done.stdout
    assert "baseline 0.200 (median of 4 runs of this configuration" in done.stdout


def test_run_exit_codes(tmp_path: Path) -> None:
    passing = bootmatrix_run(tmp_path, "--cell", "riscv64-opensbi-direct", "--no-history")
    assert passing.returncode == 0, passing.stdout
    assert (next((tmp_path / "results").glob("run-*")) / "junit.xml").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text('[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\nappend = "rdinit=/no-such-init"\n')
    failing = bootmatrix_run(tmp_path, str(broken), "--cell", "riscv64-opensbi-direct", "--no-history")
    assert failing.returncode == 1, failing.stdout
    assert "kernel panic" in failing.stdout.lower()


def test_a_failing_build_tool_fails_its_cell_and_the_run_goes_on(tmp_path: Path) -> None:
    """mcopy fails while the stick is built (in a store of its own): that cell fails with mcopy's own
    words, the direct cell still boots, and summary.json and junit.xml are written."""
    from images.debian.fetch import share_downloads
    from images.store import default_cache_root

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mcopy").write_text("#!/bin/sh\necho 'mcopy: no space left on the fake disk' >&2\nexit 1\n")
    (fake / "mcopy").chmod(0o755)
    cache = tmp_path / "cache"
    share_downloads(default_cache_root(), cache)
    env = {**os.environ, "COLUMNS": "200", "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
           "BOOTMATRIX_CACHE": str(cache)}
    done = subprocess.run([str(BIN / "bootmatrix"), "run", "--results", str(tmp_path / "results"), "--no-history",
                           "--cell", "x86_64-seabios-stick", "--cell", "riscv64-opensbi-direct"],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    run = next((tmp_path / "results").glob("run-*"))
    rows = {row["cell"]: row for row in json.loads((run / "summary.json").read_text())["cells"]}
    assert rows["riscv64-opensbi-direct"]["result"] == "pass"
    stick = rows["x86_64-seabios-stick"]
    assert stick["result"] == "fail"
    assert "building stick: copying files to" in stick["reason"] and "mcopy failed (exit 1)" in stick["reason"]
    assert "mcopy: no space left on the fake disk" in stick["reason"]
    junit = ET.parse(run / "junit.xml").getroot()
    assert [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None] == ["x86_64-seabios-stick"]
