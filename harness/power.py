"""Power cuts at a chosen moment: when a console line appears, or at a seeded offset into a phase.

Machine.power_cut() is the cut itself (SIGKILL of QEMU). These choose when, and say when it was, so a
test that finds a bad state names the moment and the seed that gives it again. A seeded offset is
reproducible as a choice, not as a guest state: TCG's speed varies with the host's load, so the same
offset can land on a different write; a write log (harness/writelog.py) is the exact replay.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from harness.deadline import Deadline
from harness.machine import Machine


@dataclass(frozen=True)
class Cut:
    """When a cut came: seconds after QEMU started, and what chose the moment."""

    at: float
    chosen_by: str


def cut_when(machine: Machine, pattern: str, deadline: Deadline) -> Cut:
    """Cut the power the moment the console shows a line matching `pattern` (a hang or a guest death
    before it raises, as any console wait does)."""
    machine.console.expect(pattern, deadline)
    return Cut(machine.power_cut(), f"console line {pattern!r}")


def random_offset(seed: int, phase: str, seconds: float) -> float:
    """The seeded offset into a phase of `seconds`: the same seed and phase give the same offset."""
    return random.Random(f"{phase}/{seed}").uniform(0.0, seconds)


def cut_during(machine: Machine, phase: str, started_at: float, seconds: float, seed: int) -> Cut:
    """Cut the power at a seeded offset into the phase `phase`, which began `started_at` (time.monotonic)
    and lasts about `seconds`."""
    offset = random_offset(seed, phase, seconds)
    time.sleep(max(0.0, started_at + offset - time.monotonic()))
    return Cut(machine.power_cut(), f"{offset:.3f} s into {phase} (seed {seed})")
