"""A/B updates on real firmware (issue 24): the image of images/recipes/ab.py boots slot a under
systemd-boot, its agent installs a slot image served by the payload server into the other slot, and
boot counting, dm-verity and the health check decide what boots next. Each test has its own machine
state (harness/state.py): the disk and the VARS bank persist across the guest's reboots, which happen in
one QEMU (on_reboot="reset"), and across power-ons.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from harness.net import UserNet
from harness.payload_server import PayloadServer
from harness.spec import MachineSpec
from harness.state import MachineState
from images.recipes.ab import DATA_NOTE, READY, TRIES, AbImage
from matrix.ab_sweep import fsck_data, serve_slot
from matrix.lab import Lab
from matrix.model import Cell
from matrix.vm import VM

pytestmark = pytest.mark.bootmatrix_cold  # every test's disk is its own and changes: nothing to restore
# systemd-boot's counting on the UEFI firmware of each arch; on SeaBIOS, syslinux and the initramfs's
# own selector (abagent select) with the same entries and counters.
CELLS = [pytest.param((arch, firmware), id=f"{arch}-{firmware}") for arch, firmware in
         (("x86_64", "ovmf"), ("aarch64", "aavmf"), ("riscv64", "edk2"), ("x86_64", "seabios"))]
# Each test takes 3-5 boots: by default the clean update runs on one cell of each counting path
# (systemd-boot on OVMF, the initramfs's selector on SeaBIOS) and the others on OVMF, which keeps make
# test under its budget; BOOTMATRIX_AB_CELLS=all runs every test on every cell (docs/ab-updates.md).
ALL_CELLS = os.environ.get("BOOTMATRIX_AB_CELLS") == "all"
BOTH_PATHS = CELLS if ALL_CELLS else [CELLS[0], CELLS[3]]
ONE = CELLS if ALL_CELLS else [CELLS[0]]
ARCH = "x86_64"  # the interrupted download: the agent's logic, not the arch's
BOOT_SECONDS = 240  # a whole UEFI boot under TCG on a busy 2-core host, with room


@pytest.fixture(scope="module")
def image(bootmatrix_lab: Lab) -> AbImage:
    return bootmatrix_lab.ab_image(ARCH)


def cell_of(image: AbImage, firmware: str = "ovmf") -> Cell:
    return Cell(arch=image.arch, firmware=firmware, disk={"path": str(image.disk)}, ready=READY)


def persistent(state: MachineState) -> Callable[[MachineSpec], MachineSpec]:
    def customize(spec: MachineSpec) -> MachineSpec:
        return state.adopt(replace(spec, on_reboot="reset"))

    return customize


def booted(guest: VM) -> tuple[str, str]:
    """(slot, version) of the last readiness line."""
    found = re.findall(READY, guest.machine.tail())
    assert found, guest.machine.tail()
    slot, version = found[-1]
    return slot, version


def entries(guest: VM) -> list[str]:
    output, code = guest.run("ls /efi/loader/entries")
    assert code == 0, output
    return sorted(output.split())


def update(guest: VM, url: str, boots: int = 1) -> None:
    """Run the agent and follow the guest through the reboot it makes, to the next readiness line
    (`boots` boots later: a try that fails reboots before it is ready)."""
    guest.net.dhcp()
    guest.reboot_and_wait(READY, lambda: guest.machine.console.sendline(f"abagent update {url}"),
                          BOOT_SECONDS * boots)


def transcript(guest: VM) -> str:
    return (guest.workdir / "console.log").read_text(errors="replace")


@pytest.mark.parametrize("target", BOTH_PATHS)
def test_a_clean_update_a_to_b_to_a_keeps_the_data(bootmatrix_vms, bootmatrix_lab: Lab, target: tuple[str, str],
                                                   payload_server: PayloadServer, tmp_path: Path) -> None:
    arch, firmware = target
    image = bootmatrix_lab.ab_image(arch)
    state = MachineState(tmp_path / "state")
    guest = bootmatrix_vms(cell_of(image, firmware), name="ab", nics=(UserNet(restrict=False),),
                           customize=persistent(state))
    assert booted(guest) == ("a", "1")
    assert guest.run("echo kept-across-updates > /data/mine && sync") == ("", 0)
    assert entries(guest) == ["ab-1.conf"]

    update(guest, serve_slot(payload_server, bootmatrix_lab.ab_slot(arch, "2")))
    assert booted(guest) == ("b", "2")
    log = transcript(guest)
    for state_line in ("manifest", "entries-removed", "download", "written", "verified-sha256", "verified-verity",
                       "installed", "reboot"):
        assert f"ab-agent: {state_line} " in log, state_line
    assert "ab-agent: blessed ab-2" in log
    assert entries(guest) == ["ab-1.conf", "ab-2.conf"], "blessed: the counter is gone"
    assert guest.run("cat /data/mine") == ("kept-across-updates", 0)

    update(guest, serve_slot(payload_server, bootmatrix_lab.ab_slot(arch, "3")))
    assert booted(guest) == ("a", "3")
    assert entries(guest) == ["ab-2.conf", "ab-3.conf"], "slot a's old entry went before its slot was written"
    assert guest.run("cat /data/mine") == ("kept-across-updates", 0)
    assert guest.run("cat /data/note") == (DATA_NOTE, 0), "what the build put on the data partition"
    guest.machine.stop()
    (disk,) = guest.machine.spec.disks
    clean, said = fsck_data(disk.path, image)
    assert clean, said


@pytest.mark.parametrize("target", ONE)
def test_a_new_slot_that_fails_its_health_check_is_rolled_back_after_its_tries(
        bootmatrix_vms, bootmatrix_lab: Lab, target: tuple[str, str], payload_server: PayloadServer,
        tmp_path: Path) -> None:
    arch, firmware = target
    image = bootmatrix_lab.ab_image(arch)
    state = MachineState(tmp_path / "state")
    guest = bootmatrix_vms(cell_of(image, firmware), name="ab", nics=(UserNet(restrict=False),),
                           customize=persistent(state))
    # Every failed try is a whole boot, then the old entry's: TRIES + 1 boots in one wait.
    update(guest, serve_slot(payload_server, bootmatrix_lab.ab_slot(arch, "4", healthy=False)), boots=TRIES + 1)
    log = transcript(guest)
    assert log.count("ab: health check failed for ab-2") == TRIES, log[-3000:]
    assert booted(guest) == ("a", "1")
    assert entries(guest) == ["ab-1.conf", "ab-2+0-3.conf"], "the exhausted entry stays, sorted last"


@pytest.mark.parametrize("target", ONE)
def test_a_slot_with_one_flipped_byte_is_refused_by_verity_and_the_old_slot_boots(
        bootmatrix_vms, bootmatrix_lab: Lab, target: tuple[str, str], payload_server: PayloadServer,
        tmp_path: Path) -> None:
    """The update installs a good slot b; then, powered off, one byte of it flips on the disk (bit rot,
    a torn write): every try of the new entry stops in the initramfs, and slot a boots again."""
    arch, firmware = target
    image = bootmatrix_lab.ab_image(arch)
    state = MachineState(tmp_path / "state")
    cell = cell_of(image, firmware)
    first = bootmatrix_vms(cell, name="install", nics=(UserNet(restrict=False),), customize=persistent(state))
    first.net.dhcp()
    url = serve_slot(payload_server, bootmatrix_lab.ab_slot(arch, "2"))
    first.machine.console.sendline(f"abagent update {url}")
    first.machine.console.expect(r"ab-agent: reboot ", first.deadline(BOOT_SECONDS))
    first.machine.power_cut()
    (disk,) = first.machine.spec.disks
    slot_b = image.partitions["slot-b"]
    with disk.path.open("r+b") as handle:
        handle.seek(slot_b.start + 100_000)
        byte = handle.read(1)
        handle.seek(slot_b.start + 100_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    second = bootmatrix_vms(cell, name="after-bit-rot", customize=persistent(state), boot=False)
    second.machine.console.expect(READY, second.deadline(BOOT_SECONDS * (TRIES + 1)))
    log = transcript(second)
    assert log.count("ab: slot b refused") == TRIES, log[-3000:]
    assert booted(second) == ("a", "1")
    assert entries(second) == ["ab-1.conf", "ab-2+0-3.conf"]


def test_a_download_cut_short_restarts_and_the_update_completes(
        bootmatrix_vms, bootmatrix_lab, image: AbImage, payload_server: PayloadServer, tmp_path: Path) -> None:
    """The server drops the connection after 1 MiB of slot.img: the agent says so, downloads again from
    the start (the slot has no entry yet, so nothing half-written can boot) and the update completes."""
    state = MachineState(tmp_path / "state")
    guest = bootmatrix_vms(cell_of(image), name="ab", nics=(UserNet(restrict=False),), customize=persistent(state))
    url = serve_slot(payload_server, bootmatrix_lab.ab_slot(ARCH, "2"))
    payload_server.cut_short[url.split("/payload/")[1] + "/slot.img"] = 1 << 20
    update(guest, url)
    log = transcript(guest)
    assert re.search(r"ab-agent: download-failed attempt 1: .*(EOF|reset|closed)", log), log[-2000:]
    assert "ab-agent: download attempt 2" in log
    assert booted(guest) == ("b", "2")
    sent = [r.sent_bytes for r in payload_server.requests if r.path.endswith("/slot.img")]
    assert sent == [1 << 20, bootmatrix_lab.ab_slot(ARCH, "2").size], sent
