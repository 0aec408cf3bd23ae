"""The A/B image: a GPT disk with two dm-verity root slots, an ESP with boot-counted entries and a data
partition (images/recipes/ab.py). UEFI firmware starts systemd-boot, which chooses and counts; SeaBIOS
starts syslinux, and the initramfs chooses and counts. Ready is the slot's own line, after its health
check blessed the entry. A cell boots the image as built (slot a, version 1); the update, rollback and
power-cut tests (tests/vm/test_ab_*.py) give each machine a persistent state of its own."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from harness.spec import Disk, MachineSpec
from images.debian.lock import STICK_TOOLS_SET, busybox_set, go_set, kernel_set
from images.recipes.ab import BAD_PATTERNS, READY
from images.recipes.esp import BIOS_ARCHES
from images.recipes.firmware import FirmwareSet
from matrix.kinds import ImageKind, Readiness, check_own_boot_medium, register

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner


class Ab(ImageKind):
    name = "ab"

    def check(self, cell: Cell) -> None:
        check_own_boot_medium(cell, media="disk", is_a="a disk", label="the A/B image",
                              through="UEFI (systemd-boot), or SeaBIOS on x86_64 (syslinux)",
                              command_line="each boot entry on its ESP carries the kernel command line that "
                                           "binds its slot (images/recipes/ab.py)", bios_arches=BIOS_ARCHES)

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        image = lab.ab_image(cell.arch)
        return BootMedia(image.boot, firmware, None, {"disk": image.disk})

    def shape(self, cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
        # snapshot=True: a cell's boot counts and blesses on an overlay, never on the store's image.
        return replace(spec, disks=(Disk(media.artifacts["disk"]),))

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        return Readiness(READY, shell=True, bad_patterns=dict(BAD_PATTERNS), marker_label="the A/B slot's ready line")

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        return [kernel_set(cell.arch), busybox_set(cell.arch), go_set(cell.arch), STICK_TOOLS_SET]


AB = register(Ab())
