"""The serial console: pexpect's fdspawn on the harness's end of the serial socketpair.

Matching runs on a cleaned copy of the stream (ANSI sequences and carriage returns removed), so a
`ESC[6n` from busybox or `\\r\\n` line ends never break a pattern. Every wait:
- fails at once on a bad pattern (kernel panic, Oops, BUG:, firmware fatal errors), unless relaxed;
- fails at once when QEMU exits or QMP reports the guest dead (the `is_dead` callback);
- fails with ConsoleTimeout only when the deadline passes with the guest alive: a real hang.
The error names the cause and carries the console tail. The transcript file gets every byte, cleaned,
each line stamped with seconds since the VM started.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

import pexpect
import pexpect.fdpexpect

from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, GuestError, GuestGone, GuestPanic
from harness.timeline import Timeline

ANSI = re.compile(r"\x1b(\[[0-9;?=>]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Za-z0-9]|[=>78cDEHM])")

DEFAULT_BAD_PATTERNS: dict[str, str] = {
    "kernel panic": r"Kernel panic - not syncing[^\n]*",
    "kernel Oops": r"(?:Internal error: )?Oops[^\n]*:[^\n]*",
    "kernel BUG": r"(?m)^\[?[ \d.\]]*BUG: [^\n]*",
    # Secure boot refusing an image is named as such (listed before the generic UEFI failure, which
    # matches the same line: on a tie the first label wins).
    "security violation": r"BdsDxe: failed to load [^\n]*(?:Access Denied|Security Violation)[^\n]*",
    "UEFI boot failure": r"BdsDxe: failed to load [^\n]*",
    "boot failure": r"Boot failed[^\n]*|No bootable device[^\n]*",
    "firmware error": r"## Error[^\n]*|Synchronous Exception[^\n]*|ASSERT_EFI_ERROR[^\n]*",
}
# What an image's own words mean (its initramfs failing to find its root, say) is the image's to say:
# Machine(bad_patterns=...) adds them, so a user's own image gets a harness that knows only the kernel's,
# the firmware's and QEMU's failures.
TAIL_CHARS = 4000
# A kernel Oops or panic prints its backtrace after the line that names it; that is worth a second.
TRACE_GRACE = 1.0
TRACE_END = re.compile(r"---\[ end (?:trace|Kernel panic)")
BUFFER_LIMIT = 256 * 1024
# Each wait searches only text it has not searched yet, plus this much before it, so a long boot log is
# not rescanned on every chunk (that made boots measurably slower). A match may span at most this much.
MATCH_SPAN = 4096


def clean(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def last_lines(text: str, count: int = 15) -> str:
    """The last `count` non-blank lines of console output, escape sequences removed: what a person needs
    beside a failure's one-line reason (an installer's "Low memory mode" screen, a panic's last words)."""
    lines = [line.rstrip() for line in clean(text).splitlines() if line.strip()]
    return "\n".join(lines[-count:])


@dataclass
class Match:
    index: int
    match: re.Match[str]
    before: str

    @property
    def text(self) -> str:
        return self.match.group(0)


