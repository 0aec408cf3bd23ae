"""Count crashes of x86_64 guests under Go build load, per QEMU build: each run boots the mostly-source
image and builds a command with an empty Go cache (tests/vm/test_go_build_load.py's load). Prints, per
QEMU, how many runs passed and how each failed run ended (QEMU's own words, a kernel panic, ...).

    .venv/bin/python bench/go_build_load.py [--runs 5] [--qemu host --qemu pinned] [--smp 2] [--cpu MODEL]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.deadline import Deadline
from harness.errors import MachineError
from matrix.lab import Lab
from matrix.profiles import direct_cell
from tests.vm.test_go_build_load import COLD_BUILD


def one_run(lab: Lab, qemu: str, smp: int, cpu: str | None, workdir: Path) -> tuple[bool, str, float]:
    cell = direct_cell("x86_64", image="gosource", memory_mib=2048, smp=smp, qemu=qemu)
    machine, record = lab.machine(cell, workdir)
    if cpu:
        machine.spec = replace(machine.spec, cpu=cpu)
    started = time.monotonic()
    try:
        with machine:
            lab.boot(machine, record, Deadline.after(300))
            output, code = machine.console.run(COLD_BUILD, Deadline.after(1200))
            if code != 0:
                return False, f"build exit {code}: {output[-200:]}", time.monotonic() - started
    except MachineError as error:
        return False, str(error).splitlines()[0], time.monotonic() - started
    return True, "", time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--qemu", action="append", choices=("pinned", "host"))
    parser.add_argument("--smp", type=int, default=2)
    parser.add_argument("--cpu", help="QEMU -cpu model and flags, e.g. qemu64,-cx16 (default: QEMU's)")
    args = parser.parse_args()
    lab = Lab()
    folder = Path("results") / time.strftime("bench-go-build-load-%Y%m%d-%H%M%S")
    for qemu in args.qemu or ["host", "pinned"]:
        outcomes = []
        for run in range(args.runs):
            passed, reason, seconds = one_run(lab, qemu, args.smp, args.cpu, folder / f"{qemu}-{run + 1}")
            outcomes.append(passed)
            print(f"{qemu} QEMU {lab.qemu(qemu).version('x86_64')} run {run + 1}: "
                  f"{'ok' if passed else 'FAILED'} after {seconds:.0f} s {reason}", flush=True)
        print(f"{qemu}: {sum(outcomes)}/{len(outcomes)} runs survived\n", flush=True)
    print(f"console logs, argv and QMP events of every run: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
