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

Determinism: mkfs.vfat runs with --invariant (fixed volume id 1234-ABCD and times), directories are made and
files copied in sorted order with fixed timestamps (mtools stamps files with SOURCE_DATE_EPOCH), and the
MBR disk signature is fixed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import STICK_TOOLS_SET, LockedPackage
from images.recipes.minimal import MinimalImage
from images.store import Store, scratch_dir
from images.tools import host_tool, run_tool

RECIPE_VERSION = 3
EPOCH = 946684800  # 2000-01-01: FAT cannot store times before 1980
DISK_SIGNATURE = 0xB0075EED
PARTITION_START = 2048  # sectors (1 MiB)
SECTOR = 512


def _tool(name: str) -> str:
    return host_tool(name, "packages dosfstools and mtools", "build the boot stick")


def mtools_env() -> dict[str, str]:
    """The environment of every mtools call (syslinux's installer makes them too): files stamped with
    SOURCE_DATE_EPOCH in UTC, whatever the host's clock and zone, and no check of the image's geometry
    (a partition image has no disk geometry to match)."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def install_syslinux(tools: Path, fat: Path, what: str) -> None:
    """syslinux into /syslinux of the FAT file system `fat` (a file, rootless: syslinux writes through
    mtools); ldlinux.sys lands there and the boot sector is patched to load it."""
    run_tool([str(tools / "usr/bin/syslinux"), "--install", "--directory", "/syslinux", str(fat)],
             what, env=mtools_env())


def stick_files(images: dict[str, MinimalImage], tools: Path, uefi_only: bool) -> dict[str, bytes | Path]:
    """Every boot file of the stick's partition, by path: the layout is decided here and nowhere else."""
    files: dict[str, bytes | Path] = {}
    for arch, image in sorted(images.items()):
        files[f"{arch}/linux"] = image.kernel
        files[f"{arch}/initrd"] = image.initrd
        efi_arch, efi_name = ARCHES[arch].efi_name
        files[f"EFI/BOOT/{efi_name}"] = (tools / f"usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi").read_bytes()
        files[f"loader/entries/{arch}.conf"] = (
            f"title bootmatrix {arch}\narchitecture {efi_arch}\nlinux /{arch}/linux\ninitrd /{arch}/initrd\n"
            f"options console={ARCHES[arch].console} {KERNEL_OPTIONS}\n"
        ).encode()
    files["loader/loader.conf"] = b"timeout 0\neditor no\nrandom-seed-mode off\n"
    if not uefi_only and "x86_64" in images:
        files["syslinux/syslinux.cfg"] = (
            "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT x86_64\n"
            f"LABEL x86_64\n  LINUX /x86_64/linux\n  INITRD /x86_64/initrd\n"
            f"  APPEND console={ARCHES['x86_64'].console} {KERNEL_OPTIONS}\n"
        ).encode()
        files["syslinux/ldlinux.c32"] = (tools / "usr/lib/syslinux/modules/bios/ldlinux.c32").read_bytes()
    return files


def _mbr(boot_code: bytes, partition_sectors: int) -> bytes:
    entry = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x0C, b"\xfe\xff\xff", PARTITION_START, partition_sectors
    )
    code = boot_code[:440].ljust(440, b"\0")
    return code + struct.pack("<IH", DISK_SIGNATURE, 0) + entry + b"\0" * 48 + b"\x55\xaa"


def _stage(files: dict[str, bytes | Path], staging: Path) -> dict[str, list[Path]]:
    """The host file mcopy copies for each stick path, grouped by stick directory. mcopy keeps the source's
    base name, so bytes, and files whose name differs, are written to `staging` first."""
    by_directory: dict[str, list[Path]] = {}
    for rel in sorted(files):
        data = files[rel]
        if isinstance(data, Path) and data.name == Path(rel).name:
            source = data
        else:
            source = staging / rel
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        by_directory.setdefault(str(Path(rel).parent), []).append(source)
    return by_directory


def file_size(data: bytes | Path) -> int:
    """Bytes of a stick file given as bytes or as a host file."""
    return data.stat().st_size if isinstance(data, Path) else len(data)


def fat_size_mib(files: dict[str, bytes | Path], spare_mib: int = 48) -> int:
    """A FAT32 partition's size for `files`: at most 4 KiB clusters each, 1/8 more for the FATs and
    directories, `spare_mib` free, and FAT32's minimum of 33 MiB (rounded up to 64)."""
    payload = sum(-(-file_size(data) // 4096) * 4096 for data in files.values())
    return max(64, (payload * 9 // 8) // (1 << 20) + spare_mib)


def write_fat(part: Path, files: dict[str, bytes | Path], size_mib: int, label: str,
              directories: tuple[str, ...] = ()) -> None:
    """A FAT32 file system of `size_mib` in the file `part`, holding `files` by path (bytes, or a host
    file to copy) and the empty `directories`. One mmd call makes every directory and one mcopy call per
    directory copies its files, in sorted order, so the layout is the same from build to build."""
    # FAT32 needs at least 65,525 clusters: one-sector clusters for a small stick, 4 KiB for a large one
    # (fewer FAT sectors and directory reads for the 15,000 files of the mostly-source root).
    cluster = 4096 if size_mib * (1 << 20) // 4096 >= 66_000 else SECTOR
    env = mtools_env()
    run_tool(
        [_tool("mkfs.vfat"), "-C", "-F", "32", "-s", str(cluster // SECTOR), "-n", label, "--invariant",
         str(part), str(size_mib * 1024)],
        f"formatting {part.name}", env=env,
    )
    with scratch_dir("fat") as tmp:
        by_directory = _stage(files, Path(tmp) / "files")
        wanted = set(directories)
        for directory in [*by_directory, *directories]:
            parts = Path(directory).parts if directory != "." else ()
            wanted.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        if wanted:
            run_tool([_tool("mmd"), "-i", str(part), *(f"::/{d}" for d in sorted(wanted))],
                     f"making the directories of {part.name}", env=env)
        for directory, sources in sorted(by_directory.items()):
            # No -m: mtools stamps every file with SOURCE_DATE_EPOCH instead of the host file's time.
            destination = "::/" if directory == "." else f"::/{directory}/"
            run_tool([_tool("mcopy"), "-i", str(part), *map(str, sources), destination],
                     f"copying files to {destination} of {part.name}", env=env)


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
            "recipe": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        }

    def build(content: Path, debs: Debs) -> None:
        with stick_tools(debs[STICK_TOOLS_SET]) as tools:
            write_stick(content / "stick.img", stick_files(images, tools, uefi_only), tools, uefi_only)

    name = "stick-uefi-only" if uefi_only else "stick"
    return built_from(store, fetcher, name, [STICK_TOOLS_SET], inputs_of=inputs, build=build) / "stick.img"
