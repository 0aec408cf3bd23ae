"""The one table of firmware profiles: for each arch and firmware name, what it is (UEFI or not, whether
any firmware runs at all), what it boots (a kernel QEMU loads, or disks and CDs), what a file-less cell
picks it for, and how it shapes the machine. The matrix model's checks, the CLI's defaults and choices,
and the machine profiles (profiles.py) are all read from here.

media "direct": QEMU (or the firmware, through fw_cfg) loads the kernel and initramfs itself.
media "stick":  the firmware boots from a disk: the multi-arch stick, an ISO, a user's disk or EFI app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from arches import NAMES
from harness.spec import MachineSpec, Pflash
from images.recipes.firmware import FirmwareSet

DIRECT, STICK = "direct", "stick"
BOTH = frozenset({DIRECT, STICK})
# What a cell of the user's own files boots (the model's BOOT_ARTIFACTS): the default firmware of each.
KERNEL, DISK, EFI = "kernel", "disk", "efi"

# edk2's boot manager waits (5 s on AAVMF and riscv64) for a key before booting, unless QEMU passes a
# boot-menu wait through fw_cfg (etc/boot-menu-wait, from -boot menu=on,splash-time=N). Measured here
# under TCG: aarch64 AAVMF stick 7.99 -> 2.73 s to a shell, riscv64 edk2 stick 8.93 -> 3.60 s.
NO_BOOT_MENU_WAIT = ("-boot", "menu=on,splash-time=0")

Configure = Callable[[MachineSpec, FirmwareSet], MachineSpec]


@dataclass(frozen=True)
class FirmwareProfile:
    arch: str
    name: str
    media: frozenset[str]  # DIRECT and/or STICK
    uefi: bool  # a UEFI implementation: starts EFI applications, and the kernel sees /sys/firmware/efi
    configure: Configure | None  # the machine's firmware files and options; None: no firmware runs
    default_for: frozenset[str] = frozenset()  # KERNEL, DISK, EFI: what a file-less cell of the arch picks

    @property
    def runs_firmware(self) -> bool:
        """False for QEMU's own boot code (aarch64 virt): no firmware set applies to such a cell."""
        return self.configure is not None


def _edk2(fw: FirmwareSet, arch: str, secure: bool = False) -> tuple[Pflash, ...]:
    chosen = fw.edk2(arch, secure=secure, enrolled=secure)
    return (Pflash(chosen.code, readonly=True), Pflash(chosen.vars_template, readonly=False))


def _seabios(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    return replace(spec, bios=fw.seabios(), devices=("pvpanic",))


def _ovmf(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    # OVMF boots at once without NO_BOOT_MENU_WAIT (measured: 4.3 s to a shell with or without it).
    return replace(spec, pflash=_edk2(fw, "x86_64"), devices=("pvpanic",))


def _ovmf_secboot(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    # Secure boot with Microsoft keys enrolled: SMM on, and the flash only writable from SMM.
    return replace(
        spec, pflash=_edk2(fw, "x86_64", secure=True), machine_options=("smm=on",),
        globals=("driver=cfi.pflash01,property=secure,value=on",),
    )


def _aavmf(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    return replace(spec, pflash=_edk2(fw, "aarch64"), extra_args=NO_BOOT_MENU_WAIT)


def _uboot_arm64(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    return replace(spec, bios=fw.uboot("qemu_arm64"))


def _opensbi(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    return replace(spec, bios=fw.opensbi("fw_dynamic"))


def _uboot_riscv(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    # S-mode U-Boot runs behind OpenSBI, loaded as OpenSBI's "kernel" (as -bios it hangs silently).
    return replace(spec, bios=fw.opensbi("fw_dynamic"), kernel=fw.uboot("qemu-riscv64_smode"), initrd=None,
                   append=None)


def _edk2_riscv(spec: MachineSpec, fw: FirmwareSet) -> MachineSpec:
    return replace(spec, pflash=_edk2(fw, "riscv64"), machine_options=("acpi=off",), extra_args=NO_BOOT_MENU_WAIT)


PROFILES: dict[tuple[str, str], FirmwareProfile] = {
    (p.arch, p.name): p
    for p in (
        FirmwareProfile("x86_64", "seabios", BOTH, uefi=False, configure=_seabios,
                        default_for=frozenset({KERNEL, DISK})),
        FirmwareProfile("x86_64", "ovmf", BOTH, uefi=True, configure=_ovmf, default_for=frozenset({EFI})),
        FirmwareProfile("x86_64", "ovmf-secboot", frozenset({STICK}), uefi=True, configure=_ovmf_secboot),
        FirmwareProfile("aarch64", "virt", frozenset({DIRECT}), uefi=False, configure=None,
                        default_for=frozenset({KERNEL})),
        FirmwareProfile("aarch64", "aavmf", BOTH, uefi=True, configure=_aavmf, default_for=frozenset({DISK, EFI})),
        FirmwareProfile("aarch64", "uboot", frozenset({STICK}), uefi=True, configure=_uboot_arm64),
        FirmwareProfile("riscv64", "opensbi", frozenset({DIRECT}), uefi=False, configure=_opensbi,
                        default_for=frozenset({KERNEL})),
        FirmwareProfile("riscv64", "uboot", frozenset({STICK}), uefi=True, configure=_uboot_riscv),
        FirmwareProfile("riscv64", "edk2", BOTH, uefi=True, configure=_edk2_riscv, default_for=frozenset({DISK, EFI})),
    )
}
FIRMWARE_NAMES = tuple(sorted({name for _, name in PROFILES}))


def profiles_of(arch: str) -> dict[str, FirmwareProfile]:
    """The firmware an arch boots with, by name."""
    return {name: profile for (a, name), profile in PROFILES.items() if a == arch}


def profile(arch: str, firmware: str) -> FirmwareProfile:
    return PROFILES[(arch, firmware)]


def default_firmware(arch: str, boots: str) -> str:
    """The firmware a cell of the arch gets when it names none: for a kernel (QEMU's direct boot, the
    simplest boot, where harness, network and Go tests run), a disk or an ISO, or an EFI application."""
    return next(p.name for p in profiles_of(arch).values() if boots in p.default_for)


# The simplest boot of each arch (no boot loader, QEMU hands over the kernel).
DIRECT_FIRMWARE = {arch: default_firmware(arch, KERNEL) for arch in NAMES}
