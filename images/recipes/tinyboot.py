"""The tinyboot ISO of one arch: a bootable CD whose only user space is one Go application, PID 1 of
its initramfs (images/guest/tinyboot: the `tinyboot` package and the example app `tinyapp`).

What is on it, and how each firmware starts it:
- UEFI (every arch): El Torito's EFI entry is a FAT image holding one file, EFI/BOOT/BOOT<ARCH>.EFI, a
  unified kernel image (images.uki: systemd's stub from Debian's systemd-boot-efi, with the kernel,
  the initramfs and the command line as sections). No boot loader, no loader configuration.
- BIOS (x86_64 only): ISOLINUX (Debian's isolinux) loads /boot/vmlinuz and /boot/initrd.xz. So the
  x86_64 ISO carries the kernel and initramfs twice: once in the UKI, once for ISOLINUX, as a BIOS
  cannot start a PE file and UEFI firmware cannot read ISO 9660.
- /README.txt and /tinyboot.json: the ISO's own files, which the app finds under /iso.

xorriso (host package, rootless) writes the ISO; with every file time and SOURCE_DATE_EPOCH fixed, a
rebuild gives the same bytes. The sizes (`TinybootIso.sizes`; all but the ISO's own also in its
tinyboot.json) say where the bytes go.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images import uki as uki_module
from images.artifacts import write_efi_fat
from images.cpio import CpioArchive
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import ISO_TOOLS_SET, STICK_TOOLS_SET, kernel_set
from images.recipes.fat import EPOCH
from images.recipes.gosource import GoRoot, build_on_host, sources_digest, write_guest_sources
from images.recipes.minimal import MinimalImage, extract_kernel_files, module_order
from images.store import Store, scratch_dir
from images.tools import host_tool, run_tool
from images.uki import build_uki

RECIPE_VERSION = 3
TINYBOOT_GO = Path(__file__).parent.parent / "guest" / "tinyboot"
APP = "tinyapp"
PERSISTENT_LABEL = "tinyboot"  # tinyboot.PersistentLabel
READY = r"tinyapp: boot \d+"  # the app's first line: the machine is up and the app runs
# The kernel's failure messages are the harness's; these are the image's own.
BAD_PATTERNS = (
    ("tinyboot start failure", r"tinyboot: cannot start the app[^\n]*"),
    # systemd's stub refusing the UKI's kernel ("../src/boot/linux.c:120@linux_exec: Bad kernel image:
    # Load error", seen with a gzip-compressed .linux), and the firmware falling through to its shell.
    ("UKI stub error", r"src/boot/[\w.]+:\d+@\w+: [^\n]*"),
    ("UEFI shell instead of the ISO", r"UEFI Interactive Shell[^\n]*"),
)
# Drivers for what Configure looks for: NICs, disks, the CD-ROM and its file system, btrfs and ext4, and
# the power button: the ACPI button (x86_64; arm64 and riscv64 booted by UEFI with ACPI tables) and
# gpio-keys (an arm64 board described by a device tree).
MODULES = ("virtio_net", "virtio_blk", "virtio_scsi", "sr_mod", "isofs", "btrfs", "ext4", "evdev", "button")
EXTRA_MODULES = {"aarch64": ("gpio_keys",)}
# libcrc32c (btrfs) asks the crypto API for "crc32c" when it loads: a soft dependency .modinfo's
# depends= does not name. x86_64's cloud kernel has it built in; arm64 and riscv64 load it first.
FIRST_MODULES = {"aarch64": ("crc32c_generic",), "riscv64": ("crc32c_generic",)}
ISO_SETS = (STICK_TOOLS_SET, ISO_TOOLS_SET)  # systemd's stub (stick-tools), ISOLINUX (iso-tools)
FAT_OVERHEAD = 256 * 1024  # FAT16's two tables, root folder and reserved sectors at these sizes, with margin
ISO_README = b"""This CD was written by bootmatrix (images/recipes/tinyboot.py).
Its user space is one Go program, tinyapp, PID 1 of the initramfs; tinyboot.json says what it holds.
"""


@dataclass(frozen=True)
class TinybootIso:
    arch: str
    iso: Path
    image: MinimalImage  # the kernel and initramfs on the ISO, with the app's readiness and failures
    sizes: dict[str, int]
    key: str


def build_app(store: Store, go_root: GoRoot) -> Path:
    """The example app for every arch (linux_<goarch>/tinyapp), built with the image's Go toolchain."""
    inputs = {"recipe_version": RECIPE_VERSION, "go_root": go_root.root.parent.name,
              "sources": sources_digest(TINYBOOT_GO)}

    def build(content: Path) -> None:
        with scratch_dir("tinyapp") as tmp:
            tree = Path(tmp) / "src"
            write_guest_sources(tree, TINYBOOT_GO)
            build_on_host(go_root, tree, Path(tmp), {
                arch.goarch: [(content / f"linux_{arch.goarch}" / APP, f"./cmd/{APP}")] for arch in ARCHES.values()
            })

    return store.get("tinyboot-app", inputs, build)


