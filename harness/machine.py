"""One VM: the QEMU process, its console and its monitor, and everything it leaves in its work folder.

Lifecycle, after QEMU's own python/qemu/machine: serial and QMP are socketpairs whose far ends QEMU
inherits; a launch that fails raises LaunchError with the argv, the exit status and QEMU's output;
`stop()` asks QMP to quit, waits, then kills. No orphan survives us: the child gets a parent-death
signal (SIGKILL) through prctl, and an atexit reaper kills whatever is still registered.

The work folder keeps, for a person reading a failure: argv.txt (shell-quoted, copy-pasteable),
console.log (timestamped transcript), qmp-events.jsonl, qemu-output.log, and result.json on stop.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import json
import logging
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from harness.console import Console
from harness.deadline import Deadline
from harness.errors import AbnormalShutdown, GuestGone, LaunchError, describe_exit
from harness.net import parse_usernet
from harness.qemu import QemuInstall, announce_launch
from harness.qmp import QMP_FAILURES, QmpEvent, QmpMonitor
from harness.spec import HarnessFds, MachineSpec, Pflash, SpecError, build_argv, validate
from harness.timeline import Timeline

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
KILL_WAIT = 10.0  # seconds for a SIGKILLed QEMU to be reaped
_live: set[Machine] = set()
_live_lock = threading.Lock()
# Resolved once here: the child of fork() in a threaded process must not dlopen or allocate in C.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL QEMU when the thread that started it dies (the test process)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


@atexit.register
def _reap_all() -> None:
    with _live_lock:
        machines = list(_live)
    for machine in machines:
        machine.kill()


def live_machines() -> list[Machine]:
    with _live_lock:
        return list(_live)


@dataclasses.dataclass(frozen=True)
class MachineEnd:
    """How a machine ended, decided once, when it is stopped: QEMU's exit status; whether the harness
    stopped it (QMP quit, then a kill); and, when QEMU ended on its own in a way nobody had been told
    of (killed by a signal, a non-zero status, a guest panic under -no-reboot's exit 0), why, and
    whether stop() raised that to its caller. result.json is this, on disk."""

    returncode: int | None
    by_harness: bool
    abnormal: str | None
    raised: bool

    @property
    def unreported(self) -> str | None:
        """An abnormal end no one was told of (a test with it fails at teardown)."""
        return self.abnormal if self.abnormal is not None and not self.raised else None


@dataclasses.dataclass(frozen=True)
class PowerDown:
    """A power-off the harness asked for: seconds since QEMU started when the button was pressed and when
    QMP reported SHUTDOWN, its reason, and QEMU's exit status (-1 if it had not exited in time)."""

    pressed: float
    shutdown: float
    reason: str
    returncode: int

    @property
    def seconds(self) -> float:
        return self.shutdown - self.pressed


class Machine:
    def __init__(
        self, spec: MachineSpec, qemu: QemuInstall, workdir: Path, name: str = "vm", timeline: Timeline | None = None,
        *, bad_patterns: dict[str, str] | None = None,
    ):
        """`bad_patterns` (label -> regex) are the image's own failure messages, added to the console's."""
        self.spec = spec
        self.bad_patterns = dict(bad_patterns or {})
        self.timeline = timeline or Timeline([])
        self.qemu = qemu
        self.workdir = workdir
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []
        self.t0 = 0.0
        self._console: Console | None = None
        self._qmp: QmpMonitor | None = None
        self._sockets: list[socket.socket] = []
        self.qemu_version = ""
        self.end: MachineEnd | None = None  # set by stop()
        self.cut_at: float | None = None  # seconds after start of a power_cut()
        self._death_told = False  # a wait, a power-off or the caller has told someone why QEMU is gone
        self._stop_lock = threading.Lock()
        # Private: console.log, QMP journals and VARS copies may hold what a guest printed or stored
        # (keys, tokens); only this user reads them, whatever the umask.
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.chmod(0o700)

    # -- start ---------------------------------------------------------------------------------
    def _private_flash(self) -> MachineSpec:
        """The spec with every writable pflash bank replaced by this VM's own copy of it (the copy's
        path only: `start()` makes the copy, a dry run shows the argv that start will use)."""
        banks = []
        for unit, flash in enumerate(self.spec.pflash):
            if flash.readonly or flash.in_place or flash.path.parent == self.workdir:
                banks.append(flash)
                continue
            banks.append(Pflash(self.workdir / f"pflash{unit}-{flash.path.name}", readonly=False))
        return dataclasses.replace(self.spec, pflash=tuple(banks))

    def start(self, qmp_timeout: float = 30.0) -> Machine:
        validate(self.spec)
        private = self._private_flash()
        for template, copy in zip(self.spec.pflash, private.pflash, strict=True):
            if copy.path != template.path:
                shutil.copyfile(template.path, copy.path)
        self.spec = private
        for disk in self.spec.disks:
            if disk.write_log is not None:
                disk.write_log.write_bytes(b"")  # a new log per boot: nothing of an older one is read back
        console_ours, console_theirs = socket.socketpair()
        qmp_ours, qmp_theirs = socket.socketpair()
        self._sockets = [console_ours, qmp_ours]
        try:
            self._launch(console_theirs, qmp_theirs, qmp_timeout)
        except BaseException:
            # Nothing leaks when Popen, the QMP handshake or anything between raises: sockets closed,
            # QEMU (if it started) killed and waited for. The caller got the error: the end is reported.
            self._death_told = True
            self.kill()
            if self._qmp is not None:
                self._qmp.close()
            for sock in (*self._sockets, console_theirs, qmp_theirs):
                sock.close()
            self._sockets = []
            raise
        self._console = Console(console_ours.fileno(), self.workdir / "console.log", self.t0, self.death_reason)
        self._console.bad_patterns.update(self.bad_patterns)
        self._console.timelines.append(self.timeline)
        return self

    def planned_argv(self) -> list[str]:
        """The argv `start()` would run (for a dry run): file descriptors 3 and 4 stand for the console
        and QMP socketpairs, which exist only once it starts."""
        fds = HarnessFds(3, 4, self.workdir / "qemu.pid")
        return build_argv(self._private_flash(), self.qemu.command(self.spec.arch), self.qemu.data_args(), fds)

    def _launch(self, console_theirs: socket.socket, qmp_theirs: socket.socket, qmp_timeout: float) -> None:
        qmp_ours = self._sockets[1]
        pidfile = self.workdir / "qemu.pid"
        fds = HarnessFds(console_theirs.fileno(), qmp_theirs.fileno(), pidfile)
        command = self.qemu.command(self.spec.arch)
        self.qemu_version = self.qemu.version(self.spec.arch)
        self.argv = build_argv(self.spec, command, self.qemu.data_args(), fds)
        announce_launch(self.argv)
        (self.workdir / "argv.txt").write_text(shlex.join(self.argv) + "\n")
        (self.workdir / "qmp-events.jsonl").unlink(missing_ok=True)
        output = (self.workdir / "qemu-output.log").open("wb")
        self.t0 = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(console_theirs.fileno(), qmp_theirs.fileno(), *self.spec.pass_fds()),
                env=self.qemu.env(),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe enough
            )
        except OSError as error:
            raise LaunchError(f"could not start QEMU: {error}", self.argv, None, "") from error
        finally:
            output.close()
            console_theirs.close()  # QEMU holds them now: our copies would hide its exit (no EOF)
            qmp_theirs.close()
        with _live_lock:
            _live.add(self)
        self._qmp = QmpMonitor(qmp_ours, self.workdir / "qmp-events.jsonl", self.t0, self.name)
        try:
            self._qmp.connect(qmp_timeout)
        except QMP_FAILURES as error:
            self._wait_process(2.0)  # QEMU usually says why it quit: keep its status and words
            raise LaunchError(
                f"QMP handshake failed: {error!r}", self.argv, self.returncode, self.output()
            ) from error

    # -- state ---------------------------------------------------------------------------------
    @property
    def console(self) -> Console:
        if self._console is None:
            raise RuntimeError("machine not started")
        return self._console

    @property
    def qmp(self) -> QmpMonitor:
        if self._qmp is None:
            raise RuntimeError("machine not started")
        return self._qmp

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self) -> str:
        """The console's last lines ("" before the console exists)."""
        return self._console.tail() if self._console is not None else ""

    def output(self) -> str:
        path = self.workdir / "qemu-output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def death_reason(self) -> str | None:
        """Why the guest cannot go on, or None while it can: QEMU exited, or QMP said the guest is dead.
        Asking counts as being told: a death reported here is not reported again at stop()."""
        reason = self._death_reason()
        if reason is not None:
            self._death_told = True
        return reason

    def _death_reason(self) -> str | None:
        code = self.returncode
        if code is not None:
            qemu_said = self.output().strip().splitlines()[-3:]
            extra = f"; QEMU said: {' | '.join(qemu_said)}" if qemu_said else ""
            events = self._qmp.fatal_reason if self._qmp and self._qmp.fatal.is_set() else ""
            via = f"; {events}" if events else ""
            return f"QEMU {describe_exit(code)}{via}{extra}"
        if self._qmp is not None and self._qmp.fatal.is_set():
            return self._qmp.fatal_reason
        return None

    def forwarded_ports(self) -> dict[tuple[str, int], int]:
        """{(protocol, guest port): host port on 127.0.0.1} of the user-mode forwards, as QEMU bound them."""
        text = self.qmp.execute("human-monitor-command", {"command-line": "info usernet"})
        return parse_usernet(str(text))

    # -- guest actions -------------------------------------------------------------------------
    def powerdown(self, deadline: Deadline) -> PowerDown:
        """Press the power button (QMP system_powerdown) and wait for the guest's own shutdown: QMP
        SHUTDOWN with reason guest-shutdown, then QEMU's exit. A guest that does not react, or ends
        another way (a reset, a panic), fails with what QMP said and the console tail."""
        pressed = time.monotonic() - self.t0
        self.qmp.powerdown()
        return self.wait_power_off(deadline, pressed, "system_powerdown")

    def wait_power_off(self, deadline: Deadline, asked: float, how: str = "the request") -> PowerDown:
        """Wait for the guest's own power-off, asked for at `asked` (seconds since QEMU started) by `how`:
        QMP SHUTDOWN with reason guest-shutdown, then QEMU's exit."""
        event = self._wait_event_reading_console("SHUTDOWN", deadline)
        if event is None:
            dead = self.death_reason() if self.returncode is not None else None
            raise GuestGone(dead or f"guest did not power off within {deadline.budget:.1f} s of {how}",
                            self.console.tail(), "power-off")
        reason = str(event.data.get("reason", "?"))
        if reason != "guest-shutdown":
            raise GuestGone(f"guest ended with QMP SHUTDOWN reason {reason!r} after {how}, not a power-off of "
                            "its own", self.console.tail(), "power-off")
        code = self._wait_process(max(deadline.remaining(), 5.0))
        self.console.drain()  # the guest's last words, into the transcript
        self._death_told = True  # the end the caller asked for
        return PowerDown(asked, event.t, reason, code)

    def _wait_event_reading_console(self, name: str, deadline: Deadline, after: int = 0) -> QmpEvent | None:
        """The first QMP event `name` (from index `after`), reading the console meanwhile: its lines keep
        their true times, and the guest's serial output does not stall on a console nobody reads. None
        at the deadline, or when QEMU exited without sending it (given half a second: QEMU sends
        SHUTDOWN just before it exits)."""
        while not deadline.expired():
            self.console.pump(0.05)
            event = self.qmp.wait_event(name, 0, after=after)
            if event is not None:
                return event
            if self.returncode is not None:
                return self.qmp.wait_event(name, 0.5, after=after)
        return None

    def reboot_and_wait(self, ready: str, deadline: Deadline, trigger: Callable[[], object] | None = None) -> QmpEvent:
        """Follow the guest through a reboot of its own: forget the console so far, run `trigger` (what
        makes the guest reboot; none when it reboots by itself), wait for QMP RESET with reason
        guest-reset, then for `ready` on the console. Returns the RESET event.

        Needs a spec with on_reboot="reset" (-action reboot=reset): the guest restarts in the same QEMU,
        so the console transcript, QMP journal, disks and forwarded ports carry over. Under -no-reboot
        (the default, so that an unexpected reboot ends the VM and is reported) QEMU would exit instead."""
        if self.spec.on_reboot != "reset":
            raise SpecError(f"{self.name}: reboot_and_wait needs on_reboot='reset'; under -no-reboot a guest "
                            "reboot ends QEMU (SHUTDOWN reason guest-reset)")
        seen = len(self.qmp.events)
        self.console.skip()
        if trigger is not None:
            trigger()
        event = self._wait_event_reading_console("RESET", deadline, after=seen)
        if event is None:
            dead = self.death_reason()
            raise GuestGone(dead or f"guest did not reboot within {deadline.budget:.1f} s", self.console.tail(),
                            "reboot")
        reason = event.data.get("reason")
        if reason != "guest-reset":
            raise GuestGone(f"QMP RESET reason {reason!r}, not the guest's own reboot", self.console.tail(), "reboot")
        self.console.expect(ready, deadline, what=f"{ready!r} after the reboot")
        return event

    def wait_exit(self, timeout: float) -> int | None:
        """QEMU's exit status once it has exited, waiting up to `timeout`; None if it still runs."""
        if self.process is None:
            return None
        self._wait_process(timeout)
        return self.process.poll()

    def _wait_process(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return -1

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            if sig == signal.SIGKILL:
                try:
                    self.process.wait(KILL_WAIT)
                except subprocess.TimeoutExpired:  # stuck in the kernel (D state): reported, not waited on
                    log.error("QEMU pid %d did not end within %.0f s of SIGKILL", self.process.pid, KILL_WAIT)
        if self.process is not None and self.process.poll() is not None:
            with _live_lock:
                _live.discard(self)

    def power_cut(self) -> float:
        """Pull the plug: SIGKILL QEMU at once, with no QMP quit and no flush of QEMU's own state. What
        QEMU had already handed to the host (the disk files' page cache) survives, as it would not on
        real hardware; a write log (Disk.write_log, harness/writelog.py) models what a disk loses. The
        end is the harness's own, not reported as abnormal; result.json says `power_cut`. Returns the
        cut's time, in seconds after start (also `cut_at`)."""
        if self.process is None:
            raise RuntimeError("machine not started")
        cut_at = self.cut_at = time.monotonic() - self.t0
        self.kill()
        self.console.drain()  # what the guest printed before the cut, into the transcript
        self.stop(check=False, told=True)
        return cut_at

    def abnormal_end(self) -> str | None:
        """Why QEMU's end was not normal, when it ended on its own and nothing reported it: killed by a
        signal, a non-zero exit status, or a guest panic (QEMU exits 0 after a panic under -no-reboot,
        so the status alone is never trusted). None for a guest that powered itself off, for a stop by
        the harness, and for a death a wait has already reported."""
        if self.process is None or self._death_told or (self.end is not None and self.end.by_harness):
            return None
        return self.end_problem()

    def end_problem(self) -> str | None:
        """Why QEMU, having exited, did not end normally (a signal, a non-zero status, a guest panic
        no wait raised), whoever noticed the end; None while it runs and after a clean power-off."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        panic = None
        if self._console is None or not self._console.trouble_reported:  # a panic a wait raised is known
            panic = self._qmp.panicked() if self._qmp is not None else None
            if panic is None and self._console is not None:
                panic = self._console.unreported_bad()
        if code == 0 and panic is None:
            return None
        said = " | ".join(self.output().strip().splitlines()[-3:])
        return (f"QEMU {describe_exit(code)} on its own before the harness stopped it"
                + (f" ({panic})" if panic else "") + (f"; QEMU said: {said}" if said else ""))

    def stop(self, timeout: float = 10.0, check: bool = True, *, told: bool = False) -> int | None:
        """Quit through QMP, wait, then kill. Safe to call twice; decides the machine's `end` and writes
        it to result.json. With `check`, raises AbnormalShutdown when QEMU had ended abnormally on its
        own (abnormal_end). `told`: the caller has reported this machine's end itself (nothing more to
        report, whatever it was)."""
        with self._stop_lock:  # a run's interruption may stop it while the thread that booted it does too
            return self._stop(timeout, check, told)

    def _stop(self, timeout: float, check: bool, told: bool) -> int | None:
        if self.process is None:
            return None
        if self.end is not None:
            return self.process.returncode
        self._death_told = self._death_told or told
        abnormal = self.abnormal_end()
        by_harness = self.process.poll() is None
        if by_harness:
            if self._qmp is not None:
                self._qmp.quit()
            if self._wait_process(timeout) == -1 and self.process.poll() is None:
                self.kill()
        self.kill()
        if self._qmp is not None:
            self._qmp.close()
        if self._console is not None:
            self._console.close()
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self.end = MachineEnd(self.returncode, by_harness, abnormal, raised=abnormal is not None and check)
        self._write_result(self.end)
        if self.end.raised:
            self._death_told = True  # reported once
            raise AbnormalShutdown(abnormal or "", self.tail(), "teardown")
        return self.process.returncode

    def _write_result(self, end: MachineEnd) -> None:
        result = {
            "abnormal": end.abnormal,
            "abnormal_raised": end.raised,  # stop() raised it to its caller
            "name": self.name,
            "spec": self.spec.describe(),
            "qemu": self.qemu.name,
            "qemu_version": self.qemu_version,
            "returncode": end.returncode,
            "exit": describe_exit(end.returncode),
            "stopped_by_harness": end.by_harness,
            "power_cut": self.cut_at,
            "qmp_events": [e.name for e in (self._qmp.events if self._qmp else [])],
            "timeline": self.timeline.as_dict(),
        }
        (self.workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    def __enter__(self) -> Machine:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop(check=value is None)  # never mask the exception already on its way

    def __hash__(self) -> int:
        return id(self)

