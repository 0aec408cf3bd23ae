"""Real boots, one per matrix cell: real QEMU, real Debian kernels, real consoles and QMP.

Each test leaves its VM's console.log, argv.txt, qmp-events.jsonl and boot.json under results/.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace

import pytest

from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, GuestGone, GuestPanic, LaunchError
from matrix.firmware import DIRECT_FIRMWARE
from matrix.model import Cell
from tests.timing import AT_ONCE

# Harness behaviour (console, QMP, failures) is tested on the direct-kernel cells, one per arch; the
# firmware cells are covered by test_firmware.py.
pytestmark = pytest.mark.bootmatrix_cells(media="direct", firmware=list(DIRECT_FIRMWARE.values()))


@pytest.mark.bootmatrix_cold  # checks the boot's own milestones
def test_boots_to_a_shell_and_runs_commands(vm, cell: Cell) -> None:
    guest = vm()
    assert guest.record.milestones["kernel"] < guest.record.milestones["init"] <= guest.record.time_to_ready
    assert guest.run("echo $((6*7))") == ("42", 0)
    assert guest.run("false") == ("", 1)
    output, code = guest.run("uname -m")
    assert code == 0 and output == cell.arch
    assert guest.record.qemu_version and guest.record.accel in ("tcg", "kvm")


def test_a_hang_is_a_timeout_with_the_console_tail(vm) -> None:
    guest = vm()
    guest.console.sendline("echo tail-marker-$((1+1)); sleep 1000")
    with pytest.raises(ConsoleTimeout) as caught:
        guest.console.expect("this never appears", Deadline.after(2))
    assert "tail-marker-2" in caught.value.tail


@pytest.mark.bootmatrix_cold  # a power path
@pytest.mark.bootmatrix_cells(arch=["x86_64", "aarch64"])
def test_qmp_powerdown_ends_the_vm(vm, cell: Cell) -> None:
    guest = vm()
    assert guest.machine.powerdown(guest.deadline(30)).returncode == 0
    shutdown = next(e for e in guest.qmp.events if e.name == "SHUTDOWN")
    assert shutdown.data == {"guest": True, "reason": "guest-shutdown"}
    assert [e.name for e in guest.qmp.events][:1] == ["POWERDOWN"]


@pytest.mark.bootmatrix_cold  # a power path
@pytest.mark.bootmatrix_cells(arch="riscv64")
def test_qmp_powerdown_reaches_no_device_tree_riscv64_guest(vm) -> None:
    """QEMU's riscv virt board has no power button (none in its device tree; its ACPI tables have none
    either: tests/vm/test_tinyboot.py), so QEMU reports POWERDOWN and the guest runs on. Fails the day
    that changes."""
    guest = vm()
    guest.qmp.powerdown()
    assert guest.qmp.wait_event("POWERDOWN", 5) is not None
    time.sleep(3)
    assert guest.run("echo still-$((1+1))") == ("still-2", 0)
    assert "SHUTDOWN" not in [e.name for e in guest.qmp.events]


@pytest.mark.bootmatrix_cold  # a power path
def test_guest_poweroff_is_seen_through_qmp_and_fails_waits_at_once(vm) -> None:
    guest = vm()
    started = time.monotonic()
    with pytest.raises(GuestGone, match=r"guest-shutdown|exited with status 0"):
        guest.run("poweroff -f", seconds=60)
    assert time.monotonic() - started < 60 * AT_ONCE
    assert guest.qmp.wait_event("SHUTDOWN", 5) is not None
    assert guest.machine.process.wait(10) == 0


@pytest.mark.bootmatrix_cold  # a panic
def test_kernel_panic_fails_fast_with_the_reason(vm) -> None:
    guest = vm()
    guest.console.sendline("echo c > /proc/sysrq-trigger")
    triggered = time.monotonic()
    with pytest.raises(GuestPanic, match="Kernel panic") as caught:
        guest.console.expect("this never appears", Deadline.after(120))
    assert time.monotonic() - triggered < 120 * AT_ONCE
    assert "sysrq" in caught.value.tail.lower()
    guest.machine.process.wait(60)  # QEMU ends (status 0, -no-reboot): a panic the test was told of is no
    # abnormal end at teardown


def test_qemu_killed_mid_boot_fails_the_wait_naming_the_signal(vm) -> None:
    guest = vm(boot=False)
    killed_at: list[float] = []

    def kill_soon() -> None:
        time.sleep(1.0)
        killed_at.append(time.monotonic())
        guest.machine.process.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        with pytest.raises(GuestGone, match="SIGKILL"):
            guest.console.expect("BOOTMATRIX-READY", Deadline.after(120))
        failed_at = time.monotonic()
    finally:
        killer.join()
    assert failed_at - killed_at[0] < 120 * AT_ONCE


@pytest.mark.bootmatrix_cells(arch="riscv64")
def test_launch_failure_carries_argv_status_and_qemu_output(bootmatrix_vms, cell: Cell) -> None:
    def add_bogus_device(spec):
        return replace(spec, devices=(*spec.devices, "no-such-device-model"))

    with pytest.raises(LaunchError) as caught:
        bootmatrix_vms(cell, boot=False, customize=add_bogus_device)
    message = str(caught.value)
    assert "QEMU exited with status 1" in message
    assert "-device no-such-device-model" in message  # the argv
    assert "'no-such-device-model' is not a valid device model name" in message  # QEMU's own words


@pytest.mark.bootmatrix_cold  # the host QEMU axis: its boot is the point
@pytest.mark.bootmatrix_cells(arch="riscv64")
def test_host_qemu_axis_boots(vm, cell: Cell) -> None:
    """The host's own QEMU is a matrix axis too; riscv64 is the cell it runs cleanly (see the notes)."""
    guest = vm(cell.model_copy(update={"qemu": "host"}))
    assert guest.record.qemu == "host"
    assert guest.run("echo $((6*7))") == ("42", 0)
