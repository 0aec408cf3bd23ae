"""The EFI system partition of the A/B and the Debian disks: systemd-boot and its entries for UEFI (and
U-Boot through its EFI loader), and on x86_64 syslinux for SeaBIOS, which the protective MBR's
gptmbr.bin starts. One writer of the loaders' files, so that both disks and the boot sticks boot the
same way and a fix reaches all of them; their recipes hash this module into their inputs
(images.store.code_sha256), so a change here rebuilds them. The FAT itself is images/recipes/fat.py's.
"""

from __future__ import annotations

from pathlib import Path

from arches import ARCHES
from images.recipes.fat import fat_size_mib, install_syslinux, write_fat

BIOS_ARCHES = ("x86_64",)  # syslinux, and so the BIOS path, is x86 only
LOADER_CONF = b"timeout 0\neditor no\n"  # the default entry at once; no editing the command line
SPARE_MIB = 16  # free room in the FAT beyond its files


def systemd_boot_files(arch: str, tools: Path, entries: dict[str, bytes],
                       loader_conf: bytes = LOADER_CONF) -> dict[str, bytes | Path]:
    """systemd-boot as the removable-media loader of `arch` (no NVRAM entry needed), loader.conf and
    the boot entries (file name to text) under loader/entries/."""
    efi_arch, efi_name = ARCHES[arch].efi_name
    files: dict[str, bytes | Path] = {
        f"EFI/BOOT/{efi_name}": tools / f"usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi",
        "loader/loader.conf": loader_conf,
    }
    files.update({f"loader/entries/{name}": text for name, text in entries.items()})
    return files


def syslinux_cfg(label: str, linux: str, initrd: str, append: str) -> bytes:
    """syslinux's one entry, on the first serial port, started at once."""
    return (f"SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT {label}\nLABEL {label}\n"
            f"  LINUX {linux}\n  INITRD {initrd}\n  APPEND {append}\n").encode()


def syslinux_files(tools: Path, cfg: bytes) -> dict[str, bytes | Path]:
    """The files syslinux reads from the ESP (its boot sector is written by install_syslinux)."""
    return {"syslinux/syslinux.cfg": cfg, "syslinux/ldlinux.c32": tools / "usr/lib/syslinux/modules/bios/ldlinux.c32"}


def write_esp(target: Path, arch: str, tools: Path, files: dict[str, bytes | Path], *, label: str,
              what: str) -> tuple[int, bytes | None]:
    """The FAT of `files` at `target`, sized to them; on a BIOS arch also syslinux's boot sector.
    Returns its size in MiB and the boot code for the disk's protective MBR (None without BIOS)."""
    esp_mib = fat_size_mib(files, spare_mib=SPARE_MIB)
    write_fat(target, files, esp_mib, label)
    if arch not in BIOS_ARCHES:
        return esp_mib, None
    install_syslinux(tools, target, f"{what}: installing syslinux")
    return esp_mib, (tools / "usr/lib/syslinux/mbr/gptmbr.bin").read_bytes()
