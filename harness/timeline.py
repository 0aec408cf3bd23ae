"""Boot phases as data: when each milestone first showed on the console (or was marked by the harness),
in seconds since QEMU started, on the monotonic clock.

The console feeds every cleaned chunk to the timelines watching it, so milestones are taken as the text
arrives, whatever the test is waiting for at the time, and a phase that never shows is simply absent.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Milestone:
    name: str
    t: float
    text: str


@dataclass
class Timeline:
    phases: list[tuple[str, str]]  # (name, regex), in the order a boot passes them
    marks: dict[str, Milestone] = field(default_factory=dict)
    _carry: str = ""

    def __post_init__(self) -> None:
        self._compiled = [(name, re.compile(pattern)) for name, pattern in self.phases]

    def observe(self, text: str, t: float) -> None:
        if not text:
            return
        self.mark("first-output", t, text.strip()[:80])
        window = self._carry + text
        for index, (name, regex) in enumerate(self._compiled):
            # A phase is only taken before any later phase: "EDK II" in the kernel's log is not firmware.
            if name in self.marks or any(later in self.marks for later, _ in self._compiled[index + 1 :]):
                continue
            hit = regex.search(window)
            if hit:
                line_end = window.find("\n", hit.end())
                line = window[hit.start() : line_end if line_end > 0 else None]
                self.marks[name] = Milestone(name, round(t, 3), line)
        self._carry = window[-512:]

    def mark(self, name: str, t: float, text: str = "") -> None:
        """Record a milestone the harness knows of (first output, shell ready); the first one stands."""
        self.marks.setdefault(name, Milestone(name, round(t, 3), text))

    def as_dict(self) -> dict[str, float]:
        return {m.name: m.t for m in sorted(self.marks.values(), key=lambda m: m.t)}

    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase: from one milestone to the next, in time order."""
        ordered = sorted(self.marks.values(), key=lambda m: m.t)
        return {f"{a.name}->{b.name}": round(b.t - a.t, 3) for a, b in itertools.pairwise(ordered)}
