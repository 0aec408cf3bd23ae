"""What a VM is made of, and the QEMU argv for it. Pure: no process is started here, so it is unit-tested.

The harness always owns the console and the monitor: serial and QMP are socket chardevs on file
descriptors the harness passes in (socketpairs), `-nodefaults` removes every device we did not ask for,
and `-no-reboot` makes a reset end the VM instead of looping (unless the spec asks for
`on_reboot="reset"`, for tests that follow a guest through its own reboot). `-nographic` rather than
`-display none`: with -nodefaults and our own -serial it adds no stdio device, and it is what makes
SeaBIOS print to the serial port (its "sercon"), so firmware output reaches the console and the timeline.

Flash firmware goes through `-blockdev` nodes named by the machine's pflash0/pflash1 properties, the
one form every board here accepts (riscv64 virt needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arches import ARCHES
from harness.errors import MachineError
from harness.net import Nic, nic_args

MIB = 1024 * 1024
# Boards whose flash banks have a fixed size; QEMU's own error comes late and says little.
PFLASH_SIZE = {(a.name, a.machine): a.pflash_bytes for a in ARCHES.values() if a.pflash_bytes}


def option_value(value: str | Path) -> str:
    """`value` as one value inside a QEMU option list (`-drive file=<value>,format=raw`): QEMU splits
    option lists at commas and reads a doubled comma as a literal one, so every comma is doubled. Without
    this a path such as `x.img,file=secret.img` adds options of its own. Every path or user string that
    goes inside an option list goes through here; a whole-argument path (`-kernel PATH`) needs nothing."""
    return str(value).replace(",", ",,")


class SpecError(MachineError):
    """The spec cannot work; found before QEMU is started."""


@dataclass(frozen=True)
class Pflash:
    """One flash bank. A writable bank (VARS) is copied from `path` into the VM's work folder first, so
    no two VMs ever share one and the template stays as it is; unless `in_place`: the bank is a
    machine's persistent state (harness/state.py), written where it is, across power cycles."""

    path: Path
    readonly: bool
    in_place: bool = False


@dataclass(frozen=True)
class Disk:
    """A drive. `snapshot`: writes go to a temporary overlay QEMU makes per VM, so the file (an image in
    the store, or a user's own disk) is never written. interface "scsi-cd" is a CD-ROM on its own
    virtio-scsi controller: the one CD-ROM every board here has (q35's AHCI aside), and one that SeaBIOS,
    OVMF, AAVMF and edk2 for riscv64 all boot El Torito images from."""

    path: Path
    snapshot: bool = True
    interface: str = "virtio-blk-pci"
    readonly: bool = False
    format: str = "raw"  # raw | qcow2: always said, never probed by QEMU
    # Log every write, flush and discard the guest makes to this file (QEMU's blklogwrites driver, read
    # by harness/writelog.py), to rebuild the disk at any power cut. The disk is written in place.
    write_log: Path | None = None

    @property
    def cdrom(self) -> bool:
        return self.interface == "scsi-cd"


@dataclass(frozen=True)
class MachineSpec:
    arch: str  # x86_64 | aarch64 | riscv64
    machine: str  # q35, virt, ...
    accel: str = "tcg"  # tcg | kvm
    cpu: str | None = None
    memory_mib: int = 512
    smp: int = 1
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    dtb: Path | None = None
    bios: Path | None = None
    pflash: tuple[Pflash, ...] = ()
    disks: tuple[Disk, ...] = ()
    machine_options: tuple[str, ...] = ()  # e.g. "smm=on", "acpi=off"
    globals: tuple[str, ...] = ()  # values of -global
    devices: tuple[str, ...] = ()  # values of -device
    extra_args: tuple[str, ...] = ()  # anything else, appended last
    nics: tuple[Nic, ...] = ()  # none: `-nic none`, so nothing (UEFI PXE, say) waits on a network
    # What a guest's reboot does. "exit" (-no-reboot): QEMU ends with SHUTDOWN reason guest-reset, so an
    # unexpected reboot (a panic with panic=N, a triple fault) ends the VM and is reported. "reset"
    # (-action reboot=reset): the guest restarts inside the same QEMU, with the same console, QMP
    # journal, disks and forwarded ports; QMP reports RESET. Machine.reboot_and_wait needs "reset".
    on_reboot: Literal["exit", "reset"] = "exit"

    def pass_fds(self) -> tuple[int, ...]:
        return tuple(fd for nic in self.nics for fd in nic.fds())

    def describe(self) -> str:
        return f"{self.arch}/{self.machine}/{self.cpu or 'default-cpu'}/{self.accel}"


@dataclass(frozen=True)
class HarnessFds:
    console_fd: int
    qmp_fd: int
    pidfile: Path


