"""Every cell of the matrix boots through its own firmware and media, with a boot timeline; the failure
paths of firmware fail fast with their reason; the boot stick is reproducible and readable."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.deadline import Deadline
from harness.errors import GuestPanic
from harness.spec import Disk, Pflash, SpecError
from images.debian.lock import STICK_TOOLS_SET
from images.recipes.stick import build_stick, stick_files, stick_tools, write_stick
from matrix.model import Cell
from tests.timing import AT_ONCE

# Firmware is the point of these tests: every VM boots cold, never from a snapshot.
pytestmark = pytest.mark.bootmatrix_cold

# What each firmware prints, proving the boot went through it. OVMF prints nothing of its own when it
# starts a kernel given by QEMU (only a screen clear), so only its boot-manager lines for the stick.
FIRMWARE_BANNER = {
    ("seabios", "direct"): r"SeaBIOS \(version",
    ("seabios", "stick"): r"SeaBIOS \(version[\s\S]*Booting from Hard Disk[\s\S]*SYSLINUX",
    ("ovmf", "stick"): r"BdsDxe: starting Boot",
    ("aavmf", "direct"): r"UEFI firmware \(version",
    ("aavmf", "stick"): r"UEFI firmware \(version[\s\S]*BdsDxe: starting Boot",
    ("uboot", "stick"): r"U-Boot 20\d\d",
    ("opensbi", "direct"): r"OpenSBI v\d",
    # edk2 runs in S-mode behind QEMU's OpenSBI
    ("edk2", "direct"): r"OpenSBI v\d[\s\S]*RISC-V EDK2 firmware version",
    ("edk2", "stick"): r"OpenSBI v\d[\s\S]*RISC-V EDK2 firmware version",
}
# This test's own knowledge of each firmware, independent of matrix/profiles.py (which it checks):
# the UEFI implementation the guest's kernel names ("efi: EFI v2.7 by <vendor>"; none: no UEFI at all),
# and the first words of the firmware that the `firmware` milestone must hold (OVMF on a direct boot
# sends only its terminal's set-up, ESC [=3h and screen clears, shown as ^[; S-mode U-Boot and edk2 run
# behind OpenSBI).
UEFI_VENDOR = {"ovmf": "EDK II", "ovmf-secboot": "EDK II", "aavmf": "EDK II", "edk2": "EDK II",
               "uboot": "Das U-Boot", "seabios": None, "opensbi": None, "virt": None}
FIRST_WORDS = {
    ("x86_64", "seabios"): r"SeaBIOS \(version", ("x86_64", "ovmf"): r"\^\[\[=3h|BdsDxe: loading",
    ("aarch64", "aavmf"): r"UEFI firmware \(version", ("aarch64", "uboot"): r"U-Boot 20\d\d",
    ("riscv64", "opensbi"): r"OpenSBI v\d", ("riscv64", "uboot"): r"OpenSBI v\d",
    ("riscv64", "edk2"): r"OpenSBI v\d",
}


def test_boots_through_its_firmware_and_media(vm, cell: Cell, record_property) -> None:
    guest = vm()
    transcript = (guest.workdir / "console.log").read_text()
    banner = FIRMWARE_BANNER.get((cell.firmware, cell.media))
    if banner:
        assert re.search(banner, transcript), f"{cell.firmware} did not show {banner!r} on the console"
    # The guest's own view of its firmware: UEFI or not, and whose.
    uefi, _ = guest.run("test -d /sys/firmware/efi && echo uefi || echo no-uefi")
    efi_line, _ = guest.run("dmesg | grep -m1 -o 'efi: EFI v.*'")
    vendor = UEFI_VENDOR[cell.firmware]
    if vendor is None:
        assert (uefi, efi_line) == ("no-uefi", ""), f"{cell.firmware} is no UEFI, yet the guest saw {efi_line!r}"
    else:
        assert uefi == "uefi", f"{cell.id}: no /sys/firmware/efi in the guest"
        assert re.fullmatch(rf"efi: EFI v[\d.]+ by .*{vendor}", efi_line), (cell.firmware, efi_line)
    cmdline, code = guest.run("cat /proc/cmdline")
    assert code == 0
    if cell.media == "stick":
        # Booted from the stick: syslinux names the kernel it loaded, systemd-boot passes the initrd path.
        assert f"BOOT_IMAGE=/{cell.arch}/linux" in cmdline or f"initrd=\\{cell.arch}\\initrd" in cmdline, cmdline
    else:
        assert "BOOT_IMAGE" not in cmdline and "initrd=\\" not in cmdline, cmdline
    marks = guest.machine.timeline.marks
    if cell.firmware == "virt":
        assert "firmware" not in marks  # QEMU's own boot code jumps into the kernel
    else:
        assert re.search(FIRST_WORDS[(cell.arch, cell.firmware)], marks["firmware"].text), marks["firmware"]
    assert {"kernel", "init", "ready"} <= set(marks)
    milestones = guest.machine.timeline.as_dict()
    for phase, seconds in milestones.items():
        record_property(f"t_{phase}", seconds)
    # What the reports read: the boot record on disk carries the same milestones.
    assert json.loads((guest.workdir / "boot.json").read_text())["milestones"] == milestones


def _unsigned_stick_cell() -> Cell:
    return Cell(arch="x86_64", firmware="ovmf-secboot", media="stick")


def test_uefi_only_stick_on_seabios_fails_fast(bootmatrix_vms, bootmatrix_lab) -> None:
    uefi_only = build_stick(
        bootmatrix_lab.store, bootmatrix_lab.fetcher(), {a: bootmatrix_lab.image(a) for a in ("x86_64",)},
        uefi_only=True,
    )
    cell = Cell(arch="x86_64", firmware="seabios", media="stick")
    guest = bootmatrix_vms(cell, boot=False, customize=lambda spec: replace(spec, disks=(Disk(uefi_only),)))
    started = time.monotonic()
    with pytest.raises(GuestPanic, match=r"boot failure on the console: Boot failed"):
        bootmatrix_lab.boot(guest.machine, guest.record, Deadline.after(120))
    assert time.monotonic() - started < 120 * AT_ONCE


def test_secure_boot_refuses_the_unsigned_stick_as_a_security_violation(bootmatrix_vms, bootmatrix_lab) -> None:
    guest = bootmatrix_vms(_unsigned_stick_cell(), boot=False)
    started = time.monotonic()
    with pytest.raises(GuestPanic, match=r"security violation on the console: BdsDxe: failed to load .*Access Denied"):
        bootmatrix_lab.boot(guest.machine, guest.record, Deadline.after(240))
    assert time.monotonic() - started < 240 * AT_ONCE  # a UEFI boot to the refusal, then at once


def test_wrong_pflash_size_is_refused_before_launch(bootmatrix_vms, tmp_path: Path) -> None:
    small = tmp_path / "AAVMF_VARS-2MiB.fd"
    small.write_bytes(b"\0" * 2 * 1024 * 1024)

    def shrink_vars(spec):
        return replace(spec, pflash=(spec.pflash[0], Pflash(small, readonly=False)))

    with pytest.raises(SpecError, match=r"pflash1 AAVMF_VARS-2MiB.fd is 2097152 bytes; aarch64 virt needs exactly"):
        bootmatrix_vms(Cell(arch="aarch64", firmware="aavmf", media="direct"), boot=False, customize=shrink_vars)


def test_stick_is_bit_identical_when_built_twice(bootmatrix_lab) -> None:
    images = {a: bootmatrix_lab.image(a) for a in ("x86_64", "aarch64", "riscv64")}
    digests = []
    tool_debs = bootmatrix_lab.fetcher().fetch_set(STICK_TOOLS_SET)
    with tempfile.TemporaryDirectory(prefix="bm-stick-twice-") as tmp, stick_tools(tool_debs) as tools:
        for attempt in range(2):
            target = Path(tmp) / f"stick{attempt}.img"
            write_stick(target, stick_files(images, tools, False), tools, False)
            digests.append(hashlib.sha256(target.read_bytes()).hexdigest())
            time.sleep(1.1)  # a second apart, so a timestamp that leaked in would show
    assert digests[0] == digests[1]
    assert hashlib.sha256(bootmatrix_lab.stick().read_bytes()).hexdigest() == digests[0]


def _names(fat, path: str) -> set[str]:
    return {name.lower() for name in fat.listdir(path)}


def _path(fat, path: str) -> str:
    """The stored spelling of `path`: short names come back upper-case, long names as written."""
    actual = ""
    for part in path.strip("/").split("/"):
        actual += "/" + next(name for name in fat.listdir(actual or "/") if name.lower() == part.lower())
    return actual


def test_stick_layout_reads_back_with_pyfatfs(bootmatrix_lab) -> None:
    from pyfatfs.PyFatFS import PyFatFS

    stick = bootmatrix_lab.stick()
    image = bootmatrix_lab.image("riscv64")
    fat = PyFatFS(str(stick), offset=1024 * 1024, read_only=True)
    try:
        # pyfatfs 1.1 ignores the NT lower-case flags mtools uses for short names, so it reports them
        # in upper case (long names come back as written); firmware compares names case-insensitively.
        assert _names(fat, "/") == {"efi", "loader", "syslinux", "x86_64", "aarch64", "riscv64"}
        assert _names(fat, _path(fat, "/EFI/BOOT")) == {"bootx64.efi", "bootaa64.efi", "bootriscv64.efi"}
        assert _names(fat, _path(fat, "/loader/entries")) == {"x86_64.conf", "aarch64.conf", "riscv64.conf"}
        with fat.openbin(_path(fat, "/riscv64/linux")) as kernel:
            assert hashlib.sha256(kernel.read()).hexdigest() == hashlib.sha256(image.kernel.read_bytes()).hexdigest()
        entry = fat.readtext(_path(fat, "/loader/entries/riscv64.conf"))
        assert "architecture riscv64" in entry and "linux /riscv64/linux" in entry
        assert "DEFAULT x86_64" in fat.readtext(_path(fat, "/syslinux/syslinux.cfg"))
        assert "ldlinux.sys" in _names(fat, _path(fat, "/syslinux"))
    finally:
        fat.close()
