"""Two ways to test a power cut, side by side in one run: killing QEMU at seeded moments, against one
logged run whose crash states are rebuilt from QEMU's write log (harness/writelog.py).

The guest (x86_64, SeaBIOS, direct boot) writes generations 1-6 of sectors 0-3 of a raw disk: odd
generations made durable with fsync, even ones left unflushed, printing `done gN` after each. For each
way this prints the crash states it tried, the distinct disk states they gave, how many of those lost
a write the guest had completed (possible on real hardware for an unflushed write; the test subject
must survive it: for a kill, a disk older than the last `done` line), and the seconds per state
(boots included).

    .venv/bin/python bench/power_cuts.py [--runs 8] [--seed 1]

A kill keeps every write QEMU had handed to the host (the page cache outlives QEMU), so it can only
cut between writes; the log also gives the states a volatile write cache leaves.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.deadline import Deadline
from harness.machine import Machine
from harness.power import cut_during
from harness.spec import Disk, MachineSpec
from harness.writelog import crash_states, read_log, replay
from matrix.lab import Lab
from matrix.model import Cell

CELL = Cell(arch="x86_64", firmware="seabios", media="direct")
SECTOR = 512
GENERATIONS = 6
WORKLOAD = "; ".join(
    f"yes gen{g} | head -c 2048 > /tmp/g; dd if=/tmp/g of=/dev/vda bs=2048 count=1 "
    f"conv=notrunc{',fsync' if g % 2 else ''} 2>/dev/null; echo done\\ g{g}; sleep 0.3"
    for g in range(1, GENERATIONS + 1)
) + "; echo all''-done"


def generations(disk: Path) -> tuple[int, ...]:
    """The generation in each of sectors 0-3 (0: the disk's first contents)."""
    data = disk.read_bytes()
    found = []
    for n in range(4):
        words = re.findall(rb"gen(\d)", data[n * SECTOR:(n + 1) * SECTOR])
        found.append(int(words[0]) if words else 0)
    return tuple(found)


def boot_writer(lab: Lab, workdir: Path, disk: Path, log: Path | None) -> Machine:
    def customize(spec: MachineSpec) -> MachineSpec:
        return replace(spec, disks=(Disk(disk, snapshot=False, write_log=log),))

    machine, record = lab.machine(CELL, workdir, customize=customize)
    machine.start()
    lab.boot(machine, record, Deadline.after(120))
    return machine


def completed(console_text: str) -> int:
    done = [int(g) for g in re.findall(r"done g(\d)", console_text)]
    return max(done, default=0)


def by_kill(lab: Lab, scratch: Path, runs: int, seed: int) -> dict[str, float]:
    states, lost, seconds = set(), 0, 0.0
    for run in range(runs):
        disk = scratch / f"kill-{run}.img"
        disk.write_bytes(b"old\n" * (1 << 18))
        started = time.monotonic()
        machine = boot_writer(lab, scratch / f"kill-{run}", disk, None)
        machine.console.sendline(WORKLOAD)
        cut_during(machine, "workload", time.monotonic(), GENERATIONS * 0.35, seed * 100 + run)
        seconds += time.monotonic() - started
        state = generations(disk)
        states.add(state)
        lost += min(state) < completed((machine.workdir / "console.log").read_text())
    return {"tried": runs, "distinct": len(states), "lost_completed": lost, "seconds_per_state": seconds / runs}


def by_log(lab: Lab, scratch: Path, seed: int) -> dict[str, float]:
    disk, base, log_path = scratch / "log.img", scratch / "base.img", scratch / "writes.log"
    disk.write_bytes(b"old\n" * (1 << 18))
    base.write_bytes(disk.read_bytes())
    started = time.monotonic()
    machine = boot_writer(lab, scratch / "logged", disk, log_path)
    machine.console.sendline(WORKLOAD)
    machine.console.expect(r"all-done", Deadline.after(60))
    machine.power_cut()
    log = read_log(log_path)
    states, lost, tried = set(), 0, 0
    for state in crash_states(log, seed, lost_per_flush=4):
        tried += 1
        rebuilt = generations(replay(log, base, scratch / "state.img", state))
        states.add(rebuilt)
        lost += state.dropped > 0  # completed writes a volatile cache had not yet written
    seconds = time.monotonic() - started
    return {"tried": tried, "distinct": len(states), "lost_completed": lost, "seconds_per_state": seconds / tried}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="kills at seeded moments (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    lab = Lab()
    with tempfile.TemporaryDirectory(prefix="bench-power-cuts-") as folder:
        scratch = Path(folder)
        rows = {"kill at a seeded moment": by_kill(lab, scratch, args.runs, args.seed),
                "write log replay": by_log(lab, scratch, args.seed)}
    print(f"{'method':26} {'states tried':>12} {'distinct':>8} {'lost a completed write':>22} {'s/state':>8}")
    for name, row in rows.items():
        print(f"{name:26} {row['tried']:12d} {row['distinct']:8d} {row['lost_completed']:22d} "
              f"{row['seconds_per_state']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
