"""Forwarded ports are chosen by the kernel when QEMU binds port 0, then read back: 8 processes starting
QEMUs at once, each with two forwards, all alive together, never get the same port twice."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from harness.deadline import Deadline
from harness.machine import Machine
from harness.net import Forward, UserNet
from harness.qemu import QemuInstall
from harness.spec import MachineSpec

pytestmark = pytest.mark.vm
PROCESSES = 8


def _hold_forwards(prefix: str, workdir: str, barrier, results) -> None:
    qemu = QemuInstall.from_prefix("pinned", Path(prefix))
    # No kernel: SeaBIOS sits looking for a boot device, which is all a port needs.
    spec = MachineSpec("x86_64", "q35", nics=(UserNet(forwards=(Forward(80), Forward(22))),))
    with Machine(spec, qemu, Path(workdir)) as machine:
        ports = machine.forwarded_ports()
        barrier.wait(60)  # every QEMU holds its ports while all the others hold theirs
        results.put(sorted(ports.values()))


def test_eight_processes_never_share_a_port(bootmatrix_lab, tmp_path: Path) -> None:
    qemu = bootmatrix_lab.qemu("pinned")
    assert qemu.prefix is not None
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    procs = [
        context.Process(target=_hold_forwards, args=(str(qemu.prefix), str(tmp_path / f"vm{i}"), barrier, results))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    ports = [results.get(timeout=120) for _ in procs]
    deadline = Deadline.after(60)
    for proc in procs:
        proc.join(deadline.remaining())
        assert proc.exitcode == 0
    flat = [port for pair in ports for port in pair]
    assert len(flat) == 2 * PROCESSES and all(port > 1024 for port in flat)
    assert len(set(flat)) == len(flat), f"a port was handed out twice: {sorted(flat)}"