def validate(spec: MachineSpec) -> None:
    """Refuse what cannot boot, with a clear reason, before anything is started."""
    files = (spec.kernel, spec.initrd, spec.dtb, spec.bios, *(f.path for f in spec.pflash),
             *(d.path for d in spec.disks))
    for item in files:
        if item is not None and not item.exists():
            raise SpecError(f"{spec.describe()}: {item} does not exist")
    required = PFLASH_SIZE.get((spec.arch, spec.machine))
    for unit, flash in enumerate(spec.pflash):
        size = flash.path.stat().st_size
        if required is not None and size != required:
            raise SpecError(
                f"pflash{unit} {flash.path.name} is {size} bytes; {spec.arch} {spec.machine} needs exactly "
                f"{required} ({required // MIB} MiB): pad the image or use the firmware's own flash files"
            )
    if spec.on_reboot not in ("exit", "reset"):
        raise SpecError(f"on_reboot {spec.on_reboot!r}: 'exit' (-no-reboot) or 'reset' (-action reboot=reset)")
    for disk in spec.disks:
        if disk.write_log is not None and (disk.snapshot or disk.readonly or disk.cdrom):
            raise SpecError(f"{disk.path.name}: a write log needs a writable disk written in place "
                            "(snapshot=False, not read-only, not a CD-ROM)")
    if len(spec.pflash) > 2:
        raise SpecError(f"{len(spec.pflash)} pflash banks given; boards have two (CODE, VARS)")


def machine_args(spec: MachineSpec) -> list[str]:
    machine = [spec.machine, *spec.machine_options]
    machine += [f"pflash{unit}=pflash{unit}" for unit in range(len(spec.pflash))]
    return ["-machine", ",".join(machine)]


def pflash_blockdev(unit: int, filename: str, read_only: bool) -> list[str]:
    """The -blockdev of flash bank `unit`; `filename` is QEMU option text (option_value of a path, or a
    placeholder another runner fills in, as LAVA's `{pflash0}`)."""
    node = f"node-name=pflash{unit},driver=file,filename={filename}"
    return ["-blockdev", f"{node},read-only={'on' if read_only else 'off'}"]


def pflash_args(spec: MachineSpec, force_read_only: bool = False) -> list[str]:
    args: list[str] = []
    for unit, flash in enumerate(spec.pflash):
        args += pflash_blockdev(unit, option_value(flash.path), flash.readonly or force_read_only)
    return args


def disk_args(index: int, disk: Disk, filename: str) -> list[str]:
    """The -drive and -device(s) of disk `index`; `filename` as for pflash_blockdev."""
    if disk.write_log is not None:
        return logged_disk_args(index, disk, filename)
    options = f"file={filename},format={disk.format},if=none,id=disk{index}"
    if disk.cdrom:
        return ["-drive", f"{options},media=cdrom,readonly=on", "-device", f"virtio-scsi-pci,id=scsi{index}",
                "-device", f"scsi-cd,drive=disk{index},bus=scsi{index}.0,bootindex={index}"]
    options += ",snapshot=on" if disk.snapshot else ""
    options += ",readonly=on" if disk.readonly else ""
    return ["-drive", options, "-device", f"{disk.interface},drive=disk{index}"]


def logged_disk_args(index: int, disk: Disk, filename: str) -> list[str]:
    """Disk `index` through a blklogwrites node: the guest's device reads and writes the disk's format
    node as usual, and every request that completes is appended to the write log (512-byte log sectors,
    the superblock rewritten at each flush)."""
    assert disk.write_log is not None
    node = f"disk{index}"
    return [
        "-blockdev", f"driver=file,node-name={node}-file,filename={filename}",
        "-blockdev", f"driver={disk.format},node-name={node}-format,file={node}-file",
        "-blockdev", f"driver=file,node-name={node}-log,filename={option_value(disk.write_log)}",
        "-blockdev", f"driver=blklogwrites,node-name={node},file={node}-format,log={node}-log,log-sector-size=512",
        "-device", f"{disk.interface},drive={node}",
    ]


def build_argv(spec: MachineSpec, command: list[str], data_args: list[str], fds: HarnessFds) -> list[str]:
    argv = [*command, *data_args, *machine_args(spec), "-accel", spec.accel]
    if spec.cpu:
        argv += ["-cpu", spec.cpu]
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.smp)]
    reboot = ["-no-reboot"] if spec.on_reboot == "exit" else ["-action", "reboot=reset"]
    argv += ["-nodefaults", "-nographic", *reboot, "-pidfile", str(fds.pidfile)]
    argv += ["-chardev", f"socket,id=console,fd={fds.console_fd}", "-serial", "chardev:console"]
    argv += ["-chardev", f"socket,id=qmp,fd={fds.qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    for value in spec.globals:
        argv += ["-global", value]
    if spec.bios:
        argv += ["-bios", str(spec.bios)]
    argv += pflash_args(spec)
    for index, disk in enumerate(spec.disks):
        argv += disk_args(index, disk, option_value(disk.path))
    if spec.kernel:
        argv += ["-kernel", str(spec.kernel)]
    if spec.initrd:
        argv += ["-initrd", str(spec.initrd)]
    if spec.append:
        argv += ["-append", spec.append]
    if spec.dtb:
        argv += ["-dtb", str(spec.dtb)]
    for device in spec.devices:
        argv += ["-device", device]
    argv += nic_args(spec.nics)
    argv += list(spec.extra_args)
    return argv
