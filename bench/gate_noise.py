"""The compile gate under host noise: one gosource cell run again and again, on a quiet host and beside
busy processes, with what the gate judged each time.

Each round runs `bootmatrix run MATRIX --cell CELL --no-history` (the command of the issue's flake) in
a fresh results folder while `load` host processes spin on pure Python arithmetic (started before the
run, killed after it), then reads the cell's `check` from summary.json: the speed reference's median
(the guest's go build of a fixed program, matrix/latency.py), the median and slowest first call, the factor the budgets
were stretched by, and whether the gate passed. The loads are interleaved round by round (0, 1, 2, 0,
1, 2, ...), so slow drift of the host falls on every load alike.

The last table divides each figure by the quiet rounds' median: a reference that follows the load
grows by the same ratio as the first calls.

    .venv/bin/python bench/gate_noise.py [--cell riscv64-opensbi-direct-gosource] [--loads 0,1,2]
                                         [--rounds 2] [--matrix matrix/gosource.toml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matrix.latency import CallTimes

ROOT = Path(__file__).resolve().parent.parent
BUSY = "while True: pass"


@dataclass
class Round:
    load: int
    reference: float
    median: float
    slowest: float
    slowest_command: str
    factor: float
    passed: bool
    failures: list[str]


def one_round(matrix: Path, cell: str, load: int) -> Round:
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        with tempfile.TemporaryDirectory(prefix="bm-gate-noise-") as results:
            run = subprocess.run(
                [str(ROOT / ".venv/bin/bootmatrix"), "run", str(matrix), "--cell", cell, "--no-history",
                 "--results", results], capture_output=True, text=True, check=False)
            summaries = sorted(Path(results).glob("*/summary.json"))
            if not summaries:
                raise SystemExit(f"no summary.json from the run (exit {run.returncode}): {run.stderr[-2000:]}")
            summary = json.loads(summaries[-1].read_text())
    finally:
        for process in busy:
            process.kill()
            process.wait()
    result = next(r for r in summary["cells"] if r["cell"] == cell)
    check = result.get("check") or {}
    if "compile_median" not in check:
        raise SystemExit(f"{cell}: no compile sweep in the result: {result.get('reason', '')}")
    calls = {name: CallTimes(**times).judged for name, times in check["compile"].items()}  # as the gate saw them
    slowest = max(calls, key=lambda name: calls[name])
    failures = [gate for gate in result.get("gates", []) if "first call" in gate]
    return Round(load, check["speed_reference_s"], check["compile_median"], check["compile_max"], slowest,
                 check["budget_factor"], not failures, failures)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=Path, default=ROOT / "matrix/gosource.toml")
    parser.add_argument("--cell", default="riscv64-opensbi-direct-gosource")
    parser.add_argument("--loads", default="0,1,2", help="busy host processes per round, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per load")
    args = parser.parse_args()
    loads = [int(load) for load in args.loads.split(",")]
    rounds: list[Round] = []
    for number in range(args.rounds):
        for load in loads:
            found = one_round(args.matrix, args.cell, load)
            rounds.append(found)
            print(f"round {number + 1} load {load}: reference {found.reference:.2f} s, median {found.median:.2f} s,"
                  f" slowest {found.slowest_command} {found.slowest:.2f} s, factor x{found.factor:.2f},"
                  f" {'pass' if found.passed else 'FAIL: ' + '; '.join(found.failures)}", flush=True)
    print(f"\n{args.cell}, {args.rounds} round(s) per load")
    print("| busy host processes | rounds | reference s | median first call s | slowest s | factor | gate |")
    print("|---|---|---|---|---|---|---|")
    for load in loads:
        mine = [r for r in rounds if r.load == load]
        passed = f"{sum(r.passed for r in mine)}/{len(mine)} pass"
        print(f"| {load} | {len(mine)} | {spread([r.reference for r in mine])} | {spread([r.median for r in mine])} |"
              f" {spread([r.slowest for r in mine])} | {spread([r.factor for r in mine])} | {passed} |")
    quiet = [r for r in rounds if r.load == 0]
    if quiet:
        reference0 = statistics.median(r.reference for r in quiet)
        median0 = statistics.median(r.median for r in quiet)
        print("\nratio to the quiet rounds' median (a reference that follows the load grows like the calls)")
        print("| busy host processes | reference | median first call |")
        print("|---|---|---|")
        for load in loads:
            mine = [r for r in rounds if r.load == load]
            print(f"| {load} | {spread([r.reference / reference0 for r in mine])} |"
                  f" {spread([r.median / median0 for r in mine])} |")


if __name__ == "__main__":
    main()
