"""Deadlines as objects, on the monotonic clock.

A test that waits for several things in a row (firmware, kernel, shell) passes one Deadline down
instead of loose second counts, so the last wait cannot silently get the whole budget again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    expires_at: float  # time.monotonic() value
    budget: float  # seconds given at creation, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def sooner(self, seconds: float) -> Deadline:
        """The earlier of this deadline and one `seconds` from now."""
        other = Deadline.after(seconds)
        return other if other.expires_at < self.expires_at else self

    def __str__(self) -> str:
        return f"{self.budget:.1f} s deadline ({self.remaining():.1f} s left)"
