"""The one table of guest-arch facts: every part of bootmatrix that needs to know something about
x86_64, aarch64 or riscv64 reads it here, and nothing else spells an arch's facts out.

Who reads what:
- harness: QEMU binary, machine, CPU, console device, flash bank size, timeout factor, the host's arch
  (KVM probe).
- images: Debian arch, Go arch, multiarch triplet and loader path, kernel package and file names, the
  power-button modules, the EFI removable-media file name, the kernel options every boot needs.
- matrix: which firmware an arch boots with, through which media, and its simplest (direct) boot.

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


@dataclass(frozen=True)
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
    direct_firmware: str  # the simplest boot (harness, network and Go tests, benchmarks)
    firmware_media: dict[str, frozenset[str]]  # firmware -> media it can boot ("direct", "stick")
    firmware_free: frozenset[str] = frozenset()  # "firmwares" that run no firmware at all (QEMU's own boot code)

    @property
    def qemu_system(self) -> str:
        return f"qemu-system-{self.name}"


DIRECT, STICK = "direct", "stick"
BOTH = frozenset({DIRECT, STICK})

ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "x86_64", "amd64", "amd64", "x86_64-linux-gnu", "lib64/ld-linux-x86-64.so.2", "q35", None, "ttyS0", None,
            "linux-image-cloud-amd64", "boot/vmlinuz-*", ("evdev", "button"), ("x64", "BOOTX64.EFI"), 1.0,
            "seabios", {"seabios": BOTH, "ovmf": BOTH, "ovmf-secboot": frozenset({STICK})},
        ),
        Arch(
            # cortex-a57 boots about 4x faster than -cpu max under TCG; U-Boot needs an explicit 64-bit CPU.
            "aarch64", "arm64", "arm64", "aarch64-linux-gnu", "lib/ld-linux-aarch64.so.1", "virt", "cortex-a57",
            "ttyAMA0", 64 * MIB, "linux-image-arm64", "boot/vmlinuz-*", ("evdev", "gpio_keys"),
            ("aa64", "BOOTAA64.EFI"), 1.0,
            "virt", {"virt": frozenset({DIRECT}), "aavmf": BOTH, "uboot": frozenset({STICK})}, frozenset({"virt"}),
        ),
        Arch(
            # QEMU 10.0's riscv virt has no power button: none in its device tree, and its ACPI tables
            # (FACP DSDT APIC RHCT SPCR MCFG) hold no button or GED device either (tests/vm/test_tinyboot.py).
            "riscv64", "riscv64", "riscv64", "riscv64-linux-gnu", "lib/ld-linux-riscv64-lp64d.so.1", "virt", None,
            "ttyS0", 32 * MIB, "linux-image-riscv64", "boot/vmlinux-*", (), ("riscv64", "BOOTRISCV64.EFI"), 1.0,
            "opensbi", {"opensbi": frozenset({DIRECT}), "uboot": frozenset({STICK}), "edk2": BOTH},
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
