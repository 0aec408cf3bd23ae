"""`bootmatrix run` of a matrix, warm, with -j 1 against -j auto, alternating in one run so that drift in
the host's load hits both alike: each round's wall time, whether every cell passed, and the ratio.

    .venv/bin/python bench/run_jobs.py [--matrix matrix/default.toml] [--rounds 2]

The cache must be warm (run the matrix once first): this measures booting, not building.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(matrix: Path, jobs: str, results: Path) -> tuple[float, bool]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "matrix.cli", "run", str(matrix), "-j", jobs, "--no-history",
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True, check=False)
    return time.monotonic() - started, done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=Path, default=ROOT / "matrix" / "default.toml")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"1": [], "auto": []}
    with tempfile.TemporaryDirectory(prefix="bm-run-jobs-") as scratch:
        for round_number in range(args.rounds):
            for jobs in ("1", "auto"):
                seconds, passed = one_run(args.matrix, jobs, Path(scratch))
                times[jobs].append(seconds)
                verdict = "all passed" if passed else "FAILED"
                print(f"round {round_number + 1}  -j {jobs:4}  {seconds:6.1f} s  {verdict}", flush=True)
    one, auto = statistics.median(times["1"]), statistics.median(times["auto"])
    print(f"median -j 1 {one:.1f} s ({min(times['1']):.1f}-{max(times['1']):.1f}), -j auto {auto:.1f} s "
          f"({min(times['auto']):.1f}-{max(times['auto']):.1f}), ratio {one / auto:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
