"""The boot's timeline past the kernel, as systemd measured it (issue 23): `systemd-analyze` gives
firmware and loader (from systemd-boot's LoaderTime* variables, on UEFI), kernel, initrd and userspace,
and `systemd-analyze blame` the slowest units. They sit beside the console-derived milestones in the
run's summary and go to the history as metrics, which a matrix file may gate like any other."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.console import Console
from harness.deadline import Deadline

PHASES = ("firmware", "loader", "kernel", "initrd", "userspace")
METRICS = tuple(f"systemd_{phase}_s" for phase in PHASES)
SLOWEST = 3
UNITS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
SPAN = re.compile(r"(\d+(?:\.\d+)?)(h|min|ms|us|µs|s)\b")


def seconds(span: str) -> float:
    """systemd's time span ("1min 2.345s", "567ms", "12us") in seconds."""
    parts = SPAN.findall(span)
    if not parts:
        raise ValueError(f"not a systemd time span: {span!r}")
    return sum(float(value) * UNITS[unit] for value, unit in parts)


def parse_startup(text: str) -> dict[str, float]:
    """The phases of `systemd-analyze time` ("Startup finished in 1.2s (firmware) + ... = 53s"), in
    seconds; only the phases it names (no firmware or loader without UEFI's loader variables)."""
    line = next((ln for ln in text.splitlines() if "Startup finished in" in ln), None)
    if line is None:
        raise ValueError(f"systemd-analyze printed no 'Startup finished' line: {text.strip()[-300:]!r}")
    body = line.split("Startup finished in", 1)[1].split("=", 1)[0]
    found = {}
    for term in body.split("+"):
        named = re.match(r"\s*(.+?)\s*\((\w+)\)\s*$", term)
        if named and named.group(2) in PHASES:
            found[named.group(2)] = seconds(named.group(1))
    if "userspace" not in found:
        raise ValueError(f"systemd-analyze gave no userspace time: {line.strip()!r}")
    return found


def parse_blame(text: str, count: int = SLOWEST) -> list[tuple[str, float]]:
    """The first `count` units of `systemd-analyze blame` (slowest first), with their seconds."""
    units = []
    for line in text.splitlines():
        found = re.match(r"^\s*((?:\d+(?:\.\d+)?(?:h|min|ms|us|µs|s)\s*)+)\s(\S+)\s*$", line)
        if found:
            units.append((found.group(2), seconds(found.group(1))))
    return units[:count]


@dataclass
class Userspace:
    """What systemd says of one boot: its state (`running`, or `degraded` with failed units), the phases
    and the slowest units."""

    state: str
    failed: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    slowest: list[tuple[str, float]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        return {f"systemd_{phase}_s": value for phase, value in self.phases.items()}


def read_userspace(console: Console, deadline: Deadline) -> Userspace:
    """Wait for the boot to finish (`systemctl is-system-running --wait`), then read systemd's timeline.
    RuntimeError when a command cannot run at all."""
    state, _ = console.run("systemctl is-system-running --wait", deadline)
    failed_out, _ = console.run("systemctl list-units --failed --plain --no-legend --no-pager", deadline)
    failed = [line.split()[0] for line in failed_out.splitlines() if line.strip()]
    time_out, code = console.run("systemd-analyze time --no-pager", deadline)
    if code != 0:
        raise RuntimeError(f"systemd-analyze time failed (exit {code}): {time_out.strip()[-300:]}")
    blame_out, code = console.run(f"systemd-analyze blame --no-pager | head -n {SLOWEST}", deadline)
    if code != 0:
        raise RuntimeError(f"systemd-analyze blame failed (exit {code}): {blame_out.strip()[-300:]}")
    return Userspace(state.strip().splitlines()[-1] if state.strip() else "", failed, parse_startup(time_out),
                     parse_blame(blame_out))
