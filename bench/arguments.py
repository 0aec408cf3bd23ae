"""The command line every per-arch benchmark shares: --runs N (medians over N) and --arch A (repeatable)."""

from __future__ import annotations

import argparse


def runs_and_arches(doc: str | None, runs: int = 5) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--arch", action="append", default=[])
    return parser.parse_args()
