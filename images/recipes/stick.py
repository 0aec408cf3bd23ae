"""One VFAT boot stick for every arch and firmware: built rootless, bit-identical from build to build.

Layout: an MBR (syslinux's boot code, one active FAT32 partition at 1 MiB) and in the partition:

    /x86_64/linux, /x86_64/initrd          (likewise /aarch64/..., /riscv64/...)
    /syslinux/ldlinux.sys, ldlinux.c32, syslinux.cfg     x86 BIOS (SeaBIOS): MBR -> syslinux
    /EFI/BOOT/BOOTX64.EFI, BOOTAA64.EFI, BOOTRISCV64.EFI  systemd-boot, one build per arch
    /loader/loader.conf, /loader/entries/<arch>.conf      Boot Loader Specification entries

Why systemd-boot for every UEFI path: each firmware (OVMF, AAVMF, edk2 riscv64, and U-Boot, whose
distro boot falls through to the removable-media path when there is no extlinux.conf) finds its own
EFI/BOOT/BOOT<arch>.EFI, and systemd-boot shows only the entry whose `architecture` key matches it. So
one stick carries one entry per arch with no per-firmware scripts, and U-Boot needs no extlinux.conf
(which it could not tell apart between arches). Debian's kernels are EFI-stub images on all three
arches, which systemd-boot starts directly with the initrd.

Determinism: the FAT is written by images/recipes/fat.py (fixed volume id, times and order), the loaders'
files come from images/recipes/esp.py like those of the A/B and Debian disks, and the MBR disk signature
is fixed.
"""

from __future__ import annotations

import shutil
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import STICK_TOOLS_SET, LockedPackage
from images.recipes import esp, fat
from images.recipes.fat import SECTOR, fat_size_mib, install_syslinux, write_fat
from images.recipes.minimal import MinimalImage
from images.store import Store, code_sha256, scratch_dir

RECIPE_VERSION = 3
DISK_SIGNATURE = 0xB0075EED
PARTITION_START = 2048  # sectors (1 MiB)
# The ESP's loader.conf plus the line the stick has had since it was first written: older systemd-boot
# reads it as "no seed file on this ESP"; it stays so that the stick keeps its bytes (its manifest entry).
LOADER_CONF = esp.LOADER_CONF + b"random-seed-mode off\n"


def stick_files(images: dict[str, MinimalImage], tools: Path, uefi_only: bool) -> dict[str, bytes | Path]:
    """Every boot file of the stick's partition, by path: the layout is decided here, the loaders' files
    by esp.py like those of every other ESP."""
    files: dict[str, bytes | Path] = {}
    for arch, image in sorted(images.items()):
        files[f"{arch}/linux"] = image.kernel
        files[f"{arch}/initrd"] = image.initrd
        efi_arch, _ = ARCHES[arch].efi_name
        entry = (f"title bootmatrix {arch}\narchitecture {efi_arch}\nlinux /{arch}/linux\ninitrd /{arch}/initrd\n"
                 f"options console={ARCHES[arch].console} {KERNEL_OPTIONS}\n").encode()
        files.update(esp.systemd_boot_files(arch, tools, {f"{arch}.conf": entry}, loader_conf=LOADER_CONF))
    if not uefi_only and "x86_64" in images:
        append = f"console={ARCHES['x86_64'].console} {KERNEL_OPTIONS}"
        files.update(esp.syslinux_files(tools, esp.syslinux_cfg("x86_64", "/x86_64/linux", "/x86_64/initrd", append)))
    return files


def _mbr(boot_code: bytes, partition_sectors: int) -> bytes:
    entry = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x0C, b"\xfe\xff\xff", PARTITION_START, partition_sectors
    )
    code = boot_code[:440].ljust(440, b"\0")
    return code + struct.pack("<IH", DISK_SIGNATURE, 0) + entry + b"\0" * 48 + b"\x55\xaa"


def write_stick(
    target: Path, files: dict[str, bytes | Path], tools: Path, uefi_only: bool, directories: tuple[str, ...] = ()
) -> None:
    """Write the stick image: an MBR and one FAT32 partition holding `files` and `directories` (write_fat)."""
    with scratch_dir("stick") as tmp:
        part = Path(tmp) / "partition.img"
        write_fat(part, files, fat_size_mib(files), "BOOTMATRIX", directories)
        # A UEFI-only stick gets the stub a non-bootable MBR carries: `int 0x18` (BIOS: "boot failed, try
        # the next device"), then halt, so a BIOS reports the failure instead of running zeros.
        boot_code = bytes([0xCD, 0x18, 0xF4, 0xEB, 0xFD])
        if not uefi_only:
            install_syslinux(tools, part, "installing syslinux on the stick")
            boot_code = (tools / "usr/lib/syslinux/mbr/mbr.bin").read_bytes()
        sectors = part.stat().st_size // SECTOR
        with target.open("wb") as disk:
            disk.write(_mbr(boot_code, sectors))
            disk.write(b"\0" * (PARTITION_START * SECTOR - SECTOR))
            with part.open("rb") as source_part:
                shutil.copyfileobj(source_part, disk, 1 << 20)


@contextmanager
def stick_tools(tool_debs: list[tuple[LockedPackage, Path]]) -> Iterator[Path]:
    """syslinux and systemd-boot unpacked in a temporary folder."""
    with scratch_dir("stick-tools") as tmp:
        tools = Path(tmp)
        for _, deb in tool_debs:
            extract_deb(deb, tools, lambda p: p.startswith(("usr/bin/syslinux", "usr/lib/")))
        yield tools


def build_stick(store: Store, fetcher: DebianFetcher, images: dict[str, MinimalImage], uefi_only: bool = False) -> Path:
    def inputs(sets: Packages) -> dict[str, object]:
        return {
            "recipe_version": RECIPE_VERSION,
            "tools": sorted(p.sha256 for p in sets[STICK_TOOLS_SET]),
            "images": {arch: image.key for arch, image in sorted(images.items())},
            "uefi_only": uefi_only,
            "recipe": code_sha256(sys.modules[__name__], esp, fat),
        }

    def build(content: Path, debs: Debs) -> None:
        with stick_tools(debs[STICK_TOOLS_SET]) as tools:
            write_stick(content / "stick.img", stick_files(images, tools, uefi_only), tools, uefi_only)

    name = "stick-uefi-only" if uefi_only else "stick"
    return built_from(store, fetcher, name, [STICK_TOOLS_SET], inputs_of=inputs, build=build) / "stick.img"
