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


def _wait_reading(machine: Machine, until: float) -> None:
    """Wait until `until` (time.monotonic), reading the console meanwhile: its lines keep their true
    times, so a test can tell which side of the cut each fell on."""
    while (left := until - time.monotonic()) > 0:
        machine.console.pump(min(left, 0.05))


def random_offset(seed: int, phase: str, seconds: float) -> float:
    """The seeded offset into a phase of `seconds`: the same seed and phase give the same offset."""
    return random.Random(f"{phase}/{seed}").uniform(0.0, seconds)


def cut_during(machine: Machine, phase: str, started_at: float, seconds: float, seed: int) -> Cut:
    """Cut the power at a seeded offset into the phase `phase`, which began `started_at` (time.monotonic)
    and lasts about `seconds`."""
    offset = random_offset(seed, phase, seconds)
    _wait_reading(machine, started_at + offset)
    return Cut(machine.power_cut(), f"{offset:.3f} s into {phase} (seed {seed})")


def cut_into_phase(machine: Machine, begins: str, seconds: float, seed: int, deadline: Deadline) -> Cut:
    """Cut at a seeded offset into the phase that begins with a console line matching `begins` and lasts
    about `seconds`: anchored on the guest's own line, so the host's timing of what came before (a
    program's start under TCG) does not move the cut out of the phase."""
    machine.console.expect(begins, deadline)
    return cut_during(machine, begins, time.monotonic(), seconds, seed)
