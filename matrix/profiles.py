"""Arch x firmware profiles: how a cell turns into a MachineSpec. The knowledge of which machine type,
CPU, console device and firmware each combination needs lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.net import Nic
from harness.spec import MachineSpec
from images.recipes.minimal import MinimalImage
from matrix.model import Cell


@dataclass(frozen=True)
class Profile:
    machine: str
    cpu: str | None
    console: str  # the guest's name for the serial port QEMU's -serial feeds
    devices: tuple[str, ...] = ()
    why: str = ""


PROFILES: dict[tuple[str, str], Profile] = {
    ("x86_64", "seabios"): Profile(
        "q35", None, "ttyS0", ("pvpanic",),
        "SeaBIOS is QEMU's default x86 firmware; pvpanic turns a guest panic into QMP GUEST_PANICKED",
    ),
    ("aarch64", "virt"): Profile(
        "virt", "cortex-a57", "ttyAMA0", (),
        "QEMU loads the kernel itself; cortex-a57 boots about 4x faster than -cpu max under TCG",
    ),
    ("riscv64", "opensbi"): Profile(
        "virt", None, "ttyS0", (),
        "OpenSBI fw_dynamic (the pinned QEMU's default -bios, from Debian's opensbi) then the kernel in S-mode",
    ),
}

BASE_APPEND = "panic=-1 oops=panic"


def spec_for(cell: Cell, image: MinimalImage, accel: str, nics: tuple[Nic, ...] = ()) -> MachineSpec:
    profile = PROFILES[(cell.arch, cell.firmware)]
    append = f"console={profile.console} {BASE_APPEND} {cell.append}".strip()
    return MachineSpec(
        arch=cell.arch,
        machine=profile.machine,
        accel=accel,
        cpu=profile.cpu,
        memory_mib=cell.memory_mib,
        smp=cell.smp,
        kernel=image.kernel,
        initrd=image.initrd,
        append=append,
        devices=profile.devices,
        nics=nics,
    )