class Transcript:
    """A readable log: each line prefixed with seconds since the VM started.

    Two guards, for a log that is attached to reports and kept in CI artifacts:
    - secrets (a password the harness typed) are replaced by `<secret>`, the guest's own echo included,
      even when one arrives split between two reads;
    - size: the first `head_bytes` are written as they come, then only the last `tail_bytes` are kept
      (written at close, after a line saying how much was cut), so a guest that floods its console
      cannot fill the disk; memory holds the tail only.
    """

    HEAD_BYTES = 8 * 1024 * 1024
    TAIL_BYTES = 2 * 1024 * 1024

    def __init__(self, path: Path, t0: float, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES):
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._t0 = t0
        self._at_line_start = True
        self._held = ""
        self.secrets: list[str] = []
        self._head_left = head_bytes
        self._tail_bytes = tail_bytes
        self._tail: deque[tuple[str, int]] = deque()  # (text, its size in bytes)
        self._tail_size = 0
        self.cut_bytes = 0
        self.cut_lines = 0

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self._t0:9.3f}] "

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "<secret>")
        return text

    def _emit(self, text: str) -> None:
        """Write `text` (one line or a piece of one), or keep it in the tail once the head is full."""
        size = len(text.encode("utf-8", errors="replace"))
        if not self._tail and size <= self._head_left:
            self._head_left -= size
            self._file.write(text)
            return
        self._tail.append((text, size))
        self._tail_size += size
        while self._tail_size > self._tail_bytes and len(self._tail) > 1:
            dropped, dropped_size = self._tail.popleft()
            self._tail_size -= dropped_size
            self.cut_bytes += dropped_size
            self.cut_lines += dropped.endswith("\n")

    def _piece(self, text: str) -> None:
        self._emit((self._stamp() if self._at_line_start else "") + text)
        self._at_line_start = text.endswith("\n")

    def write(self, text: str) -> None:
        """Output as it comes (a screen drawn without newlines is in the file at once), redacted; while
        secrets are known, their length less one is held back, so one split between reads is caught."""
        pending = self._redact(self._held + text)
        keep = max((len(secret) for secret in self.secrets), default=1) - 1
        self._held = ""
        if keep > 0 and not pending.endswith("\n"):
            pending, self._held = pending[:-keep], pending[-keep:]
        for piece in pending.splitlines(keepends=True):
            self._piece(piece)
        self._file.flush()

    def _flush_held(self) -> None:
        if self._held:
            self._piece(self._held)
            self._held = ""

    def note(self, text: str) -> None:
        """A harness remark (what was sent, why a wait ended), marked so it is not mistaken for output."""
        self._flush_held()
        self._emit(("" if self._at_line_start else "\n") + f"{self._stamp()}### {self._redact(text)}\n")
        self._at_line_start = True
        self._file.flush()

    def close(self) -> None:
        self._flush_held()
        if self.cut_bytes:
            self._file.write(f"{self._stamp()}### console.log cut here: {self.cut_bytes} bytes ({self.cut_lines} "
                             f"lines) of the middle not kept; the last {self._tail_size} bytes follow\n")
        self._file.writelines(text for text, _ in self._tail)
        self._tail.clear()
        self._file.close()


