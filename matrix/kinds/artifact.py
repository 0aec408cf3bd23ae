"""A cell that boots the user's own files: a kernel (with an initrd, a device tree, or our initramfs),
an ISO, a disk image or an EFI application, and a firmware build of their own (code, vars, bios);
readiness is the cell's `ready` pattern, a login prompt, or a shell that answers (README "Bring your own
image", docs/own-image.md). Its files come through images.artifacts: a local path, a URL verified by
sha256, or a file of a locked Debian package."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from harness.guestnet import DEFAULT_DHCP
from harness.spec import Disk, MachineSpec
from images.artifacts import disk_format, find_locked
from images.recipes.firmware import FirmwareSet
from matrix.firmware import DIRECT, STICK, profile, profiles_of
from matrix.kinds import ARTIFACT, ImageKind, Readiness, register
from matrix.model import BOOT_ARTIFACTS, DEFAULT_IMAGE

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner

LOGIN_PROMPT = r"(?m)login: *$"


class Artifact(ImageKind):
    name = ARTIFACT

    def check(self, cell: Cell) -> None:
        media_of_firmware = profile(cell.arch, cell.firmware).media
        boots = [key for key in BOOT_ARTIFACTS if getattr(cell, key) is not None]
        if len(boots) > 1 and not (set(boots) <= {"kernel", "disk"}):
            raise ValueError(f"one of kernel, iso, disk, efi boots a cell (got {', '.join(boots)}); a kernel may "
                             "come with a disk")
        if BOOT_ARTIFACTS[boots[0]] != cell.media:
            raise ValueError(f"media {cell.media!r} does not match {boots[0]} (which boots as "
                             f"{BOOT_ARTIFACTS[boots[0]]!r}): leave media out")
        direct = DIRECT in media_of_firmware
        from_disk = STICK in media_of_firmware
        if cell.media == "direct" and not direct:
            raise ValueError(f"{cell.arch}/{cell.firmware} cannot load a kernel directly (it boots from disks)")
        if cell.media in ("iso", "disk", "efi") and not from_disk:
            raise ValueError(f"{cell.arch}/{cell.firmware} boots no {cell.media}: it loads a kernel directly")
        if cell.media == "efi" and not profile(cell.arch, cell.firmware).uefi:
            uefi = sorted(p.name for p in profiles_of(cell.arch).values() if p.uefi)
            raise ValueError(f"efi needs UEFI firmware; {cell.firmware} is not (UEFI on {cell.arch}: {uefi})")
        for key in ("initrd", "dtb"):
            if getattr(cell, key) is not None and cell.kernel is None:
                raise ValueError(f"{key} needs kernel")
        if cell.append and cell.kernel is None:
            raise ValueError("append needs kernel (the firmware or the ISO's own loader gives a command line)")
        if cell.media == "stick" or cell.image != DEFAULT_IMAGE:
            raise ValueError("a cell with its own artifact has no image or stick of ours")
        if cell.kernel is not None and cell.kernel.image is not None and cell.initrd is None:
            raise ValueError("kernel = {image = \"minimal\"} is ours: bring an initrd, or drop the kernel key")
        if (cell.code is None) != (cell.vars is None) and cell.code is None:
            raise ValueError("vars needs code (the flash bank it belongs to)")
        for key in ("iso", "disk", "efi", "code", "vars", "bios", "dtb"):
            artifact = getattr(cell, key)
            if artifact is not None and artifact.image is not None:
                raise ValueError(f"{key}: image = {artifact.image!r} is for kernel and initrd only")

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        return BootMedia(lab.own_image(cell), firmware, None, lab.artifacts(cell))

    def shape(self, cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
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
        return replace(spec, disks=tuple(disks))

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        """The cell's `ready` regex, a login prompt when it logs in, the marker of our initramfs when it
        borrows one, or nothing (a shell that answers is enough). A shell ends readiness when the cell
        logs in or names no `ready` pattern: a banner or an installer's screen has no shell."""
        image = lab.own_image(cell)
        if image is not None:
            borrowed = Readiness.of_image(image)
            bad, dhcp = borrowed.bad_patterns, borrowed.dhcp_command
        else:
            bad, dhcp = {}, DEFAULT_DHCP
        marker = cell.ready or (LOGIN_PROMPT if cell.login is not None else image.ready_marker if image else None)
        label = "readiness marker" if image else f"ready {marker!r}"
        shell = cell.login is not None or cell.ready is None
        return Readiness(marker, shell, cell.login, bad, dhcp, label)

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        sets = super().package_sets(lab, cell) if lab.own_image(cell) is not None else []
        for artifact in cell.artifacts().values():
            if artifact.deb is not None:
                set_name, _ = find_locked(lab.fetcher(), artifact.deb, lab.debian_arch(cell.arch))
                sets.append(set_name)
        return sets


def kernel_command_line(cell: Cell) -> str:
    """A user's kernel gets their `append` as it is, after console=<the arch's serial device> unless the
    append names a console or the cell's `console` says otherwise ("" for none)."""
    from matrix.profiles import CONSOLE

    device = CONSOLE[cell.arch] if cell.console is None else cell.console
    console = f"console={device}" if device and "console=" not in cell.append else ""
    return f"{console} {cell.append}".strip()


ARTIFACT_KIND = register(Artifact())
