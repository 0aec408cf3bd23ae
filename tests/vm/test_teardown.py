"""A VM that misbehaves at the end still fails the test, and one VM's trouble at teardown never leaves
the others running. Each case runs a small test file in its own pytest process (pytester) on the fastest
cell, so what is checked is the real plugin teardown and the real QEMU."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from harness.errors import AbnormalShutdown

pytestmark = pytest.mark.vm
FAST_CELL = "riscv64-opensbi-direct"


def run_inner(pytester: pytest.Pytester, source: str, conftest: str = "") -> tuple[pytest.RunResult, Path]:
    pytester.makepyfile(test_inner=source)
    if conftest:
        pytester.makeconftest(conftest)
    results = pytester.path / "results"
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--bootmatrix-cell={FAST_CELL}", f"--bootmatrix-results={results}",
        "--bootmatrix-no-history", timeout=600,
    )
    return outcome, results


def result_files(results: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("pytest-*/*/*/result.json"))]


def test_qemu_killed_after_the_last_wait_fails_the_test(pytester: pytest.Pytester) -> None:
    outcome, results = run_inner(pytester, """
import signal

def test_inner(vm):
    guest = vm()
    assert guest.run("echo ok") == ("ok", 0)
    guest.machine.process.send_signal(signal.SIGKILL)
    guest.machine.process.wait()
""")
    outcome.assert_outcomes(passed=1, errors=1)
    outcome.stdout.fnmatch_lines(["*vm: QEMU killed by SIGKILL on its own before the harness stopped it*"])
    (result,) = result_files(results)
    assert "killed by SIGKILL" in str(result["abnormal"]) and result["stopped_by_harness"] is False


def test_a_panic_no_wait_saw_fails_the_test(pytester: pytest.Pytester) -> None:
    """QEMU exits 0 after a kernel panic under -no-reboot: the exit status says nothing, the console does."""
    outcome, results = run_inner(pytester, """
def test_inner(vm):
    guest = vm()
    guest.console.sendline("echo c > /proc/sysrq-trigger")
    guest.machine.process.wait(60)
""")
    outcome.assert_outcomes(passed=1, errors=1)
    outcome.stdout.fnmatch_lines(["*vm: QEMU exited with status 0 on its own before the harness stopped it*"
                                  "kernel panic*"])
    (result,) = result_files(results)
    assert "Kernel panic" in str(result["abnormal"])


def test_a_failing_report_step_leaves_no_vm_running(pytester: pytest.Pytester) -> None:
    """The first VM's allure step raises: the test errors naming it, and both VMs were stopped by the
    harness (a leaked QEMU would also fail the session)."""
    outcome, results = run_inner(pytester, """
def test_inner(vm):
    vm(name="first")
    vm(name="second")
""", conftest="""
import matrix.plugin

real = matrix.plugin.attach_vm_to_allure

def flaky(workdir, name, *args, **kwargs):
    if name == "first":
        raise OSError("disk full while attaching")
    return real(workdir, name, *args, **kwargs)

matrix.plugin.attach_vm_to_allure = flaky
""")
    outcome.assert_outcomes(passed=1, errors=1)
    outcome.stdout.fnmatch_lines(["*first: reporting failed: OSError('disk full while attaching')*"])
    assert [(r["name"], r["stopped_by_harness"], r["abnormal"]) for r in result_files(results)] == [
        ("first", True, None), ("second", True, None)]


@pytest.mark.bootmatrix_cells(arch="riscv64", firmware="opensbi", media="direct")
def test_stop_raises_for_a_death_nobody_reported(vm) -> None:
    """Machine.stop() after a kill nothing saw raises AbnormalShutdown; a guest that powered itself off
    (exit 0, no panic) is a normal end."""
    guest = vm()
    guest.machine.process.send_signal(signal.SIGKILL)
    guest.machine.process.wait()
    with pytest.raises(AbnormalShutdown, match="killed by SIGKILL on its own"):
        guest.machine.stop()
    assert json.loads((guest.workdir / "result.json").read_text())["abnormal"].startswith("QEMU killed by SIGKILL")

    other = vm(name="poweroff")
    other.console.sendline("poweroff -f")
    other.machine.process.wait(60)
    assert other.machine.stop() == 0
    assert json.loads((other.workdir / "result.json").read_text())["abnormal"] is None
