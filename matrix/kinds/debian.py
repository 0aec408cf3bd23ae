"""The Debian image: a real Debian 13 root with systemd, udev and networkd, its maintainer scripts run
in a VM of its arch (images/recipes/debian.py), on a GPT disk with an ESP. UEFI firmware and U-Boot
(through its EFI loader) start systemd-boot; SeaBIOS starts syslinux from the protective MBR. Ready is
the serial getty's login prompt, answered as root with the known password, and a bash that answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.deadline import Deadline
from harness.errors import GuestError
from harness.machine import Machine
from harness.spec import Disk, MachineSpec
from harness.timeline import Phase
from images.debian.lock import STICK_TOOLS_SET, busybox_set, debian_root_set, debian_root_tools_set, kernel_set
from images.recipes.debian import LOGIN, PASSWORD
from images.recipes.esp import BIOS_ARCHES
from images.recipes.firmware import FirmwareSet
from matrix.kinds import CheckVerdict, ImageKind, Readiness, RunCheck, check_own_boot_medium, register
from matrix.userspace import METRICS, Userspace, read_userspace

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner
    from matrix.record import BootRecord

# The serial getty's prompt (the host name is images/guest/debian/configure.sh's). Not anchored at the
# end: a kernel line may follow it in the same chunk before the login turns them off the console.
LOGIN_PROMPT = r"bootmatrix-debian login: "
# systemd's own words for a unit that failed, and a root it could not mount: fail the boot at once.
BAD_PATTERNS = {
    "a systemd unit failed": r"\[FAILED\] Failed to start [^\n]*",
    "systemd emergency mode": r"You are in emergency mode[^\n]*",
}

# networkd takes the lease by itself (DHCP=yes on every ethernet link): a test's dhcp() waits for it.
WAIT_FOR_LEASE = "/usr/lib/systemd/systemd-networkd-wait-online --interface={interface} --ipv4 --timeout=60"


# Kernel messages stay on the console until the login (its boot phases are read there), then only
# emergencies: udev still loads modules under TCG after the login, and their lines would land in a
# command's output (systemd's own status lines are off but errors: systemd.show_status=error).
QUIET_CONSOLE = "dmesg -n 1"
# The console's own milestones past the kernel: the kernel starting initramfs-tools' /init, then systemd
# in the real root. systemd-analyze cannot tell these apart (no systemd in the initrd: its "kernel" is
# both), and its firmware and loader times need systemd-boot's LoaderTime* variables, which it sets on
# aarch64 (the generic timer gives its frequency) but not on x86_64 or riscv64 under TCG, nor behind
# SeaBIOS: the console's split is the one every cell has.
PHASES = ((Phase.INITRD, r"Run /init as init process"),
          (Phase.USERSPACE, r"systemd\[1\]: systemd \d+\S* running in system mode"))
USERSPACE_BUDGET = 300.0  # seconds for the boot to finish after the login and systemd to answer: a hang


class UserspaceCheck(RunCheck):
    """After the login: the boot must finish with every unit up (`running`, not `degraded`), and
    systemd's own timeline (firmware, loader, kernel, initrd, userspace; the slowest units) is kept."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self.userspace: Userspace | None = None
        self.error = ""

    def after_boot(self, machine: Machine, record: BootRecord) -> None:
        try:
            self.userspace = read_userspace(machine.console, Deadline.after(USERSPACE_BUDGET))
        except (RuntimeError, ValueError, GuestError) as error:
            self.error = str(error).splitlines()[0]

    def verdict(self, baseline: Callable[[str, int], float | None]) -> CheckVerdict:
        if self.error:
            return CheckVerdict([f"{self.cell.id}: systemd's timeline could not be read: {self.error}"])
        if self.userspace is None:
            return CheckVerdict()
        found = self.userspace
        failures = []
        if found.state != "running":
            failures.append(f"{self.cell.id}: systemd is {found.state or 'silent'}, not running; "
                            f"failed units: {', '.join(found.failed) or 'none listed'}")
        summary = f"{found.phases.get('userspace', 0):.1f}"
        return CheckVerdict(failures, found.metrics, summary, {"systemd": asdict(found)})


class Debian(ImageKind):
    name = "debian"
    summary_column = "userspace s"
    metrics = METRICS

    def check(self, cell: Cell) -> None:
        check_own_boot_medium(cell, media="disk", is_a="a disk", label="the Debian image",
                              through="UEFI or U-Boot (systemd-boot), or SeaBIOS on x86_64 (syslinux)",
                              command_line="its boot loaders' entries carry the kernel command line "
                                           "(images/recipes/debian.py)", bios_arches=BIOS_ARCHES)

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        image = lab.debian_disk(cell.arch)
        return BootMedia(None, firmware, None, {"disk": image.disk})

    def shape(self, cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
        # snapshot=True: each boot writes its journal and logins to an overlay, never to the store's disk.
        return replace(spec, disks=(Disk(media.artifacts["disk"]),))

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        from matrix.model import Login

        return Readiness(LOGIN_PROMPT, shell=True, login=Login(user=LOGIN, password=PASSWORD),
                         bad_patterns=dict(BAD_PATTERNS), dhcp_command=WAIT_FOR_LEASE, marker_label="the login prompt",
                         settle=(QUIET_CONSOLE,), phases=PHASES)

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        return [debian_root_set(cell.arch), debian_root_tools_set(cell.arch), kernel_set(cell.arch),
                busybox_set(cell.arch), STICK_TOOLS_SET]

    def restorable(self, cell: Cell) -> bool:
        """A systemd boot under TCG takes a minute or more: tests start from a logged-in snapshot."""
        return True

    def run_check(self, cell: Cell, matrix_file: Path) -> RunCheck | None:
        return UserspaceCheck(cell)


DEBIAN = register(Debian())
