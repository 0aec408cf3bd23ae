"""Failures a VM can have, each carrying what a person needs to see why: the reason, and the console tail."""

from __future__ import annotations

import signal


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class MachineError(Exception):
    """Base class of every harness failure."""


class LaunchError(MachineError):
    """QEMU did not come up: carries the argv, its exit status and what it printed."""

    def __init__(self, reason: str, argv: list[str], returncode: int | None, output: str):
        self.reason, self.argv, self.returncode, self.output = reason, argv, returncode, output
        super().__init__(
            f"{reason}\nQEMU {describe_exit(returncode)}\nargv: {' '.join(argv)}\n"
            f"QEMU output:\n{output.strip()[-3000:]}"
        )


class GuestError(MachineError):
    """The guest failed while we were waiting on it. `reason` is one line; `tail` is the console's end."""

    def __init__(self, reason: str, tail: str = "", waited_for: str = ""):
        self.reason, self.tail, self.waited_for = reason, tail, waited_for
        waiting = f" while waiting for {waited_for}" if waited_for else ""
        super().__init__(f"{reason}{waiting}\n--- console tail ---\n{tail.rstrip()[-3000:]}\n--- end of tail ---")


class GuestPanic(GuestError):
    """A bad pattern (kernel panic, Oops, firmware error) appeared, or QMP reported GUEST_PANICKED."""


class GuestGone(GuestError):
    """QEMU exited (crashed, killed, or the guest powered off / reset under -no-reboot)."""


class AbnormalShutdown(GuestError):
    """QEMU had ended on its own before the harness stopped it (killed by a signal, a non-zero status, or
    a guest panic under -no-reboot) and nothing had reported it: the test must not pass as if all was well."""


class ConsoleTimeout(GuestError):
    """The deadline passed with QEMU alive and nothing bad seen: a hang."""
