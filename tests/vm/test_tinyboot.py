"""The tinyboot ISO (issue 14) on every cell of matrix/tinyboot.toml: one Go app as PID 1, booted from a
CD-ROM through the arch's firmware. Its power paths (power button, signal, the app's own exit, panics),
its two NICs and forward, /persistent across reboots and power cycles, and /iso.

Each test leaves, next to its console transcript, argv and QMP journal, the timeline it measured
(power-timeline.json); figures are recorded, not asserted: the deadlines here are for hangs.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from arches import ARCHES
from harness.machine import Machine
from harness.net import Forward, UserNet
from harness.spec import Disk, MachineSpec
from images.debian.fetch import share_downloads
from images.recipes.gosource import build_go_root
from images.recipes.tinyboot import READY, build_app, build_tinyboot_iso, persistent_disk
from images.store import Store, file_sha256
from matrix.lab import Lab
from matrix.model import Cell, load_matrix

TINYBOOT_MATRIX = Path(__file__).parents[2] / "matrix" / "tinyboot.toml"
CELLS = load_matrix(TINYBOOT_MATRIX)
pytestmark = [pytest.mark.vm, pytest.mark.bootmatrix_cold]
STAMPED = re.compile(r"^\[\s*([\d.]+)\] (.*)$")


def stamped_lines(machine: Machine) -> list[tuple[float, str]]:
    """The console transcript as (seconds since QEMU started, line)."""
    lines = []
    for line in (machine.workdir / "console.log").read_text(errors="replace").splitlines():
        found = STAMPED.match(line)
        if found:
            lines.append((float(found.group(1)), found.group(2)))
    return lines


def first_line(machine: Machine, pattern: str, after: float = 0.0) -> tuple[float, str]:
    regex = re.compile(pattern)
    for t, line in stamped_lines(machine):
        if t >= after and regex.search(line):
            return t, line
    raise AssertionError(f"no console line matches {pattern!r} after {after:.2f} s; tail:\n{machine.tail()}")


def with_disk(path: Path, on_reboot: Literal["exit", "reset"] = "exit"):
    def customize(spec: MachineSpec) -> MachineSpec:
        return replace(spec, disks=(*spec.disks, Disk(path, snapshot=False)), on_reboot=on_reboot)

    return customize


def http_get(port: int, path: str, seconds: float = 30.0) -> str:
    """GET from the app through the forward, retrying while it is not listening yet (its ready line
    comes just before its server starts)."""
    until = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                return str(reply.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > until:
                raise
            time.sleep(0.25)


def has_power_button(machine: Machine) -> bool:
    return any("(Power Button)" in line for _, line in stamped_lines(machine))


@pytest.fixture(params=CELLS, ids=[c.id for c in CELLS])
def tiny_cell(request: pytest.FixtureRequest) -> Cell:
    return request.param  # type: ignore[no-any-return]


def test_power_button_stops_the_app_and_the_disk_keeps_its_state(
    bootmatrix_vms, tiny_cell: Cell, tmp_path: Path, record_property
) -> None:
    """QMP system_powerdown -> KEY_POWER -> the app's context ends -> its cleanup (a console line and a
    line in /persistent/shutdown.log) -> PID 1 powers off -> QMP SHUTDOWN guest-shutdown. Then a new QEMU
    on the same disk (a power cycle) finds the count and the log.

    A board that cannot deliver the button: riscv64 virt, whose ACPI tables have no power button device
    for Linux (QEMU reports POWERDOWN, no input device appears). There the same stop is asked the way a
    shell's poweroff asks it, through /sbin/poweroff (SIGUSR2 to PID 1), and the test checks that the
    button still has no effect, so it fails the day it starts working."""
    disk = persistent_disk(tmp_path / "persistent.img")
    nics = (UserNet(restrict=True, forwards=(Forward(80),)),)
    guest = bootmatrix_vms(tiny_cell, nics=nics, customize=with_disk(disk))
    port = guest.machine.forwarded_ports()[("tcp", 80)]
    assert "boot 1\n" in http_get(port, "/")
    machine = guest.machine
    if has_power_button(machine):
        down = guest.powerdown(60)
        request_line = first_line(machine, r"tinyboot: power button \(KEY_POWER", down.pressed)
    else:
        assert tiny_cell.arch == "riscv64", "no power button device on a board that has one"
        guest.qmp.powerdown()
        assert guest.qmp.wait_event("POWERDOWN", 5) is not None
        time.sleep(3)
        assert "boot 1\n" in http_get(port, "/"), "the app stopped on a button this board is not known to deliver"
        assert "SHUTDOWN" not in [e.name for e in guest.qmp.events]
        pressed = time.monotonic() - machine.t0
        http_get(port, "/poweroff")
        down = machine.wait_power_off(guest.deadline(60), pressed)
        request_line = first_line(machine, r"tinyboot: signal user defined signal 2", down.pressed)
    assert (down.reason, down.returncode) == ("guest-shutdown", 0)
    # Each step's line is looked for from the press on, not after the step before it, so that the order
    # asserted below is what the console showed.
    cancelled = first_line(machine, r"tinyapp: shutdown requested", down.pressed)
    cleaned = first_line(machine, r"tinyapp: clean shutdown done", down.pressed)
    final = first_line(machine, r"tinyboot: power off: syncing and unmounting", down.pressed)
    timeline = {"command": down.pressed, "request_seen": request_line[0], "app_cancelled": cancelled[0],
                "cleanup_done": cleaned[0], "poweroff_call": final[0], "qmp_shutdown": down.shutdown}
    relative = {k: round(v - down.pressed, 3) for k, v in timeline.items()}
    (guest.workdir / "power-timeline.json").write_text(json.dumps({"cell": tiny_cell.id, "seconds": relative,
                                                                   "path": "button" if has_power_button(machine)
                                                                   else "/sbin/poweroff"}, indent=2) + "\n")
    record_property("power_timeline", relative)
    guest.metric("powerdown_s", down.seconds, "s")
    assert list(relative.values()) == sorted(relative.values()), relative

    again = bootmatrix_vms(tiny_cell, name="power-on", nics=nics, customize=with_disk(disk))
    page = http_get(again.machine.forwarded_ports()[("tcp", 80)], "/")
    assert "boot 2\n" in page and "shutdown-log: boot 1: clean shutdown after" in page, page


def test_the_app_exiting_or_panicking_reboots_the_machine(
    bootmatrix_vms, tiny_cell: Cell, tmp_path: Path, record_property
) -> None:
    """An unrequested exit, a panic in main (cleanup's recover) and a panic in another goroutine (no
    recover can catch it; PID 1 sees its child die) each reboot the machine, and so does a requested
    reboot (/sbin/reboot: SIGTERM to PID 1), after the app's context ended and its shutdown was logged:
    QMP RESET guest-reset in the same QEMU (on_reboot="reset"), the app back, its boot count in
    /persistent one higher each time."""
    disk = persistent_disk(tmp_path / "persistent.img")
    guest = bootmatrix_vms(tiny_cell, nics=(UserNet(restrict=True, forwards=(Forward(80),)),),
                           customize=with_disk(disk, on_reboot="reset"))
    port = guest.machine.forwarded_ports()[("tcp", 80)]
    assert "boot 1\n" in http_get(port, "/")
    reboots = {}
    for boot, (path, said) in enumerate([("/exit", r"app ended on its own \(exit status 0\): rebooting"),
                                         ("/panic", r"app ended on its own \(exit status 2: the app panicked\)"),
                                         ("/crash", r"app ended on its own \(exit status 2: the app panicked\)"),
                                         ("/reboot", r"app stopped \(exit status 0\); reboot")],
                                        start=2):
        started = time.monotonic() - guest.machine.t0
        event = guest.reboot_and_wait(READY, lambda p=path: http_get(port, p), seconds=2 * guest.budget)
        first_line(guest.machine, "tinyboot: " + said, started)
        assert f"boot {boot}\n" in http_get(port, "/"), f"after {path}"
        reboots[path] = round(event.t - started, 3)
    # The asked-for reboot (SIGTERM to PID 1, as /sbin/reboot sends it) ended the app's context first.
    first_line(guest.machine, r"tinyboot: signal terminated: stopping the app, then reboot")
    assert "shutdown-log: boot 4: clean shutdown after" in http_get(port, "/")
    record_property("seconds_to_reset", reboots)
    # Every reset is the guest's own (SeaBIOS adds a second one of its own right after each reboot).
    resets = [e for e in guest.qmp.events if e.name == "RESET"]
    assert len(resets) >= 4 and {e.data.get("reason") for e in resets} == {"guest-reset"}
    assert "SHUTDOWN" not in [e.name for e in guest.qmp.events]
    transcript = "\n".join(line for _, line in stamped_lines(guest.machine))
    assert "tinyboot: app panicked: tinyapp: /panic asked for a panic" in transcript  # cleanup's recover
    assert "panic: tinyapp: /crash panics outside main" in transcript  # Go's own report, then PID 1's reboot


def test_two_nics_a_forward_and_the_iso_without_a_persistent_disk(
    bootmatrix_vms, tiny_cell: Cell
) -> None:
    """Both NICs get a lease (on two different user networks), the status page comes through the
    forward, /iso holds the ISO's own files, and with no btrfs disk the app runs and says so."""
    nics = (UserNet(restrict=True, forwards=(Forward(80),)), UserNet(restrict=True, network="10.0.3.0/24"))
    guest = bootmatrix_vms(tiny_cell, nics=nics)
    page = http_get(guest.machine.forwarded_ports()[("tcp", 80)], "/")
    assert re.search(r"lease: eth0: lease 10\.0\.2\.15/24 ", page), page
    assert re.search(r"lease: eth1: lease 10\.0\.3\.15/24 ", page), page
    assert "persistent: false" in page and "boot 0\n" in page
    assert "iso: README.txt" in page and "iso: tinyboot.json" in page, page
    first_line(guest.machine, r"tinyapp: /persistent is absent")
    first_line(guest.machine, r"tinyboot: /dev/sr0: iso9660, mounted at /iso")


