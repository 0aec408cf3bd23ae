"""The default matrix on a real LAVA dispatcher: `bootmatrix export lava`, each job run by Debian's
lava-dispatcher (`lava-run`, as root, its artifacts served over 127.0.0.1), and `bootmatrix import lava`
reading the results back. A cell whose readiness never comes fails in LAVA's results too.

Everything a job leaves (its definition, device dictionary, lava.log and the imported reports) stays in
the test's results folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from matrix.cli import main
from matrix.lava.local import LAVA_RUN
from matrix.plugin import cannot_run

pytestmark = pytest.mark.vm
# One cell per arch, x86_64 through OVMF from the stick among them, and UEFI on riscv64 (edk2, pflash).
ON_LAVA = ["x86_64-ovmf-stick", "aarch64-virt-direct", "riscv64-edk2-direct"]
NEVER_READY = """
[[cell]]
arch = "x86_64"
firmware = "seabios"
name = "never-ready"
kernel = { image = "minimal" }
initrd = { image = "minimal" }
ready = 'THIS-LINE-NEVER-COMES'
timeout = 20
"""


@pytest.fixture
def lava(request: pytest.FixtureRequest) -> None:
    if shutil.which(LAVA_RUN) is None:
        cannot_run(request.config, "lava-run is not installed (make test installs lava-dispatcher: scripts/setup-host "
                                   "--tests)")
    if os.geteuid() != 0:
        cannot_run(request.config, "lava-run runs as root only, and this test is not root")


@pytest.fixture
def folder(bootmatrix_results: Path, request: pytest.FixtureRequest) -> Path:
    """This test's own folder of the session's results."""
    path: Path = bootmatrix_results / str(request.node.name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


def test_the_default_matrix_runs_on_lava_and_its_results_come_back_passing(
    lava: None, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    export, output, reports = (folder / name for name in ("export", "output", "reports"))
    assert main(["export", "lava", "--out", str(export), "--artifacts-url", _url()]) == 0
    jobs = json.loads((export / "export.json").read_text())["jobs"]
    assert len(jobs) == 12
    # Every job of the matrix is one the dispatcher accepts (it also checks that each URL answers).
    assert main(["lava-run", str(export), "--output", str(folder / "validated"), "--validate", "-j", "2"]) == 0
    for job in jobs:
        assert '"case": "validate", "definition": "lava", "result": "pass"' in (
            folder / "validated" / job["cell"] / "lava.log").read_text()
    argv = ["lava-run", str(export), "--output", str(output)] + [a for c in ON_LAVA for a in ("--cell", c)]
    assert main(argv) == 0
    assert main(["import", "lava", str(output), "--results", str(reports),
                 "--history", str(folder / "history.sqlite")]) == 0
    (report,) = reports.glob("lava-*")
    summary = json.loads((report / "summary.json").read_text())
    assert {c["cell"]: c["result"] for c in summary["cells"]} == dict.fromkeys(ON_LAVA, "pass")
    for cell in ON_LAVA:
        console = (report / cell / "console.log").read_text()
        assert "BOOTMATRIX-READY" in console and "lease of 10.0.2.15" in console
        job = yaml.safe_load((output / cell / "job.yaml").read_text())
        assert job["context"]["no_kvm"] is True  # this host's verdict: TCG


def test_a_cell_that_never_gets_ready_fails_in_lavas_results_too(
    lava: None, folder: Path
) -> None:
    matrix = folder / "never.toml"
    matrix.write_text(NEVER_READY)
    export, output, reports = (folder / name for name in ("export", "output", "reports"))
    assert main(["export", "lava", str(matrix), "--out", str(export), "--artifacts-url", _url()]) == 0
    assert main(["lava-run", str(export), "--output", str(output)]) == 0  # it ran; the job failed
    (cell,) = [j["cell"] for j in json.loads((export / "export.json").read_text())["jobs"]]
    log = (output / cell / "lava.log").read_text()
    assert '"case": "job", "definition": "lava", "error_msg": "lava-test-monitor timed out' in log
    assert main(["import", "lava", str(output), "--results", str(reports), "--no-history"]) == 1
    (report,) = reports.glob("lava-*")
    (row,) = json.loads((report / "summary.json").read_text())["cells"]
    assert row["result"] == "fail" and "timed out after 20 seconds" in row["reason"]
    assert "BOOTMATRIX-READY" in row["console_tail"]  # it booted; the ready line asked for never came
