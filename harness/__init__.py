"""One VM: process, console, QMP, accelerator probe, timelines. Knows nothing of images or matrices."""

from harness.console import Console
from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, GuestError, GuestGone, GuestPanic, LaunchError, MachineError
from harness.machine import Machine
from harness.qemu import QemuInstall, QemuNotFound
from harness.spec import MachineSpec, Pflash

__all__ = [
    "Console", "ConsoleTimeout", "Deadline", "GuestError", "GuestGone", "GuestPanic", "LaunchError",
    "Machine", "MachineError", "MachineSpec", "Pflash", "QemuInstall", "QemuNotFound",
]
