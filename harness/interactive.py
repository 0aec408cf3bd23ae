"""A person at a VM's serial console: the terminal attached to the console, raw, with an escape key.

What labgrid's `labgrid-client console` and `virsh console` give, for a harness machine: every byte
the guest prints goes to the terminal and to the machine's transcript (console.log), and what the
person types goes to the guest. Ctrl-] is the escape key; after it:
    q or .   detach (the caller stops the VM; its folder keeps console.log, argv.txt, QMP events)
    m        a QMP command line: `query-status`, or a command and its JSON arguments, e.g.
             `human-monitor-command {"command-line": "info registers"}`; the reply is printed, and
             command and reply are kept in qmp-commands.jsonl beside the QMP event journal
    p        press the power button (system_powerdown);  r  reset (system_reset)
    Ctrl-]   send a Ctrl-] to the guest;  ? or h  this help
The session also ends when QEMU does (a guest that powers off or panics), with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.machine import Machine
from harness.qmp import QMP_FAILURES

ESCAPE = b"\x1d"  # Ctrl-]
EXIT_WAIT = 10.0  # seconds for QEMU to exit after the guest ended (-no-reboot turns a reset into an exit)
HELP = (
    "bootmatrix console: Ctrl-] then: q detach (stops the VM) | m QMP command | p power button | r reset | "
    "Ctrl-] send Ctrl-] | ? help"
)


@dataclass
class Session:
    """How an attached session ended: `detached` by the person, or the guest's end with its reason."""

    detached: bool
    reason: str
    problem: str | None = None  # the guest's end was not a clean power-off: why (Machine.end_problem)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode (every key straight to the guest, Ctrl-C included), restored after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Attached:
    def __init__(self, machine: Machine, stdin: int, stdout: int):
        self.machine = machine
        self.stdin = stdin
        self.stdout = stdout
        self.commands = machine.workdir / "qmp-commands.jsonl"
        self.pending = bytearray()  # keys read in one go with an escape, not yet handled

    def say(self, text: str) -> None:
        """A harness line on the terminal, on a line of its own (raw mode: \\r\\n)."""
        os.write(self.stdout, f"\r\n[bootmatrix] {text}\r\n".encode())

    def read_key(self) -> bytes:
        """The next key: one read already but not handled, else one from the terminal (b"" at its end)."""
        if self.pending:
            key = bytes(self.pending[:1])
            del self.pending[:1]
            return key
        ready, _, _ = select.select([self.stdin], [], [], None)
        return os.read(self.stdin, 1) if ready else b""

    def read_line(self, prompt: str) -> str | None:
        """A line typed in raw mode, echoed, with backspace; None when cancelled (Ctrl-C, Ctrl-], end)."""
        os.write(self.stdout, f"\r\n{prompt}".encode())
        typed = bytearray()
        while True:
            key = self.read_key()
            if key in (b"", b"\x03", ESCAPE, b"\x04"):
                os.write(self.stdout, b"\r\n")
                return None
            if key in (b"\r", b"\n"):
                os.write(self.stdout, b"\r\n")
                return typed.decode(errors="replace")
            if key in (b"\x7f", b"\x08"):
                if typed:
                    typed.pop()
                    os.write(self.stdout, b"\x08 \x08")
                continue
            typed += key
            os.write(self.stdout, key)

    def qmp_command(self, line: str) -> str:
        """Run a typed QMP command; its reply (or error) as text. Command and reply are journaled."""
        name, _, rest = line.strip().partition(" ")
        if not name:
            return "no command"
        try:
            arguments: dict[str, Any] | None = json.loads(rest) if rest.strip() else None
        except json.JSONDecodeError as error:
            return f"arguments are not JSON: {error}"
        if arguments is not None and not isinstance(arguments, dict):
            return "arguments must be a JSON object"
        self.machine.console.note(f"QMP command typed at the console: {line.strip()}")
        try:
            reply: Any = self.machine.qmp.execute(name, arguments)
            text = reply if isinstance(reply, str) else json.dumps(reply, indent=2)
            ok = True
        except QMP_FAILURES as error:
            reply, text, ok = str(error), f"error: {error}", False
        with self.commands.open("a") as journal:
            journal.write(json.dumps({"t": round(time.monotonic() - self.machine.t0, 3), "command": name,
                                      "arguments": arguments, "ok": ok, "reply": reply}, default=str) + "\n")
        return text

    def escape(self) -> Session | None:
        """After Ctrl-]: one key says what to do. A Session when the person detaches."""
        key = self.read_key()
        if key in (b"q", b".", b""):
            self.machine.console.note("detached at the console")
            return Session(True, "detached")
        if key == ESCAPE:
            self.machine.console.send_keys(ESCAPE.decode())
        elif key == b"m":
            line = self.read_line("qmp> ")
            if line is not None:
                os.write(self.stdout, self.qmp_command(line).replace("\n", "\r\n").encode() + b"\r\n")
        elif key in (b"p", b"r"):
            command = "system_powerdown" if key == b"p" else "system_reset"
            self.say(f"{command}: {self.qmp_command(command)}")
        else:
            self.say(HELP)
        return None

    def loop(self) -> Session:
        console = self.machine.console
        while True:
            ready, _, _ = select.select([console.fileno, self.stdin], [], [], 0.2)
            if console.fileno in ready:
                chunk = console.read_raw(0)
                if chunk is None:
                    return self.ended()
                if chunk:
                    os.write(self.stdout, chunk.encode(errors="replace"))
            if self.stdin in ready:
                keys = os.read(self.stdin, 1024)
                if not keys:
                    return Session(True, "end of input")
                self.pending += keys
                while self.pending:  # keys typed fast arrive together: an escape and what follows it
                    before, escaped, after = bytes(self.pending).partition(ESCAPE)
                    self.pending[:] = after
                    if before:
                        console.send_keys(before.decode(errors="replace"))
                    if escaped:
                        outcome = self.escape()
                        if outcome is not None:
                            return outcome
            if not ready and self.machine.death_reason() is not None:
                return self.ended()

    def ended(self) -> Session:
        reason = self.machine.console.settled_death() or "the console closed"
        self.say(f"the guest ended: {reason}")
        # QMP can say the guest is gone (SHUTDOWN) a moment before QEMU exits: judge the end once it has.
        self.machine.wait_exit(EXIT_WAIT)
        return Session(False, reason, self.machine.end_problem())


def attach(machine: Machine, stdin: int = 0, stdout: int = 1) -> Session:
    """Attach the terminal on `stdin`/`stdout` to a started machine's serial console until the person
    detaches or QEMU ends. The machine is left running (the caller stops it)."""
    session = Attached(machine, stdin, stdout)
    with raw_terminal(stdin):
        session.say(HELP)
        return session.loop()
