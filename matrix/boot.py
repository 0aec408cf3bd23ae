"""The boot protocol: take a started machine through explicit states to ready, as its record's
readiness says (labgrid's strategies: a boot is a sequence of states, and a failure names the state it
was in). States: the readiness pattern on the console (our image's marker, a cell's `ready`, a login
prompt), the login, then a shell that answers. Milestones are the timeline's; the record is written as
boot.json whatever happens."""

from __future__ import annotations

import time
from enum import StrEnum

from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, GuestError
from harness.machine import Machine
from harness.timeline import Phase, Timeline
from matrix.kinds import Readiness
from matrix.model import Login
from matrix.profiles import TIMELINE_PHASES
from matrix.record import BootRecord

PASSWORD_PROMPT = r"(?m)[Pp]assword: *$"


class BootState(StrEnum):
    """Where a boot is on its way to ready (a failure names it)."""

    STARTED = "started"
    MARKER = "waiting for the readiness pattern"
    LOGIN = "logging in"
    SHELL = "waiting for a shell that answers"


def boot_timeline(readiness: Readiness) -> Timeline:
    """The milestones a cold boot is watched for: every boot's phases, the image's own, then the
    readiness pattern."""
    return Timeline([*TIMELINE_PHASES, *readiness.phases,
                     *(((Phase.INIT, readiness.marker),) if readiness.marker else ())])


def boot(machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
    """Start the machine if needed and take it to ready. A wait that ends without it names the state it
    was in and the last boot phase seen."""
    readiness = record.readiness
    if readiness is None:
        raise ValueError(f"{record.cell}: no readiness on its boot record (made by Lab.machine)")
    if machine.process is None:
        machine.start()
    state = BootState.STARTED
    try:
        if readiness.marker:
            state = BootState.MARKER
            machine.console.expect(readiness.marker, deadline, what=readiness.marker_label)
        if readiness.login is not None:
            state = BootState.LOGIN
            log_in(machine, readiness.login, deadline)
        if readiness.shell:
            state = BootState.SHELL
            machine.console.wait_shell(deadline)
            settle(machine, readiness, deadline)
        machine.timeline.mark(Phase.READY, time.monotonic() - machine.t0)
    except ConsoleTimeout as error:
        seen = machine.timeline.as_dict()
        # In time order, a tie kept in the order seen ("first-output" and "firmware" often share a
        # chunk): the last entry is the furthest phase.
        last = next(reversed(seen)) if seen else None
        phase = f"last boot phase seen: {last} at {seen[last]:.2f} s" if last else (
            "no boot phase seen (no firmware, loader or kernel output recognised)")
        raise ConsoleTimeout(f"{error.reason}; {phase}; boot state: {state}", error.tail, error.waited_for) from None
    finally:
        record.save(machine)
    return record


def settle(machine: Machine, readiness: Readiness, deadline: Deadline) -> None:
    """The readiness's first commands; one that fails fails the boot, naming it."""
    for command in readiness.settle:
        output, code = machine.console.run(command, deadline)
        if code != 0:
            raise GuestError(f"the boot's first command {command!r} failed (exit {code}): {output.strip()[-200:]}",
                             machine.tail(),
                             "the shell's first commands")


def log_in(machine: Machine, login: Login, deadline: Deadline) -> None:
    """Answer a login prompt (already seen) with the user, and the password prompt if one comes."""
    machine.console.sendline(login.user)
    if login.password:
        machine.console.expect(PASSWORD_PROMPT, deadline, what="password prompt")
        machine.console.send_secret_line(login.password)