def command_line(arch: str) -> str:
    return f"console={ARCHES[arch].console} {KERNEL_OPTIONS}"


def _initramfs(app: Path, modules: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, int]]:
    """The xz-compressed initramfs (CRC32 check: the kernel's xz decoder takes no other) and the
    uncompressed bytes of its parts."""
    archive = CpioArchive()
    for directory in ("dev", "proc", "sys", "run", "tmp", "etc", "sbin", "iso", "persistent", "lib/modules"):
        archive.add_dir(directory)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_file_from("init", app, 0o755)
    for name in ("poweroff", "reboot", "halt"):  # the kernel's orderly_poweroff runs /sbin/poweroff
        archive.add_symlink(f"sbin/{name}", "/init")
    for name, data in modules:
        archive.add_file(f"lib/modules/{name}", data)
    archive.add_file("lib/modules/load-order", "".join(f"{name}\n" for name, _ in modules).encode())
    with scratch_dir("tinyinitrd") as tmp:
        archive.write(Path(tmp) / "initrd.cpio")
        raw = (Path(tmp) / "initrd.cpio").read_bytes()
    packed = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                           filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    parts = {"app": app.stat().st_size, "modules": sum(len(d) for _, d in modules), "cpio": len(raw)}
    return packed, parts


@dataclass(frozen=True)
class StagedIso:
    """The ISO's file tree, ready for an ISO writer, and what went into it."""

    tree: Path
    kernel: Path
    initrd: bytes
    sizes: dict[str, int]
    manifest: dict[str, object]