def test_the_iso_rebuilds_bit_identically_and_says_where_its_bytes_go(
    bootmatrix_lab: Lab, tmp_path: Path, record_property
) -> None:
    """The app and every arch's ISO again, in an empty store sharing only the downloaded packages and
    the Go root: the same bytes. The size report accounts for the ISO (its parts and the rest)."""
    share_downloads(bootmatrix_lab.store.root, tmp_path / "store")
    store = Store(tmp_path / "store")
    go_root = build_go_root(bootmatrix_lab.store, bootmatrix_lab.fetcher())
    apps = build_app(store, go_root)
    fetcher = Lab(store).fetcher()
    for arch in ARCHES:
        first = bootmatrix_lab.tinyboot(arch)
        again = build_tinyboot_iso(store, fetcher, arch, apps)
        assert again.iso != first.iso and file_sha256(again.iso) == file_sha256(first.iso), arch
        sizes = again.sizes
        assert sizes["iso"] == again.iso.stat().st_size
        assert sizes["uki"] > sizes["kernel"] + sizes["initrd_xz"] and sizes["efi_img"] >= sizes["uki"]
        bios_copy = sizes["kernel"] + sizes["initrd_xz"] if arch == "x86_64" else 0
        assert sizes["efi_img"] + bios_copy < sizes["iso"] < sizes["efi_img"] + bios_copy + 2 * 1024 * 1024, sizes
        record_property(f"iso_bytes_{arch}", sizes["iso"])

