"""Our minimal image: a Debian kernel and a busybox initramfs whose init prints a readiness marker and
gives a shell; booted directly by QEMU or from the multi-arch VFAT stick (images/recipes/minimal.py,
images/recipes/stick.py). The only kind whose VMs start from snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

from images.recipes.firmware import FirmwareSet
from matrix.kinds import ImageKind, Readiness, register

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner


class Minimal(ImageKind):
    name = "minimal"

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        return BootMedia(lab.image(cell.arch), firmware, lab.stick() if cell.media == "stick" else None)

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        return Readiness.of_image(lab.image(cell.arch))

    def restorable(self, cell: Cell) -> bool:
        return True

    @property
    def id_suffix(self) -> str:
        return ""  # the default kind: x86_64-seabios-direct


MINIMAL = register(Minimal())
