"""Firmware regression checks: the same cells booted with two firmware sets, side by side.

A cell regresses when it passes every time with the baseline set and fails with the candidate, or when
its firmware phase (QEMU start to kernel start: firmware plus boot loader) is slower beyond noise:
the candidate's median exceeds the baseline's by more than TOLERANCE plus SLACK seconds, and even the
candidate's fastest boot is slower than the baseline's slowest. Medians of repeated boots, so one slow
boot on a busy host does not fail a cell, and a real slowdown does.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.timeline import Phase
from matrix.lab import Lab, Unavailable
from matrix.model import Cell

TOLERANCE = 0.20  # relative
SLACK = 0.25  # seconds, for phases too short for a ratio to mean much
FIRMWARE_PHASE = Phase.KERNEL  # milestone that ends the firmware phase


@dataclass
class Sample:
    passed: bool
    milestones: dict[str, float]
    reason: str = ""


@dataclass
class Summary:
    firmware_set: str
    samples: list[Sample] = field(default_factory=list)
    unavailable: str = ""

    @property
    def passes(self) -> int:
        return sum(s.passed for s in self.samples)

    @property
    def all_passed(self) -> bool:
        return bool(self.samples) and self.passes == len(self.samples)

    def times(self, milestone: str) -> list[float]:
        return [s.milestones[milestone] for s in self.samples if s.passed and milestone in s.milestones]

    def median(self, milestone: str) -> float | None:
        values = self.times(milestone)
        return statistics.median(values) if values else None

    def result(self) -> str:
        if self.unavailable:
            return "unavailable"
        return f"{self.passes}/{len(self.samples)} pass"


def judge(baseline: Summary, candidate: Summary) -> str | None:
    """The regression of `candidate` against `baseline`, in words, or None."""
    if baseline.unavailable or candidate.unavailable:
        return None
    if baseline.all_passed and not candidate.all_passed:
        reasons = "; ".join(sorted({s.reason for s in candidate.samples if not s.passed}))
        return (f"passes with {baseline.firmware_set} ({baseline.result()}) but fails with "
                f"{candidate.firmware_set} ({candidate.result()}): {reasons}")
    base, cand = baseline.times(FIRMWARE_PHASE), candidate.times(FIRMWARE_PHASE)
    if not base or not cand:
        return None
    base_median, cand_median = statistics.median(base), statistics.median(cand)
    if cand_median > base_median * (1 + TOLERANCE) + SLACK and min(cand) > max(base):
        return (f"firmware phase slower with {candidate.firmware_set}: median {cand_median:.2f} s vs "
                f"{base_median:.2f} s with {baseline.firmware_set} (+{(cand_median / base_median - 1) * 100:.0f} %)")
    return None


def sample_cell(lab: Lab, cell: Cell, firmware_set: str, repeat: int, folder: Path) -> Summary:
    variant = cell.model_copy(update={"firmware_set": firmware_set})
    summary = Summary(firmware_set)
    for attempt in range(repeat):
        try:
            outcome = lab.boot_and_check(variant, folder / f"{variant.id}-{attempt}")
            summary.samples.append(Sample(outcome.passed, outcome.record.milestones, outcome.reason))
        except Unavailable as error:
            summary.unavailable = str(error).splitlines()[0]
            break
    return summary
