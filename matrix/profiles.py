"""Arch x firmware profiles: how a cell turns into a MachineSpec. Which machine type, CPU, console, flash
banks and boot path each combination needs is known here and nowhere else.

Which firmware there is, and how each shapes the machine, is matrix/firmware.py's table.
media "direct": QEMU (or the firmware, through fw_cfg) loads the kernel and initramfs itself.
media "stick":  the firmware boots the multi-arch VFAT stick (images/recipes/stick.py) from a virtio disk.
image "gosource": the stick is the mostly-source image's (images/recipes/gosource.py), attached to direct
                boots too: their first-stage initrd mounts its VFAT root.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from harness.net import Nic
from harness.spec import Disk, MachineSpec, Pflash
from harness.timeline import Phase
from images.artifacts import disk_format
from images.recipes.firmware import FirmwareSet
from images.recipes.minimal import MinimalImage
from matrix.firmware import DIRECT_FIRMWARE, profile
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
    if cell.artifact_cell:
        return _artifact_spec(cell, media, spec)
    if cell.image == "tinyboot":
        iso = media.artifacts["iso"]
        spec = replace(spec, disks=(Disk(iso, snapshot=False, interface="scsi-cd", readonly=True),))
    elif cell.media == "direct":
        assert media.image is not None
        append = f"console={CONSOLE[cell.arch]} {KERNEL_OPTIONS} {cell.append}".strip()
        spec = replace(spec, kernel=media.image.kernel, initrd=media.image.initrd, append=append)
        if media.stick is not None:
            spec = replace(spec, disks=(Disk(media.stick),))
    else:
        assert media.stick is not None
        spec = replace(spec, disks=(Disk(media.stick),))
    return _with_firmware(cell, media, spec)


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


def kernel_command_line(cell: Cell) -> str:
    """A user's kernel gets their `append` as it is, after console=<the arch's serial device> unless the
    append names a console or the cell's `console` says otherwise ("" for none)."""
    device = CONSOLE[cell.arch] if cell.console is None else cell.console
    console = f"console={device}" if device and "console=" not in cell.append else ""
    return f"{console} {cell.append}".strip()


def _artifact_spec(cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
    files = media.artifacts
    disks: list[Disk] = []
    if "kernel" in files:
        spec = replace(spec, kernel=files["kernel"], initrd=files.get("initrd"), dtb=files.get("dtb"),
                       append=kernel_command_line(cell) or None)
    if "iso" in files:
        disks.append(Disk(files["iso"], snapshot=False, interface="scsi-cd", readonly=True))
    if "efi" in files:
        disks.append(Disk(files["efi"]))
    if "disk" in files:
        disks.append(Disk(files["disk"], format=disk_format(files["disk"])))
    return _with_firmware(cell, media, replace(spec, disks=tuple(disks)))
