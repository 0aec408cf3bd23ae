"""What a warm run costs before any VM boots: a fresh process prepares every cell of a matrix (QEMU
prefix, images, firmware, stick, accelerator choice) from a warm cache, as each `bootmatrix run` and
each xdist worker does. Prints the seconds per run and how much of it is the store verifying its
entries by hash, and, with --no-network, runs each round inside a network namespace with no interface
at all, so any download attempt would fail the round.

    .venv/bin/python bench/warm_prepare.py [--runs 5] [--matrix FILE] [--no-network]
    PYTHONPATH=<worktree of an older commit> .venv/bin/python bench/warm_prepare.py    (the same, for it)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_ROUND = r"""
import json, tempfile, time
from pathlib import Path
import images.store as store_module
from matrix.lab import Lab
from matrix.model import load_matrix

spent = [0.0]
real_tree_sha256 = store_module.tree_sha256

def timed_tree_sha256(root):
    started = time.monotonic()
    try:
        return real_tree_sha256(root)
    finally:
        spent[0] += time.monotonic() - started

store_module.tree_sha256 = timed_tree_sha256
started = time.monotonic()
lab = Lab()
with tempfile.TemporaryDirectory() as tmp:
    for cell in load_matrix(Path(MATRIX)):
        lab.machine(cell, Path(tmp) / cell.id)
print(json.dumps({"seconds": time.monotonic() - started, "store_hashing": spent[0],
                  "code": str(Path(store_module.__file__).parent.parent)}))
"""


def one_round(matrix: Path, no_network: bool) -> dict[str, float | str]:
    code = ONE_ROUND.replace("MATRIX", repr(str(matrix)))
    argv = [sys.executable, "-c", code]
    if no_network:
        argv = ["unshare", "--net", *argv] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user", *argv]
    # Run outside the checkout, so PYTHONPATH decides which bootmatrix is measured (a worktree of an older
    # commit, say); by default this checkout's.
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tempfile.gettempdir(), env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"a round failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--matrix", type=lambda p: Path(p).resolve(), default=ROOT / "matrix/default.toml")
    parser.add_argument("--no-network", action="store_true", help="each round in a namespace with no network")
    args = parser.parse_args()
    one_round(args.matrix, args.no_network)  # make sure everything is built and cached first
    rounds = [one_round(args.matrix, args.no_network) for _ in range(args.runs)]
    seconds = [float(r["seconds"]) for r in rounds]
    hashing = [float(r["store_hashing"]) for r in rounds]
    print(f"prepare every cell of {args.matrix.name} in a fresh process, warm cache, {args.runs} runs, "
          f"code from {rounds[0]['code']}"
          + (" with no network at all" if args.no_network else ""))
    print(f"  total       median {statistics.median(seconds):.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f})")
    print(f"  store hash  median {statistics.median(hashing):.2f} s  (min {min(hashing):.2f}, max {max(hashing):.2f})"
          f"  = {statistics.median(hashing) / statistics.median(seconds):.0%} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