def stage_iso(scratch: Path, arch: str, debs: Debs, app: Path, modules: tuple[str, ...]) -> StagedIso:
    """Everything the ISO holds, under scratch/tree, with every time fixed; isohdpfx.bin (x86_64's
    hybrid MBR) beside the tree. The ISO writers read this (bench/iso_writers.py compares two)."""
    what = f"tinyboot ISO for {arch}"
    ((_, kernel_deb),) = debs[kernel_set(arch)]
    extract_kernel_files(kernel_deb, scratch / "kernel")
    kernel_path = sorted((scratch / "kernel").glob(ARCHES[arch].kernel_glob))[0]
    release = kernel_path.name.split("-", 1)[1]
    loaded = module_order(scratch / "kernel/usr/lib/modules" / release, list(modules))
    initrd, parts = _initramfs(app, loaded)
    suffix, removable = ARCHES[arch].efi_name
    for package, deb in (pair for name in ISO_SETS for pair in debs[name]):
        if package.name in ("systemd-boot-efi", "isolinux", "syslinux-common") and (
                package.name != "systemd-boot-efi" or package.arch == ARCHES[arch].debian):
            extract_deb(deb, scratch / "tools")
    stub = (scratch / f"tools/usr/lib/systemd/boot/efi/linux{suffix}.efi.stub").read_bytes()
    osrel = f'NAME="bootmatrix tinyboot"\nID=tinyboot\nVERSION_ID="{release}"\n'
    uki = build_uki(stub, kernel_path.read_bytes(), initrd, command_line(arch), osrel)
    tree = scratch / "tree"
    (tree / "boot").mkdir(parents=True)
    (scratch / "uki.efi").write_bytes(uki)
    efi_mib = -(-(len(uki) + FAT_OVERHEAD) // (1024 * 1024))  # whole MiB, with room for the FAT's own tables
    write_efi_fat(tree / "boot/efi.img", efi_mib, scratch / "uki.efi", removable, what)
    if arch == "x86_64":
        (tree / "isolinux").mkdir()
        shutil.copy(scratch / "tools/usr/lib/ISOLINUX/isolinux.bin", tree / "isolinux/isolinux.bin")
        shutil.copy(scratch / "tools/usr/lib/syslinux/modules/bios/ldlinux.c32", tree / "isolinux/ldlinux.c32")
        shutil.copy(scratch / "tools/usr/lib/ISOLINUX/isohdpfx.bin", scratch / "isohdpfx.bin")
        (tree / "isolinux/isolinux.cfg").write_text(
            f"DEFAULT tinyboot\nPROMPT 0\nTIMEOUT 0\nLABEL tinyboot\n  KERNEL /boot/vmlinuz\n"
            f"  INITRD /boot/initrd.xz\n  APPEND {command_line(arch)}\n")
        shutil.copy(kernel_path, tree / "boot/vmlinuz")
        (tree / "boot/initrd.xz").write_bytes(initrd)
    sizes = {"kernel": kernel_path.stat().st_size, "initrd_xz": len(initrd),
             **{f"initrd_{k}": v for k, v in parts.items()}, "stub": len(stub), "uki": len(uki),
             "efi_img": efi_mib * 1024 * 1024}
    manifest: dict[str, object] = {"arch": arch, "kernel_release": release, "app": APP, "cmdline": command_line(arch),
                                   "modules": [name for name, _ in loaded], "sizes": sizes}
    (tree / "tinyboot.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (tree / "README.txt").write_bytes(ISO_README)
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
    return StagedIso(tree, kernel_path, initrd, sizes, manifest)


def write_iso(tree: Path, iso: Path, arch: str, what: str) -> None:
    """The ISO of a staged tree, written by xorriso (bench/iso_writers.py measures pycdlib beside it):
    El Torito's BIOS entry (x86_64: ISOLINUX, with a hybrid MBR and GPT for USB sticks) and its EFI
    entry (the FAT image), Rock Ridge and Joliet names. Every date is fixed (--modification-date,
    SOURCE_DATE_EPOCH), so a rebuild gives the same bytes."""
    boot: list[str] = []
    if arch == "x86_64":
        boot += ["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table", "-isohybrid-mbr", str(tree.parent / "isohdpfx.bin"), "-eltorito-alt-boot"]
    else:
        boot += ["-c", "boot/boot.cat"]
    boot += ["-e", "boot/efi.img", "-no-emul-boot"]
    if arch == "x86_64":
        boot += ["-isohybrid-gpt-basdat"]
    xorriso = host_tool("xorriso", "package xorriso", "write the tinyboot ISO")
    argv = [xorriso, "-as", "mkisofs", "-quiet", "-o", str(iso), "-V", "TINYBOOT", "-R", "-J",
            "--modification-date=2000010100000000", *boot, str(tree)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DATE_EPOCH": str(EPOCH), "TZ": "UTC"}
    run_tool(argv, f"{what}: writing the ISO", env=env)


def modules_of(arch: str) -> tuple[str, ...]:
    """The modules the initramfs of `arch` loads, in this order (their dependencies go in before them)."""
    return (*FIRST_MODULES.get(arch, ()), *MODULES, *EXTRA_MODULES.get(arch, ()))


def build_tinyboot_iso(store: Store, fetcher: DebianFetcher, arch: str, apps: Path) -> TinybootIso:
    """The bootable ISO of `arch` running the example app; `apps` is build_app's entry."""
    modules = modules_of(arch)
    app = apps / f"linux_{ARCHES[arch].goarch}" / APP
    sets = [kernel_set(arch), *ISO_SETS]

    def inputs(packages: Packages) -> dict[str, object]:
        return {
            "recipe_version": RECIPE_VERSION, "arch": arch, "modules": list(modules),
            "packages": {name: sorted(p.sha256 for p in packages[name]) for name in sets},
            "app": hashlib.sha256(app.read_bytes()).hexdigest(), "cmdline": command_line(arch),
            "code": [hashlib.sha256(Path(m).read_bytes()).hexdigest() for m in (__file__, uki_module.__file__)],
        }

    def build(content: Path, debs: Debs) -> None:
        with scratch_dir("tinyboot") as tmp:
            staged = stage_iso(Path(tmp), arch, debs, app, modules)
            write_iso(staged.tree, content / "tinyboot.iso", arch, f"tinyboot ISO for {arch}")
            sizes = {**staged.sizes, "iso": (content / "tinyboot.iso").stat().st_size}
            shutil.copy(staged.kernel, content / "kernel")
            (content / "initrd.xz").write_bytes(staged.initrd)
            (content / "image.json").write_text(json.dumps({**staged.manifest, "sizes": sizes}, indent=2) + "\n")

    root = built_from(store, fetcher, f"tinyboot-iso-{arch}", sets, inputs_of=inputs, build=build)
    info = json.loads((root / "image.json").read_text())
    image = MinimalImage(arch, root / "kernel", root / "initrd.xz", info["kernel_release"], ready_marker=READY,
                         key=root.parent.name, bad_patterns=BAD_PATTERNS, dhcp_command="")
    return TinybootIso(arch, root / "tinyboot.iso", image, info["sizes"], root.parent.name)


def persistent_disk(path: Path, mib: int = 128) -> Path:
    """A new btrfs file system labelled tinyboot's PersistentLabel in the file `path`: the app's
    /persistent. mkfs.btrfs formats a file without root; 128 MiB is above btrfs's minimum."""
    with path.open("wb") as handle:
        handle.truncate(mib * 1024 * 1024)
    mkfs = host_tool("mkfs.btrfs", "package btrfs-progs", "format the tinyboot app's persistent disk")
    run_tool([mkfs, "-q", "-f", "-L", PERSISTENT_LABEL, str(path)], f"formatting {path.name} as btrfs")
    return path
