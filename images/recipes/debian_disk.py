"""The bootable disk of a Debian root (images/recipes/debian.py): GPT with an ESP and the root
partition, fixed GUIDs, the same bytes on every build. UEFI firmware, and U-Boot through its EFI loader,
start systemd-boot from the ESP; SeaBIOS runs syslinux's gptmbr.bin from the protective MBR, which starts
syslinux on the ESP. Every loader starts Debian's own kernel and the initrd initramfs-tools made in the
root, with one command line (kernel_options).

Kept apart from the root's recipe so that the disk can change without rebuilding a root (minutes of
TCG per arch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import STICK_TOOLS_SET
from images.recipes import esp, fat, gpt, stick
from images.recipes.debian import DebianRoot, fixed_uuid
from images.recipes.esp import BIOS_ARCHES, syslinux_cfg, syslinux_files, systemd_boot_files, write_esp
from images.recipes.gpt import ESP_TYPE, MIB, mib_layout, write_gpt
from images.recipes.stick import stick_tools
from images.store import Store, code_sha256, scratch_dir

# The root partition's type: the Discoverable Partitions Specification's root of each arch.
ROOT_TYPES = {"x86_64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "aarch64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
              "riscv64": "72EC70A6-CF74-40E6-BD49-4BDA08E8F224"}
ENTRY = "debian.conf"
RECIPE_VERSION = 1


@dataclass(frozen=True)
class DebianDisk:
    arch: str
    disk: Path
    root: DebianRoot
    options: str  # the kernel command line every loader passes
    key: str


def kernel_options(arch: str) -> str:
    """The root by its fixed partition UUID, read-only until systemd has checked it (as Debian boots),
    no first-boot questions on the console (the machine-id is empty on purpose), systemd's status
    lines on the console only for errors (they would land in commands' output; a failed unit still
    shows), and the NIC named eth0 as on every other image (the harness's network helpers name it)."""
    return (f"root=PARTUUID={fixed_uuid(arch, 'root')} ro console={ARCHES[arch].console} {KERNEL_OPTIONS} "
            "systemd.firstboot=off systemd.show_status=error net.ifnames=0")


def esp_files(arch: str, root: DebianRoot, tools: Path) -> dict[str, bytes | Path]:
    """systemd-boot and its one entry (UEFI, and U-Boot through its EFI loader), plus syslinux on x86_64
    for SeaBIOS; both start Debian's own kernel and the initrd initramfs-tools made in the root."""
    options = kernel_options(arch)
    entry = (f"title Debian 13 (bootmatrix)\nversion {root.kernel_release}\n"
             f"linux /debian/linux\ninitrd /debian/initrd\noptions {options}\n").encode()
    files = systemd_boot_files(arch, tools, {ENTRY: entry})
    files.update({"debian/linux": root.kernel, "debian/initrd": root.initrd})
    if arch in BIOS_ARCHES:
        files.update(syslinux_files(tools, syslinux_cfg("debian", "/debian/linux", "/debian/initrd", options)))
    return files


def build_debian_disk(store: Store, fetcher: DebianFetcher, root: DebianRoot) -> DebianDisk:
    """The bootable GPT disk of a Debian root: an ESP (systemd-boot; syslinux too on x86_64, from the
    protective MBR's gptmbr.bin) and the root partition."""
    arch = root.arch

    def inputs(sets: Packages) -> dict[str, object]:
        return {"recipe_version": RECIPE_VERSION, "arch": arch, "root": root.key,
                "tools": sorted(p.sha256 for p in sets[STICK_TOOLS_SET]), "recipe": _sha256(Path(__file__)),
                "code": code_sha256(esp, fat, gpt, stick)}

    def build(content: Path, debs: Debs) -> None:
        with stick_tools(debs[STICK_TOOLS_SET]) as tools, scratch_dir("debian-disk") as tmp:
            work = Path(tmp)
            esp_mib, boot_code = write_esp(work / "esp.img", arch, tools, esp_files(arch, root, tools),
                                           label="DEBIANESP", what=f"Debian disk for {arch}")
            root_mib = -(-root.root.stat().st_size // MIB)
            partitions = mib_layout([("esp", esp_mib), ("debian-root", root_mib)])
            write_gpt(content / "disk.img", f"Debian disk for {arch}", fixed_uuid(arch, "disk"), partitions,
                      types={"esp": ESP_TYPE, "debian-root": ROOT_TYPES[arch]},
                      uuids={"esp": fixed_uuid(arch, "esp"), "debian-root": fixed_uuid(arch, "root")},
                      contents={"esp": work / "esp.img", "debian-root": root.root}, boot_code=boot_code)

    entry = built_from(store, fetcher, f"debian-disk-{arch}", [STICK_TOOLS_SET], inputs_of=inputs, build=build)
    return DebianDisk(arch, entry / "disk.img", root, kernel_options(arch), entry.parent.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
