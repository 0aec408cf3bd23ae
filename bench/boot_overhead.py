"""What the harness costs on top of QEMU: time to the readiness marker through the harness (Machine:
QMP handshake, event thread, pexpect console, transcript) against the same argv started bare with a
minimal reader (Popen + recv on the serial socket until the marker bytes appear).

Runs alternate (harness, bare, harness, bare, ...) so drift in host load hits both alike; prints the
median of each per arch and their ratio (goal: <= 1.05).

    .venv/bin/python bench/boot_overhead.py [--runs 5] [--arch riscv64]
"""

from __future__ import annotations

import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.arguments import runs_and_arches
from harness.deadline import Deadline
from harness.spec import HarnessFds, build_argv
from matrix.firmware import DIRECT_FIRMWARE
from matrix.lab import Lab
from matrix.model import Cell, load_matrix

MARKER = b"BOOTMATRIX-READY"


def through_harness(lab: Lab, cell: Cell, workdir: Path) -> float:
    machine, _ = lab.machine(cell, workdir)
    started = time.monotonic()
    with machine:
        machine.console.expect(MARKER.decode(), Deadline.after(120))
        return time.monotonic() - started


def bare(lab: Lab, cell: Cell, workdir: Path) -> float:
    machine, _ = lab.machine(cell, workdir)  # only for its spec and QEMU install; never started
    console_ours, console_theirs = socket.socketpair()
    qmp_ours, qmp_theirs = socket.socketpair()
    fds = HarnessFds(console_theirs.fileno(), qmp_theirs.fileno(), workdir / "bare.pid")
    qemu = machine.qemu
    argv = build_argv(machine.spec, qemu.command(cell.arch), qemu.data_args(), fds)
    started = time.monotonic()
    process = subprocess.Popen(argv, pass_fds=(fds.console_fd, fds.qmp_fd), env=qemu.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    console_theirs.close()
    qmp_theirs.close()
    seen = b""
    try:
        while MARKER not in seen:
            readable, _, _ = select.select([console_ours], [], [], 120)
            if not readable:
                raise TimeoutError("bare boot did not reach the marker")
            chunk = console_ours.recv(65536)
            if not chunk:
                raise RuntimeError("QEMU closed the console")
            seen = seen[-64:] + chunk
        return time.monotonic() - started
    finally:
        process.kill()
        process.wait()
        console_ours.close()
        qmp_ours.close()


def main() -> int:
    args = runs_and_arches(__doc__)
    lab = Lab()
    # One direct-kernel cell per arch (firmware cells are measured by `bootmatrix compare`).
    cells = [c for c in load_matrix() if c.media == "direct" and c.firmware == DIRECT_FIRMWARE[c.arch]
             and (not args.arch or c.arch in args.arch)]
    print(f"{'cell':28} {'harness s':>10} {'bare s':>8} {'ratio':>6}  (medians of {args.runs} alternating runs)")
    with tempfile.TemporaryDirectory(prefix="bm-bench-") as tmp:
        for cell in cells:
            harness_times, bare_times = [], []
            for run in range(args.runs):
                harness_times.append(through_harness(lab, cell, Path(tmp) / f"{cell.id}-h{run}"))
                bare_times.append(bare(lab, cell, Path(tmp) / f"{cell.id}-b{run}"))
            h, b = statistics.median(harness_times), statistics.median(bare_times)
            print(f"{cell.id:28} {h:10.3f} {b:8.3f} {h / b:6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
