"""Boot phases as data: when each milestone first showed on the console (or was marked by the harness),
in seconds since QEMU started, on the monotonic clock.

The console feeds every chunk to the timelines watching it, so milestones are taken as the text
arrives, whatever the test is waiting for at the time, and a phase that never shows is simply absent.
Phases are matched on the text as the guest sent it (escape sequences kept) as well as on the cleaned
text: a firmware's screen control is output too, and OVMF's is all it prints on a direct kernel boot.
A milestone's text shows an escape character as `^[`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """The milestone names, spelled here only. A cold boot passes (some of) FIRST_OUTPUT to READY in
    this order; a VM restored from a snapshot has PROCESS, INCOMING and READY instead."""

    FIRST_OUTPUT = "first-output"  # the first byte on the console, whoever sent it
    FIRMWARE = "firmware"  # the firmware's first words
    BOOTLOADER = "bootloader"  # a boot loader or boot manager taking over
    KERNEL = "kernel"  # the EFI stub or the kernel's first line
    INITRD = "initrd"  # the kernel starting the initramfs's /init (where an image's timeline watches for it)
    USERSPACE = "userspace"  # init of the real root starting (systemd on the Debian image)
    INIT = "init"  # the image's readiness marker, or a cell's `ready` pattern
    READY = "ready"  # readiness complete (a shell that answers, where there is one)
    PROCESS = "process"  # a restore: QEMU up and its monitor answering
    INCOMING = "incoming"  # a restore: the saved state loaded


BOOT_PHASES = (Phase.FIRST_OUTPUT, Phase.FIRMWARE, Phase.BOOTLOADER, Phase.KERNEL, Phase.INITRD, Phase.USERSPACE,
               Phase.INIT, Phase.READY)


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
    _raw_carry: str = ""

    def __post_init__(self) -> None:
        self._compiled = [(name, re.compile(pattern)) for name, pattern in self.phases]

    def observe(self, text: str, t: float, raw: str | None = None) -> None:
        """Take the milestones `text` (the cleaned chunk) shows; `raw`, the same chunk as sent, is
        searched first, so a pattern may name an escape sequence, and a phrase an escape splits is
        still found in the cleaned text."""
        if not text and not raw:
            return
        self.mark(Phase.FIRST_OUTPUT, t, (text.strip() or (raw or "").replace("\x1b", "^[").strip())[:80])
        window = self._carry + text
        raw_window = self._raw_carry + (raw or "")
        for index, (name, regex) in enumerate(self._compiled):
            # A phase is only taken before any later phase: "EDK II" in the kernel's log is not firmware.
            if name in self.marks or any(later in self.marks for later, _ in self._compiled[index + 1 :]):
                continue
            for seen in (raw_window, window) if raw is not None else (window,):
                hit = regex.search(seen)
                if hit:
                    line_end = seen.find("\n", hit.end())
                    line = seen[hit.start() : line_end if line_end > 0 else None]
                    self.marks[name] = Milestone(name, round(t, 3), line.replace("\x1b", "^["))
                    break
        self._carry = window[-512:]
        self._raw_carry = raw_window[-512:]

    def mark(self, name: str, t: float, text: str = "") -> None:
        """Record a milestone the harness knows of (first output, shell ready); the first one stands."""
        self.marks.setdefault(name, Milestone(name, round(t, 3), text))

    def as_dict(self) -> dict[str, float]:
        return {m.name: m.t for m in sorted(self.marks.values(), key=lambda m: m.t)}

    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase: from one milestone to the next, in time order."""
        ordered = sorted(self.marks.values(), key=lambda m: m.t)
        return {f"{a.name}->{b.name}": round(b.t - a.t, 3) for a, b in itertools.pairwise(ordered)}
