"""The A/B power-cut sweep in full (issue 24): kills at seeded moments spread over every phase of an
update (download, verify, entry switch, reboot, bless), and the disk rebuilt at every flush point of one
logged update plus seeded lost-write states; after each, the machine must boot a consistent slot, keep
its data, take the next update and pass e2fsck (matrix/ab_sweep.py). Prints the table of cuts and the
counts; exit 1 when any outcome is inconsistent.

    .venv/bin/python bench/ab_power_cuts.py [--arch x86_64] [--firmware ovmf] [--kills 20] [--lost 5] [--seed 24]

On 2 cores the two halves run side by side: `--no-log` in one process, `--kills 0` in another.

`make test` runs a seeded sample of the same (tests/vm/test_ab_power_cuts.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.payload_server import PayloadServer
from matrix.ab_sweep import AbRig, Outcome, crash_sample, table
from matrix.lab import Lab


def log_sweep(rig: AbRig, args: argparse.Namespace) -> list[Outcome]:
    log, base = rig.logged_update()
    states = crash_sample(log, args.seed, args.flush_points, args.lost)
    print(f"write log: {len(log.entries)} entries, {len(log.flush_points())} flush points; replaying "
          f"{len(states)} states", flush=True)
    outcomes = []
    for outcome in rig.log_sweep(states, log, base):
        outcomes.append(outcome)
        print(f"log: {outcome}", flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--firmware", default="ovmf")
    parser.add_argument("--kills", type=int, default=20, help="kills at seeded moments (default 20)")
    parser.add_argument("--flush-points", type=int, default=None, help="a seeded sample of flush points (default all)")
    parser.add_argument("--lost", type=int, default=5, help="seeded lost-write states (default 5)")
    parser.add_argument("--no-log", action="store_true", help="kills only (run the log sweep in another process)")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--keep", type=Path, help="keep the VMs' folders here (default: a temporary folder)")
    args = parser.parse_args()
    lab = Lab()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-cuts-") as folder, PayloadServer() as server:
        workdir = args.keep or Path(folder)
        workdir.mkdir(parents=True, exist_ok=True)
        rig = AbRig(lab, lab.ab_image(args.arch), args.firmware, server, workdir)
        if args.kills:
            phases = rig.calibrate()
            print("phases (start, length) in s after the update command: "
                  + ", ".join(f"{name} {start:.2f}+{length:.2f}" for name, (start, length) in phases.items()),
                  flush=True)
            for outcome in rig.kill_sweep(phases, args.kills, args.seed):
                outcomes.append(outcome)
                print(f"kill: {outcome}", flush=True)
        if not args.no_log:
            outcomes += log_sweep(rig, args)
    print()
    print(table(outcomes))
    print()
    by = Counter((o.method, o.phase) for o in outcomes)
    print("cuts by method and phase: " + ", ".join(f"{m}/{p} {n}" for (m, p), n in sorted(by.items())))
    booted = Counter(o.booted for o in outcomes)
    bad = [o for o in outcomes if not o.consistent]
    print(f"{len(outcomes)} cuts ({args.arch} {args.firmware}, seed {args.seed}): booted "
          + ", ".join(f"{k} {v}" for k, v in sorted(booted.items()))
          + f"; {len(bad)} inconsistent; {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
