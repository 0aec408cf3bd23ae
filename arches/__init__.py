"""The one table of guest-arch facts: every part of bootmatrix that needs to know something about
x86_64, aarch64 or riscv64 reads it here, and nothing else spells an arch's facts out.

Who reads what:
- harness: QEMU binary, machine, CPU, console device, flash bank size, timeout factor, the host's arch
  (KVM probe).
- images: Debian arch, Go arch, multiarch triplet and loader path, kernel package and file names, the
  power-button modules, the EFI removable-media file name, the kernel options every boot needs.
- matrix: the machine and console of a cell (which firmware an arch boots with, and through which media,
  is matrix/firmware.py's table).

A leaf package: it imports nothing of bootmatrix, so harness, images and matrix may all depend on it
without depending on each other.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

# Options every boot passes to the kernel (besides console=): never reboot on a panic (-no-reboot then
# ends the VM and the harness reports it), and treat an Oops as a panic.
KERNEL_OPTIONS = "panic=-1 oops=panic"
MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Arch:
    name: str  # the guest arch as QEMU and the matrix name it: qemu-system-<name>
    debian: str  # Debian's architecture name
    goarch: str  # GOARCH
    triplet: str  # Debian's multiarch triplet (/usr/lib/<triplet>)
    loader: str  # the dynamic loader's path in the root, as a dynamically linked program's PT_INTERP names it
    machine: str  # QEMU machine type
    cpu: str | None  # QEMU -cpu (None: the machine's default)
    console: str  # the kernel's serial console device
    pflash_bytes: int | None  # size the machine's flash banks must have (None: no fixed size)
    kernel_metapackage: str  # Debian's kernel flavour metapackage
    kernel_glob: str  # the kernel image inside the kernel package
    power_button_modules: tuple[str, ...]  # modules that give the guest a power button (QMP system_powerdown)
    efi_name: tuple[str, str]  # systemd-boot's arch suffix, and the removable-media file name EFI/BOOT/<name>
    timeout_factor: float  # hang budgets relative to x86_64 under TCG

    @property
    def qemu_system(self) -> str:
        return f"qemu-system-{self.name}"


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            name="x86_64", debian="amd64", goarch="amd64", triplet="x86_64-linux-gnu",
            loader="lib64/ld-linux-x86-64.so.2", machine="q35", cpu=None, console="ttyS0", pflash_bytes=None,
            kernel_metapackage="linux-image-cloud-amd64", kernel_glob="boot/vmlinuz-*",
            power_button_modules=("evdev", "button"), efi_name=("x64", "BOOTX64.EFI"), timeout_factor=1.0,
        ),
        Arch(
            # cortex-a57 boots about 4x faster than -cpu max under TCG; U-Boot needs an explicit 64-bit CPU.
            name="aarch64", debian="arm64", goarch="arm64", triplet="aarch64-linux-gnu",
            loader="lib/ld-linux-aarch64.so.1", machine="virt", cpu="cortex-a57", console="ttyAMA0",
            pflash_bytes=64 * MIB, kernel_metapackage="linux-image-arm64", kernel_glob="boot/vmlinuz-*",
            power_button_modules=("evdev", "gpio_keys"), efi_name=("aa64", "BOOTAA64.EFI"), timeout_factor=1.0,
        ),
        Arch(
            # QEMU 10.0's riscv virt has no power button: none in its device tree, and its ACPI tables
            # (FACP DSDT APIC RHCT SPCR MCFG) hold no button or GED device either (tests/vm/test_tinyboot.py).
            name="riscv64", debian="riscv64", goarch="riscv64", triplet="riscv64-linux-gnu",
            loader="lib/ld-linux-riscv64-lp64d.so.1", machine="virt", cpu=None, console="ttyS0",
            pflash_bytes=32 * MIB, kernel_metapackage="linux-image-riscv64", kernel_glob="boot/vmlinux-*",
            power_button_modules=(), efi_name=("riscv64", "BOOTRISCV64.EFI"), timeout_factor=1.0,
        ),
    )
}
NAMES = tuple(ARCHES)  # ("x86_64", "aarch64", "riscv64")
BY_DEBIAN = {a.debian: a for a in ARCHES.values()}


def host_arch() -> Arch | None:
    """The table's entry for the machine this runs on (None on a host arch no guest shares)."""
    return ARCHES.get(platform.machine())


def host_debian_arch() -> str:
    """The host's Debian architecture name (what apt calls native)."""
    host = host_arch()
    return host.debian if host is not None else platform.machine()
