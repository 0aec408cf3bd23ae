"""The tinyboot ISO: one Go app as PID 1 of an xz initramfs, in a UKI for UEFI and behind ISOLINUX for
SeaBIOS, one ISO per arch (images/recipes/tinyboot.py). No shell: ready is the app's first line."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from harness.spec import Disk, MachineSpec
from images.debian.lock import go_set, kernel_set
from images.recipes.firmware import FirmwareSet
from matrix.kinds import ImageKind, Readiness, check_own_boot_medium, register

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner


class Tinyboot(ImageKind):
    name = "tinyboot"

    def check(self, cell: Cell) -> None:
        check_own_boot_medium(cell, media="iso", is_a="an ISO", label="the tinyboot ISO",
                              through="UEFI, or SeaBIOS on x86_64",
                              command_line="its kernel command line is built into the UKI and ISOLINUX's "
                                           "configuration (images/recipes/tinyboot.py)")

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        iso = lab.tinyboot(cell.arch)
        return BootMedia(iso.image, firmware, None, {"iso": iso.iso})

    def shape(self, cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
        return replace(spec, disks=(Disk(media.artifacts["iso"], snapshot=False, interface="scsi-cd", readonly=True),))

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        return Readiness.of_image(lab.tinyboot(cell.arch).image, shell=False)

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        return [kernel_set(cell.arch), go_set(cell.arch)]  # its kernel; the app's toolchain


TINYBOOT = register(Tinyboot())
