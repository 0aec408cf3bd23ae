"""What a VM is made of, and the QEMU argv for it. Pure: no process is started here, so it is unit-tested.

The harness always owns the console and the monitor: serial and QMP are socket chardevs on file
descriptors the harness passes in (socketpairs), `-nodefaults` removes every device we did not ask for,
`-display none` and `-no-reboot` make a reset end the VM instead of looping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.net import Nic, nic_args


@dataclass(frozen=True)
class Pflash:
    """One pflash unit: CODE read-only, VARS a writable per-VM copy."""

    path: Path
    readonly: bool


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
    bios: Path | None = None
    pflash: tuple[Pflash, ...] = ()
    devices: tuple[str, ...] = ()  # values of -device
    extra_args: tuple[str, ...] = ()  # anything else, appended last
    nics: tuple[Nic, ...] = ()  # none: `-nic none`, so nothing (UEFI PXE, say) waits on a network

    def pass_fds(self) -> tuple[int, ...]:
        return tuple(fd for nic in self.nics for fd in nic.fds())

    def describe(self) -> str:
        return f"{self.arch}/{self.machine}/{self.cpu or 'default-cpu'}/{self.accel}"


@dataclass(frozen=True)
class HarnessFds:
    console_fd: int
    qmp_fd: int
    pidfile: Path


def build_argv(spec: MachineSpec, command: list[str], data_args: list[str], fds: HarnessFds) -> list[str]:
    argv = [*command, *data_args]
    argv += ["-machine", spec.machine, "-accel", spec.accel]
    if spec.cpu:
        argv += ["-cpu", spec.cpu]
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.smp)]
    argv += ["-nodefaults", "-display", "none", "-no-reboot", "-pidfile", str(fds.pidfile)]
    argv += ["-chardev", f"socket,id=console,fd={fds.console_fd}", "-serial", "chardev:console"]
    argv += ["-chardev", f"socket,id=qmp,fd={fds.qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    if spec.bios:
        argv += ["-bios", str(spec.bios)]
    for unit, flash in enumerate(spec.pflash):
        readonly = ",readonly=on" if flash.readonly else ""
        argv += ["-drive", f"if=pflash,format=raw,unit={unit}{readonly},file={flash.path}"]
    if spec.kernel:
        argv += ["-kernel", str(spec.kernel)]
    if spec.initrd:
        argv += ["-initrd", str(spec.initrd)]
    if spec.append:
        argv += ["-append", spec.append]
    for device in spec.devices:
        argv += ["-device", device]
    argv += nic_args(spec.nics)
    argv += list(spec.extra_args)
    return argv
