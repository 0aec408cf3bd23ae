"""Asking a QEMU binary about itself never hangs the suite: a binary that hangs on --version or on a
paused start is reported as unusable, with the reason, within the probe timeout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import harness.qemu as qemu_module
from harness.qemu import QemuInstall, QemuNotFound


@pytest.fixture
def hanging_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> QemuInstall:
    binary = tmp_path / "qemu-system-riscv64"
    binary.write_text("#!/bin/sh\nexec sleep 60\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(qemu_module, "PROBE_TIMEOUT", 1.0)
    qemu_module._version.cache_clear()
    qemu_module._refusal.cache_clear()
    return QemuInstall.host()


def test_a_binary_that_hangs_on_version_is_not_found(hanging_qemu: QemuInstall) -> None:
    with pytest.raises(QemuNotFound, match=r"--version did not answer within 1 s"):
        hanging_qemu.version("riscv64")


def test_a_binary_that_hangs_on_a_paused_start_refuses(hanging_qemu: QemuInstall) -> None:
    assert hanging_qemu.refusal("riscv64", ("-machine", "virt")) == "QEMU did not answer a paused start within 1 s"


def test_a_binary_that_cannot_run_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "qemu-system-riscv64"
    binary.write_text("not a program")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    qemu_module._version.cache_clear()
    with pytest.raises(QemuNotFound, match="cannot run"):
        QemuInstall.host().version("riscv64")


def test_a_failed_launch_leaks_no_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "QEMU" that answers --version and then exits at once: the QMP handshake fails, LaunchError
    carries its status, and every socket and file the start opened is closed again."""
    from harness.errors import LaunchError
    from harness.machine import Machine
    from harness.spec import MachineSpec

    binary = tmp_path / "qemu-system-riscv64"
    binary.write_text("#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    qemu_module._version.cache_clear()
    before = sorted(os.listdir("/proc/self/fd"))
    machine = Machine(MachineSpec("riscv64", "virt"), QemuInstall.host(), tmp_path / "vm")
    with pytest.raises(LaunchError, match=r"QMP handshake failed(.|\n)*QEMU exited with status 0"):
        machine.start(qmp_timeout=10)
    # None opened and left open; others may close meanwhile (a previous test's threads in this worker:
    # seen once, four fewer afterwards, under load), so only new ones count.
    assert sorted(set(os.listdir("/proc/self/fd")) - set(before)) == []
    assert machine.stop() == 0  # the caller was told: no second report at stop
