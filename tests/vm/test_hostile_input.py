"""Hostile input against the real QEMU: what a path or a file given by a user makes QEMU open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.machine import Machine
from harness.spec import Disk, MachineSpec
from images.recipes.minimal import MinimalImage
from matrix.lab import Lab
from tests.unit.test_disk_and_download_faults import INTERRUPTIBLE

pytestmark = pytest.mark.vm
REPO = Path(__file__).parents[2]


def test_a_comma_in_a_disk_path_opens_that_file_and_nothing_else(tmp_path: Path, bootmatrix_lab: Lab) -> None:
    """`x.img,file=secret.img` is a legitimate file name: QEMU (paused, nothing booted) must attach that
    file, and secret.img must not be attached (before quoting it was: QMP query-block named it)."""
    folder = tmp_path / "Smith, John"
    folder.mkdir()
    odd = folder / "x.img,file=secret.img"
    odd.write_bytes(b"\0" * 65536)
    (folder / "secret.img").write_bytes(b"secret".ljust(65536, b"\0"))
    spec = MachineSpec("x86_64", "q35", disks=(Disk(odd, snapshot=False, readonly=True),), extra_args=("-S",))
    with Machine(spec, bootmatrix_lab.qemu("pinned"), tmp_path / "vm").start() as machine:
        blocks = machine.qmp.execute("query-block")
        machine.stop(check=False)
    files = [b["inserted"]["file"] for b in blocks if "inserted" in b]
    assert files == [str(odd)]


def _alive(pids: list[int]) -> list[int]:
    """The processes of `pids` that still run."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_writes_its_report_and_says_so(tmp_path: Path, sig: int, code: int) -> None:
    """A run stopped while a cell boots: it ends at once with 128 + the signal, the summary and junit.xml
    are written, the cells not finished are "interrupted", and no QEMU is left."""
    results = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE + "import sys\nfrom matrix.cli import main\nsys.exit(main(sys.argv[1:]))",
         "run", "--cell", "x86_64-seabios-direct", "--cell", "riscv64-opensbi-direct", "-j", "1",
         "--results", str(results), "--no-history"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    pids: dict[Path, int] = {}
    while not pids and time.monotonic() < deadline:
        # QEMU deletes its own pidfile when it ends by quit or SIGTERM: the pids are read before the signal
        pids = {f.parent: int(text) for f in results.glob("run-*/*/qemu.pid") if (text := f.read_text().strip())}
        time.sleep(0.05)
    assert pids, "a cell started booting"
    process.send_signal(sig)
    sent = time.monotonic()
    output, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert process.returncode == code, output
    assert "Traceback" not in output and f"interrupted by {signal.Signals(sig).name}" in output
    (summary,) = results.glob("run-*/summary.json")
    report = json.loads(summary.read_text())
    assert report["interrupted"] == signal.Signals(sig).name
    assert [row["result"] for row in report["cells"]] == ["interrupted", "interrupted"]
    assert (summary.parent / "junit.xml").exists()
    (booting,) = [argv.parent for argv in results.glob("run-*/*/argv.txt")]
    assert list(pids) == [booting]
    assert json.loads((booting / "result.json").read_text())["stopped_by_harness"] is True
    time.sleep(0.5)
    assert _alive(list(pids.values())) == []


def test_a_failure_reports_the_last_console_lines_beside_its_reason(tmp_path: Path) -> None:
    """A cell whose ready never comes: the reason is one line, and summary.json, junit.xml (failure body
    and system-out) and the screen carry the console's last lines that explain it, escapes removed."""
    import xml.etree.ElementTree as ET

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "matrix.cli", "run", "--arch", "x86_64", "--firmware", "seabios",
         "--kernel", str(_minimal().kernel), "--initrd", str(_minimal().initrd),
         "--ready", "NEVER-PRINTED", "--timeout", "15",
         "--results", str(results), "--no-history"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout
    (summary,) = results.glob("run-*/summary.json")
    (row,) = json.loads(summary.read_text())["cells"]
    assert "no match" in row["reason"] and "\n" not in row["reason"]
    tail = row["console_tail"]
    assert "Run /init as init process" in tail or "bootmatrix" in tail, tail
    assert "\x1b" not in tail
    case = ET.parse(summary.parent / "junit.xml").getroot().find("testcase")
    assert case is not None
    assert case.findtext("system-out") == tail
    assert tail.splitlines()[-1] in (case.findtext("failure") or "")
    assert "last console lines" in done.stdout and tail.splitlines()[-1][:40] in done.stdout


def _minimal() -> MinimalImage:
    from matrix.lab import Lab

    return Lab().image("x86_64")
