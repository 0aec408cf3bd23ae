"""Boot once, restore many times: per arch, in one run, a cold boot to a shell against a restore from a
snapshot to a shell (QEMU start, QMP, incoming migration, `cont`, a fresh console round trip), each the
median of --runs; the snapshot's size on disk and its save time; for two ways of saving RAM: plain
streaming to a `file:` URI (what harness/snapshot.py uses) and QEMU 10's `mapped-ram` capability.

Rounds alternate cold, stream restore, mapped-ram restore, so drift in host load hits all alike.

    .venv/bin/python bench/snapshot.py [--runs 5] [--arch riscv64]

`savevm` into a qcow2 disk is not measured: our direct cells have no disk to hold the state, and a
restore that needs a writable qcow2 image per test is what the file-based stream avoids.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness.snapshot as snapshot_module
from bench.arguments import runs_and_arches
from harness.deadline import Deadline
from harness.machine import Machine
from harness.snapshot import Snapshot, restored_spec, resume, save, with_own_overlays
from harness.timeline import Timeline
from matrix.firmware import DIRECT_FIRMWARE
from matrix.lab import Lab
from matrix.model import Cell
from matrix.profiles import direct_cell

VARIANTS = {"stream": [], "mapped-ram": [{"capability": "mapped-ram", "state": True}]}


def cold(lab: Lab, cell: Cell, workdir: Path) -> float:
    machine, record = lab.machine(cell, workdir)
    started = time.monotonic()
    with machine:
        lab.boot(machine, record, Deadline.after(300))
        return time.monotonic() - started


def make_snapshot(lab: Lab, cell: Cell, workdir: Path, variant: str) -> tuple[Snapshot, float]:
    snapshot_module.CAPABILITIES = VARIANTS[variant]
    machine, record = lab.machine(cell, workdir / "boot")
    machine.spec = with_own_overlays(machine.spec, machine.workdir)
    with machine:
        lab.boot(machine, record, Deadline.after(300))
        started = time.monotonic()
        saved = save(machine, workdir / "snapshot", Deadline.after(300))
        return saved, time.monotonic() - started


def restore(lab: Lab, cell: Cell, saved: Snapshot, workdir: Path, variant: str) -> float:
    snapshot_module.CAPABILITIES = VARIANTS[variant]
    template, _ = lab.machine(cell, workdir / "template")
    machine = Machine(restored_spec(template.spec, saved, workdir), template.qemu, workdir, timeline=Timeline([]))
    started = time.monotonic()
    with machine:
        resume(machine, saved, Deadline.after(120))
        machine.console.wait_shell(Deadline.after(120))
        return time.monotonic() - started


def size(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes allocated on disk) of the snapshot folder."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def main() -> int:
    args = runs_and_arches(__doc__)
    lab = Lab()
    print(f"{'cell':24} {'cold s':>7} {'restore s':>9} {'ratio':>6} {'mapped s':>8} {'save s':>6} "
          f"{'mapped save':>11} {'state MB':>8} {'mapped MB (alloc)':>18}")
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as scratch:
        root = Path(scratch)
        for arch in args.arch or list(DIRECT_FIRMWARE):
            cell = direct_cell(arch)
            snapshots = {v: make_snapshot(lab, cell, root / arch / v, v) for v in VARIANTS}
            times: dict[str, list[float]] = {"cold": [], **{v: [] for v in VARIANTS}}
            for run in range(args.runs):
                times["cold"].append(cold(lab, cell, root / arch / f"cold-{run}"))
                for variant, (saved, _) in snapshots.items():
                    times[variant].append(restore(lab, cell, saved, root / arch / f"{variant}-{run}", variant))
            median = {k: statistics.median(v) for k, v in times.items()}
            spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}
            stream_size, _ = size(snapshots["stream"][0].folder)
            mapped_size, mapped_alloc = size(snapshots["mapped-ram"][0].folder)
            ratio = median["cold"] / median["stream"]
            print(f"{cell.id:24} {median['cold']:7.2f} {median['stream']:9.3f} {ratio:5.1f}x "
                  f"{median['mapped-ram']:8.3f} {snapshots['stream'][1]:6.2f} {snapshots['mapped-ram'][1]:11.2f} "
                  f"{stream_size / 1e6:8.1f} {mapped_size / 1e6:9.1f} ({mapped_alloc / 1e6:5.1f})")
            print(f"{'':24} spread over {args.runs} runs: cold {spread['cold']}, restore {spread['stream']}, "
                  f"mapped-ram {spread['mapped-ram']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
