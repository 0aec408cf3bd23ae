"""The Debian cells (matrix/debian.toml): a cold boot to a logged-in shell against a restore of the
cell's snapshot to a shell, side by side in one run; each cold boot's console milestones (firmware,
loader, kernel, initrd, userspace, login, ready: seconds from QEMU's start, harness/timeline.py) and
systemd's own phases (firmware, loader, kernel, initrd, userspace, from systemd-analyze). Medians over
--runs, with the spread; rounds alternate cold and restore, so drift in host load hits both alike.

    .venv/bin/python bench/debian_boot.py [--runs 3] [--cell x86_64-ovmf-disk-debian]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.deadline import Deadline
from harness.net import UserNet
from harness.timeline import Phase
from matrix.lab import Lab
from matrix.model import Cell, load_matrix
from matrix.userspace import PHASES, read_userspace

MATRIX = Path(__file__).resolve().parent.parent / "matrix" / "debian.toml"
NIC = (UserNet(restrict=False),)
BUDGET = 900.0  # a hang, not a gate
MILESTONES = (Phase.FIRMWARE, Phase.BOOTLOADER, Phase.KERNEL, Phase.INITRD, Phase.USERSPACE, Phase.INIT, Phase.READY)


def cold(lab: Lab, cell: Cell, workdir: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """Seconds to a logged-in shell, the console's milestones, and systemd-analyze's phases."""
    machine, record = lab.machine(cell, workdir, nics=NIC)
    started = time.monotonic()
    with machine:
        lab.boot(machine, record, Deadline.after(BUDGET))
        seconds = time.monotonic() - started
        return seconds, dict(record.milestones), read_userspace(machine.console, Deadline.after(BUDGET)).phases


def restore(lab: Lab, cell: Cell, workdir: Path) -> float:
    machine, record = lab.machine(cell, workdir, nics=NIC, restore=True)
    started = time.monotonic()
    try:
        lab.resume(machine, record, Deadline.after(BUDGET))  # starts the machine itself
        return time.monotonic() - started
    finally:
        machine.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def spreads(runs: list[dict[str, float]], names: tuple[str, ...]) -> list[str]:
    """Each name's spread over the runs, or "-" where a run lacks it (no LoaderTime, no loader line)."""
    return [spread([run[name] for run in runs]) if all(name in run for run in runs) else "-" for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cell", action="append", default=[])
    args = parser.parse_args()
    lab = Lab()
    cells = [c for c in load_matrix(MATRIX) if not args.cell or c.id in args.cell]
    print(f"{'cell':28} {'cold to login s':>18} {'restore s':>18} {'ratio':>6}  " + "  ".join(PHASES))
    console_rows = []
    with tempfile.TemporaryDirectory(prefix="bench-debian-") as scratch:
        for cell in cells:
            root = Path(scratch) / cell.id
            lab.machine(cell, root / "snapshot", nics=NIC, restore=True)  # the snapshot, before any timing
            colds, restores, milestones, phases = [], [], [], []
            for run in range(args.runs):
                seconds, seen, phase = cold(lab, cell, root / f"cold-{run}")
                colds.append(seconds)
                milestones.append(seen)
                phases.append(phase)
                restores.append(restore(lab, cell, root / f"restore-{run}"))
            print(f"{cell.id:28} {spread(colds):>18} {spread(restores):>18} "
                  f"{statistics.median(colds) / statistics.median(restores):5.0f}x  "
                  + "  ".join(spreads(phases, PHASES)), flush=True)
            console_rows.append(f"{cell.id:28} " + "  ".join(spreads(milestones, MILESTONES)))
    print(f"median (min-max) over {args.runs} runs; phases in seconds as systemd-analyze gives them\n")
    print(f"{'cell':28} " + "  ".join(MILESTONES))
    print("\n".join(console_rows))
    print(f"console milestones, seconds from QEMU's start, median (min-max) over {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
