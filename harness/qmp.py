"""QMP through qemu.qmp's asyncio client, run on a private event-loop thread.

Events arrive while the test thread is blocked reading the console, so the client lives on its own
loop thread: every event is journaled with a monotonic timestamp (and written to events.jsonl as it
arrives), and the ones that end a guest (SHUTDOWN, GUEST_PANICKED, a STOP into an error state) set
`fatal` at once, which the console checks on every read. The default event listener exists from the
client's construction, so nothing is missed between connect and the first read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient, QMPError

# What talking to a QEMU that is gone or going can raise: qemu.qmp's own errors, a timeout, a closed socket.
QMP_FAILURES = (QMPError, TimeoutError, OSError, EOFError, asyncio.CancelledError)

T = TypeVar("T")

# Runstates after a STOP event that mean the guest will not continue by itself.
DEAD_RUNSTATES = {"internal-error", "guest-panicked", "io-error", "shutdown"}


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict[str, Any]
    t: float  # seconds since the machine started (monotonic)


class QmpMonitor:
    def __init__(self, sock: socket.socket, journal: Path, t0: float, name: str = "vm"):
        self._sock = sock
        self._journal = journal
        self._t0 = t0
        self._client = QMPClient(name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}", daemon=True)
        self._reader: concurrent.futures.Future[None] | None = None
        self.events: list[QmpEvent] = []
        self.fatal = threading.Event()
        self.fatal_reason = ""
        self._changed = threading.Condition()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def connect(self, timeout: float) -> None:
        self._thread.start()
        self._call(self._client.connect(self._sock), timeout)
        self._reader = asyncio.run_coroutine_threadsafe(self._read_events(), self._loop)

    async def _read_events(self) -> None:
        async for event in self._client.events:
            data: dict[str, Any] = dict(event.get("data", {}))  # type: ignore[call-overload]
            record = QmpEvent(str(event["event"]), data, time.monotonic() - self._t0)
            self._record(record)
            if record.name == "STOP":
                try:
                    status = await self._client.execute("query-status")
                except QMP_FAILURES:  # QEMU may be gone already; the process check reports it
                    continue
                state = status.get("status", "") if isinstance(status, dict) else ""
                if state in DEAD_RUNSTATES:
                    self._set_fatal(f"guest stopped in state {state!r} (QMP STOP, query-status)")

    def _record(self, record: QmpEvent) -> None:
        with self._changed:
            self.events.append(record)
            with self._journal.open("a") as handle:
                handle.write(json.dumps({"t": round(record.t, 4), "event": record.name, "data": record.data}) + "\n")
            if record.name == "GUEST_PANICKED":
                self._set_fatal(f"QMP GUEST_PANICKED {json.dumps(record.data)}")
            elif record.name == "SHUTDOWN":
                self._set_fatal(f"guest shut down (QMP SHUTDOWN, reason {record.data.get('reason', '?')!r})")
            self._changed.notify_all()

    def _set_fatal(self, reason: str) -> None:
        if not self.fatal.is_set():
            self.fatal_reason = reason
            self.fatal.set()

    def panicked(self) -> str | None:
        """The guest panic QMP reported (GUEST_PANICKED, or SHUTDOWN for 'guest-panic'), or None."""
        for event in self.events:
            panic_shutdown = event.name == "SHUTDOWN" and event.data.get("reason") == "guest-panic"
            if event.name == "GUEST_PANICKED" or panic_shutdown:
                return f"QMP {event.name} {json.dumps(event.data)}"
        return None

    def wait_event(self, name: str, timeout: float, after: int = 0) -> QmpEvent | None:
        """Wait for the first event called `name` among the events from index `after` on (0: including
        every one already received; len(events) taken earlier: only newer ones)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if event.name == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        return self._call(self._client.execute(command, arguments), timeout)

    def powerdown(self) -> None:
        """Ask the guest to power off (ACPI / power button): the guest decides."""
        self.execute("system_powerdown")

    def reset(self) -> None:
        self.execute("system_reset")

    def quit(self) -> None:
        """Make QEMU exit now. The reply may be lost as QEMU closes the socket; that is success too."""
        try:
            self.execute("quit", timeout=2.0)
        except QMP_FAILURES:  # a closed connection here means QEMU is exiting
            pass

    def close(self) -> None:
        if self._thread.is_alive():
            if self._reader is not None:
                self._loop.call_soon_threadsafe(self._reader.cancel)
            try:
                self._call(self._client.disconnect(), 5.0)
            except QMP_FAILURES:  # best effort on teardown: the peer may be gone
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._loop.is_running():
            self._loop.close()
