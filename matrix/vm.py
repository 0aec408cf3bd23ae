"""The test API: what `vm()` and `bootmatrix_vms()` hand a test, one booted (or started) guest of a cell.

    guest = vm()
    guest.run("uname -m")              # (output, exit status), within the arch's budget
    guest.console.expect(r"regex", guest.deadline(30))
    guest.qmp.execute("query-status")
    guest.net.dhcp(); guest.net.fetch(url)
    guest.timeline.as_dict()           # boot milestones, seconds since QEMU started
    guest.metric("my_latency_s", 0.42, "s")
    guest.powerdown(); guest.reboot_and_wait(ready, trigger)

Every piece is typed: the console (harness.console.Console), QMP (harness.qmp.QmpMonitor), the guest's
network (harness.guestnet.GuestNet), the machine and its boot record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.console import Console
from harness.deadline import Deadline
from harness.guestnet import DEFAULT_DHCP, GuestNet
from harness.machine import Machine, MachineEnd, PowerDown
from harness.qmp import QmpEvent, QmpMonitor
from harness.timeline import Timeline
from matrix.model import Cell
from matrix.record import BootRecord


@dataclass
class VM:
    """A booted (or at least started) guest of one cell, with the harness pieces a test needs."""

    machine: Machine
    record: BootRecord
    cell: Cell
    budget: float  # seconds a boot or a command may take before it is a hang, for this arch and accel
    dhcp_command: str = DEFAULT_DHCP  # the image's way to get a lease (its readiness says)
    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)

    def metric(self, name: str, value: float, unit: str) -> None:
        """Record a measurement of this guest: stored in the metric history and attached to the report."""
        self.metrics[name] = (value, unit)

    @property
    def console(self) -> Console:
        """The serial console: expect(), run(), sendline(), allow() a bad pattern for a while."""
        return self.machine.console

    @property
    def qmp(self) -> QmpMonitor:
        """QEMU's monitor: execute() a QMP command, wait_event(), the events so far."""
        return self.machine.qmp

    @property
    def workdir(self) -> Path:
        return self.machine.workdir

    def deadline(self, seconds: float | None = None) -> Deadline:
        return Deadline.after(seconds if seconds is not None else self.budget)

    def run(self, command: str, seconds: float | None = None) -> tuple[str, int]:
        return self.machine.console.run(command, self.deadline(seconds))

    def powerdown(self, seconds: float | None = None) -> PowerDown:
        """Press the power button and wait for the guest's own power-off (Machine.powerdown)."""
        return self.machine.powerdown(self.deadline(seconds))

    def reboot_and_wait(self, ready: str, trigger: Callable[[], object] | None = None,
                        seconds: float | None = None) -> QmpEvent:
        """Follow the guest through its own reboot to `ready` (Machine.reboot_and_wait; the VM must be
        made with on_reboot="reset", e.g. through `customize`). The budget covers a whole boot."""
        return self.machine.reboot_and_wait(ready, self.deadline(seconds), trigger)

    @property
    def timeline(self) -> Timeline:
        """Boot milestones seen so far (seconds since QEMU started): first-output, firmware, kernel, ..."""
        return self.machine.timeline

    @property
    def net(self) -> GuestNet:
        """Networking inside the guest: dhcp(), fetch() a URL, make_file(), serve() a folder."""
        return GuestNet(self.machine.console, self.budget, self.dhcp_command)

    @property
    def end(self) -> MachineEnd | None:
        """How the machine ended, once it is stopped (None before): the teardown judges the test by it."""
        return self.machine.end
