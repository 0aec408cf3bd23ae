"""Arch x firmware profiles: how a cell turns into a MachineSpec. Which machine type, CPU, console, flash
banks and boot path each combination needs is known here and nowhere else.

Which firmware there is, and how each shapes the machine, is matrix/firmware.py's table.
media "direct": QEMU (or the firmware, through fw_cfg) loads the kernel and initramfs itself.
media "stick":  the firmware boots the multi-arch VFAT stick (images/recipes/stick.py) from a virtio disk.
What each image kind boots (its kernel, stick, ISO or a user's files) is its own (matrix/kinds/).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from arches import ARCHES
from harness.net import Nic
from harness.spec import MachineSpec, Pflash
from harness.timeline import Phase
from images.recipes.firmware import FirmwareSet
from images.recipes.minimal import MinimalImage
from matrix.firmware import DIRECT_FIRMWARE, profile
from matrix.kinds import kind_of
from matrix.model import Cell

CONSOLE = {a.name: a.console for a in ARCHES.values()}

# Milestones every boot may pass, in order; each is taken the first time its pattern shows.
TIMELINE_PHASES = [
    # First words of each firmware: SeaBIOS, U-Boot, OpenSBI, AAVMF / edk2 banner, OVMF's boot manager,
    # and edk2's terminal driver setting its text mode (ESC [=3h) as OVMF's console starts: all that OVMF
    # sends before a kernel QEMU loaded (screen clears; SeaBIOS clears the screen too, so a clear is not it).
    (Phase.FIRMWARE, r"SeaBIOS \(version|U-Boot 20\d\d|OpenSBI v\d|UEFI firmware \(version|BdsDxe: loading"
                 r"|\x1b\[=3h"),
    # Handing over to a boot loader or an EFI application: syslinux, UEFI's boot manager, U-Boot bootflows.
    (Phase.BOOTLOADER, r"(?:SYS|ISO)LINUX \d|BdsDxe: starting|Booting: |Booting bootflow|Found EFI removable media"),
    (Phase.KERNEL, r"EFI stub: |Linux version \d"),
]


@dataclass(frozen=True)
class BootMedia:
    """What a cell boots: the arch's image (direct), the stick, and the firmware set's files; for a cell
    with its own artifacts, their local files by key (kernel, initrd, dtb, iso, disk, efi: the FAT disk
    that carries the application, code, vars, bios)."""

    image: MinimalImage | None
    firmware: FirmwareSet | None
    stick: Path | None = None  # stick boots; and the root disk of direct boots of a rooted image
    artifacts: dict[str, Path] = field(default_factory=dict)



def direct_cell(arch: str, **fields: object) -> Cell:
    """A cell of the arch's simplest boot (no boot loader, QEMU hands over the kernel): where harness,
    network and Go tests run, and what the benchmarks measure."""
    return Cell.model_validate({"arch": arch, "firmware": DIRECT_FIRMWARE[arch], "media": "direct", **fields})


def needs_firmware_set(cell: Cell) -> bool:
    return profile(cell.arch, cell.firmware).runs_firmware


def spec_for(cell: Cell, media: BootMedia, accel: str, nics: tuple[Nic, ...] = ()) -> MachineSpec:
    spec = MachineSpec(
        arch=cell.arch,
        machine=ARCHES[cell.arch].machine,
        accel=accel,
        cpu=ARCHES[cell.arch].cpu,
        memory_mib=cell.memory_mib,
        smp=cell.smp,
        nics=nics,
    )
    return _with_firmware(cell, media, kind_of(cell).shape(cell, media, spec))


def _with_firmware(cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
    configure = profile(cell.arch, cell.firmware).configure
    if configure is not None:
        assert media.firmware is not None
        spec = configure(spec, media.firmware)
    files = media.artifacts
    if "code" in files:  # a firmware build under test: its CODE bank, with its own VARS or the set's
        banks = list(spec.pflash) or [Pflash(files["code"], readonly=True)]
        banks[0] = Pflash(files["code"], readonly=True)
        if "vars" in files:
            banks[1:] = [Pflash(files["vars"], readonly=False)]
        spec = replace(spec, pflash=tuple(banks))
    if "bios" in files:
        spec = replace(spec, bios=files["bios"])
    # A cell's option replaces the firmware profile's option of the same key (acpi=on over acpi=off).
    keys = {option.split("=", 1)[0] for option in cell.machine_options}
    kept = tuple(option for option in spec.machine_options if option.split("=", 1)[0] not in keys)
    return replace(spec, machine_options=(*kept, *cell.machine_options))