class Console:
    def __init__(self, fd: int, transcript: Path, t0: float, is_dead: Callable[[], str | None]):
        self._spawn = pexpect.fdpexpect.fdspawn(fd, encoding="utf-8", codec_errors="replace")
        self._transcript = Transcript(transcript, t0)
        self._is_dead = is_dead
        self.t0 = t0
        self.buffer = ""  # cleaned, not yet consumed by a match
        self.history = ""  # cleaned, last TAIL_CHARS characters, for error messages
        self.bad_patterns: dict[str, str] = dict(DEFAULT_BAD_PATTERNS)
        self.timelines: list[Timeline] = []
        self._eof = False
        self._scanned = 0  # buffer index up to which the current wait's patterns found nothing
        self._bad_scanned = 0  # likewise for the bad patterns
        self.trouble_reported = False  # a wait has raised a panic or the guest's end to its caller
        self.line_ending = "\r"  # what a Linux tty, U-Boot and firmware all take as Enter

    # -- reading -------------------------------------------------------------------------------
    def _feed(self, raw: str) -> None:
        text = clean(raw)
        now = time.monotonic() - self.t0
        for timeline in self.timelines:
            timeline.observe(text, now, raw.replace("\r", ""))
        self._transcript.write(text)
        self.buffer += text
        self.history = (self.history + text)[-TAIL_CHARS:]
        if len(self.buffer) > BUFFER_LIMIT:
            self._consume(len(self.buffer) - BUFFER_LIMIT)

    def _consume(self, count: int) -> None:
        """Drop the first `count` characters of the buffer, keeping the scan positions in step."""
        self.buffer = self.buffer[count:]
        self._scanned = max(0, self._scanned - count)
        self._bad_scanned = max(0, self._bad_scanned - count)

    def _read_some(self, timeout: float) -> str:
        """Read what is there, waiting up to `timeout`: "data", "timeout" or "eof".

        After the first chunk, whatever else is already waiting is taken too, so a burst of small
        serial writes is matched once rather than once per write.
        """
        chunks: list[str] = []
        taken = 0
        wait = timeout
        while taken < BUFFER_LIMIT:
            chunk = self._read_chunk(wait)
            if not chunk:
                break
            chunks.append(chunk)
            taken += len(chunk)
            wait = 0
        if chunks:
            self._feed("".join(chunks))
            return "data"
        return "eof" if self._eof else "timeout"

    def _read_chunk(self, timeout: float) -> str | None:
        """One read of what QEMU sent within `timeout`: "" when nothing came, None at end of file."""
        if self._eof:
            return None
        try:
            chunk: str = self._spawn.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return ""
        except pexpect.EOF:
            self._eof = True
            return None
        return chunk

    def settled_death(self, seconds: float = 1.0) -> str | None:
        """After the console closed: why the guest cannot go on, giving QEMU's exit status up to
        `seconds` to be known (the socket closes a moment before the process is reaped)."""
        until = time.monotonic() + seconds
        while (dead := self._is_dead()) is None and time.monotonic() < until:
            time.sleep(0.025)
        return dead

    def pump(self, seconds: float) -> None:
        """Take in what arrives within `seconds` without waiting for anything in it: keeps the transcript's
        times true while the caller waits on something else (a QMP event)."""
        if self._eof:
            time.sleep(seconds)  # nothing more will come; callers loop on something else
        else:
            self._read_some(seconds)

    def drain(self) -> None:
        """After QEMU exited: take in whatever it wrote last, so the transcript and tail are complete."""
        self._drain()

    def _drain(self) -> None:
        """After QEMU died: take whatever it wrote before dying, so the reason and tail are complete."""
        for _ in range(1000):
            if self._read_some(0.05) != "data":
                return

    def tail(self) -> str:
        return self.history

    def unreported_bad(self) -> str | None:
        """A bad pattern in output that no wait has judged (what arrived after the last wait, QEMU's
        last words included), as 'label: text', or None. For the check at teardown."""
        self._drain()
        found = self._first_bad(final=True)
        return f"{found[1]} on the console: {found[2]}" if found else None

    # -- matching ------------------------------------------------------------------------------
    def _first_bad(self, final: bool = False) -> tuple[int, str, str] | None:
        """The earliest bad pattern in text not yet scanned. Only complete lines are judged (a line cut
        between two reads could match a vaguer pattern than its whole), unless `final`: QEMU is gone."""
        found = None
        start = max(0, self._bad_scanned - MATCH_SPAN)
        end = len(self.buffer) if final else self.buffer.rfind("\n") + 1
        if end <= start:
            return None
        for label, pattern in self.bad_patterns.items():
            hit = re.compile(pattern).search(self.buffer, start, end)
            if hit and (found is None or hit.start() < found[0]):
                found = (hit.start(), label, hit.group(0).strip())
        if found is None:
            self._bad_scanned = end
        return found

    def expect(self, patterns: str | list[str], deadline: Deadline, what: str | None = None) -> Match:
        """Wait for the first of `patterns` (regexes) in the console stream, within `deadline`."""
        wanted = [patterns] if isinstance(patterns, str) else patterns
        compiled = [re.compile(p) for p in wanted]
        what = what or " | ".join(wanted)
        self._scanned = 0
        while True:
            best: tuple[int, int, re.Match[str]] | None = None
            start = max(0, self._scanned - MATCH_SPAN)
            for index, regex in enumerate(compiled):
                hit = regex.search(self.buffer, start)
                if hit and (best is None or hit.start() < best[0]):
                    best = (hit.start(), index, hit)
            if best is None:
                self._scanned = len(self.buffer)
            bad = self._first_bad()
            if bad is not None and (best is None or bad[0] <= best[0]):
                self._read_trace()
                self._fail(GuestPanic, f"{bad[1]} on the console: {bad[2]}", what)
            if best is not None:
                _, index, hit = best
                before = self.buffer[: hit.start()]
                self._consume(hit.end())
                return Match(index, hit, before)
            dead = self._is_dead()
            if dead is not None:
                self._fail_dead(dead, what)
            if deadline.expired():
                self._fail(ConsoleTimeout, f"no match within the {deadline.budget:.1f} s deadline (guest alive)", what)
            if self._read_some(min(0.1, max(0.01, deadline.remaining()))) == "eof":
                self._fail_dead(self.settled_death() or "console closed (end of file)", what)

    def skip(self) -> None:
        """Forget what arrived so far (after judging it for bad patterns), so the next wait sees only
        newer text: before a reboot, whose second boot prints the same lines as the first."""
        self._read_some(0)
        bad = self._first_bad(final=True)
        if bad is not None:
            self._read_trace()
            self._fail(GuestPanic, f"{bad[1]} on the console: {bad[2]}", "skipping to newer output")
        self._consume(len(self.buffer))

    def _read_trace(self) -> None:
        """After a bad pattern, read on briefly so the tail holds the kernel's backtrace: until its end
        marker, QEMU's end, or TRACE_GRACE seconds."""
        until = time.monotonic() + TRACE_GRACE
        while time.monotonic() < until and not TRACE_END.search(self.buffer[-MATCH_SPAN:]):
            if self._is_dead() is not None or self._read_some(0.05) == "eof":
                return

    def _fail_dead(self, dead: str, what: str) -> NoReturn:
        """QEMU is gone or the guest is dead: read what it said last, and name a bad pattern if it shows one
        (a panic explains the death better than the exit status does)."""
        self._drain()
        bad = self._first_bad(final=True)
        if bad is not None:
            self._fail(GuestPanic, f"{bad[1]} on the console: {bad[2]} ({dead})", what)
        self._fail(GuestGone, dead, what)

    def _fail(self, kind: type[GuestError], reason: str, what: str) -> NoReturn:
        self._transcript.note(f"wait for {what!r} failed: {reason}")
        if kind is not ConsoleTimeout:
            self.trouble_reported = True  # the caller now knows the guest is dead or broken
        raise kind(reason, self.tail(), what)

    @contextlib.contextmanager
    def allow(self, *labels: str) -> Iterator[None]:
        """Relax bad patterns by label inside the block (e.g. a test that provokes a panic on purpose)."""
        saved = dict(self.bad_patterns)
        for label in labels:
            self.bad_patterns.pop(label, None)
        try:
            yield
        finally:
            self.bad_patterns = saved

    # -- a person at the console (harness/interactive.py) ----------------------------------------
    @property
    def fileno(self) -> int:
        return int(self._spawn.child_fd)

    def read_raw(self, timeout: float) -> str | None:
        """What arrived within `timeout`, as QEMU sent it (escape sequences kept, for a terminal): ""
        when nothing did, None at end of file. It goes into the transcript, timelines and buffer too."""
        chunk = self._read_chunk(timeout)
        if chunk:
            self._feed(chunk)
        return chunk

    def note(self, text: str) -> None:
        """A harness remark in the transcript (a detach, a QMP command typed at the console)."""
        self._transcript.note(text)

    def send_keys(self, text: str) -> None:
        """A person's keystrokes: sent as they are (the guest's echo is in the transcript already)."""
        self._spawn.send(text)

    # -- writing -------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        self._transcript.note(f"send {text!r}")
        self._spawn.send(text)

    def sendline(self, line: str) -> None:
        self.send(line + self.line_ending)

    def send_secret_line(self, secret: str) -> None:
        """A line the transcript must not keep (a password): console.log says that a secret of so many
        characters was sent, never what; a prompt that does not echo keeps it out of the output too."""
        self._transcript.secrets.append(secret)
        self._transcript.note(f"send <secret, {len(secret)} characters> + line ending")
        self._spawn.send(secret + self.line_ending)

    # -- shell ---------------------------------------------------------------------------------
    def wait_shell(self, deadline: Deadline) -> None:
        """Until a shell answers: probe with a sum it must compute (the echo of the probe cannot match)."""
        while True:
            token = secrets.token_hex(3)
            self.sendline(f"echo {token}$((20+22))")
            try:
                self.expect(rf"{token}42", deadline.sooner(2.0), what="a shell to answer")
                return
            except ConsoleTimeout:
                if deadline.expired():
                    raise

    def run(self, command: str, deadline: Deadline) -> tuple[str, int]:
        """Run `command` in the guest shell; return (output, exit code).

        Markers are printed by the shell with their halves quoted apart in what we type, so the tty's
        echo of our own line can never match them.
        """
        token = secrets.token_hex(4)
        start, end = f"BM{token}S", f"BM{token}E"
        typed_start = f"'BM{token}''S'"
        typed_end = f"'BM{token}''E'"
        self.sendline(f"echo {typed_start}; {command}; echo {typed_end} $?")
        self.expect(rf"{start}\n", deadline, what=f"start of {command!r}")
        found = self.expect(rf"{end} (\d+)\n", deadline, what=f"end of {command!r}")
        output = found.before
        if output.endswith("\n"):
            output = output[:-1]
        return output, int(found.match.group(1))

    def close(self) -> None:
        self._transcript.close()
