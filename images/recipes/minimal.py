"""The minimal image of one arch: Debian's kernel plus a busybox initramfs whose init prints a marker.

The initramfs is written by images.cpio (no root, deterministic). Kernel modules named in
`modules` are taken from the same kernel package with their dependencies, decompressed, and loaded by
init in dependency order.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from arches import ARCHES
from images.cpio import CpioArchive
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import busybox_set, kernel_set
from images.store import Store, scratch_dir

RECIPE_VERSION = 1
# Modules that give the guest a power button, so QMP system_powerdown works: evdev for busybox acpid,
# plus the button driver of each platform (QEMU's riscv virt board has no power button at all).
POWER_BUTTON_MODULES = {a.name: a.power_button_modules for a in ARCHES.values()}
POWER_BUTTON_SCRIPT = b"#!/bin/sh\necho 'bootmatrix: power button pressed, powering off'\npoweroff -f\n"
# virtio drivers every image carries (the ones built as modules in Debian's kernels; the rest are built in).
VIRTIO_MODULES = ("virtio_net", "virtio_blk", "virtio_rng", "virtio_console")
UDHCPC_SCRIPT = Path(__file__).parent.parent / "guest" / "udhcpc.script"
DHCP_COMMAND = "udhcpc -i {interface} -n -q -t 5 -T 2 -s /etc/udhcpc.script"
INIT_SCRIPT = Path(__file__).parent.parent / "guest" / "init.sh"


@dataclass(frozen=True)
class MinimalImage:
    arch: str
    kernel: Path
    initrd: Path
    kernel_release: str
    ready_marker: str = "BOOTMATRIX-READY"
    key: str = ""  # the store key of the image: equal keys, equal bytes
    # The image's own failure messages (label, regex): the harness fails a wait at once on them.
    bad_patterns: tuple[tuple[str, str], ...] = ()
    # How the image's shell gets a DHCP lease ({interface} filled in): busybox udhcpc with our hook script.
    dhcp_command: str = DHCP_COMMAND


def extract_kernel_files(deb: Path, workdir: Path) -> None:
    """The kernel image and its modules from a kernel package (boot/ and the modules tree) into workdir."""
    def wanted(path: str) -> bool:
        return path.startswith(("boot/", "usr/lib/modules/", "lib/modules/"))

    extract_deb(deb, workdir, wanted)


def _module_data(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def module_order(modules_dir: Path, modules: list[str]) -> list[tuple[str, bytes]]:
    """(file name, uncompressed bytes) of `modules` and what they depend on, dependencies first.
    A module this kernel has built in (modules.builtin) needs nothing.

    Debian ships no modules.dep (dpkg's postinst runs depmod), so dependencies are read from each
    module's own `.modinfo` section: the NUL-separated `depends=a,b` string that depmod reads too.
    """
    by_name = {
        p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko*") if ".ko" in p.name
    }
    builtin_list = modules_dir / "modules.builtin"
    built_in = {
        Path(line).name.split(".ko")[0].replace("-", "_")
        for line in (builtin_list.read_text().splitlines() if builtin_list.exists() else [])
    }
    ordered: dict[str, bytes] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if key in ordered or (key in built_in and key not in by_name):
            return
        if key in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join((*chain, key))}")
        if key not in by_name:
            raise ValueError(f"module {name} is not in {modules_dir.name} (built in, or misspelt?)")
        data = _module_data(by_name[key])
        found = re.search(rb"\0depends=([^\0]*)\0", data)
        for dependency in filter(None, (found.group(1).decode().split(",") if found else [])):
            visit(dependency, (*chain, key))
        ordered[key] = data

    for module in modules:
        visit(module, ())
    return [(f"{key}.ko", data) for key, data in ordered.items()]


def build_minimal(
    store: Store, fetcher: DebianFetcher, arch: str, modules: tuple[str, ...] = (), *, init: Path = INIT_SCRIPT,
    name: str = "minimal", bad_patterns: tuple[tuple[str, str], ...] = (), extra: tuple[tuple[str, Path], ...] = (),
) -> MinimalImage:
    """The kernel and a busybox initramfs whose /init is `init` (the marker-printing shell by default;
    the mostly-source image passes its first stage, which mounts the VFAT root), plus `extra` programs
    (path in the initramfs, host file; the A/B image's slot opener)."""
    modules = (*POWER_BUTTON_MODULES[arch], *VIRTIO_MODULES, *modules)
    kernel, busybox = kernel_set(arch), busybox_set(arch)

    def inputs(sets: Packages) -> dict[str, object]:
        (kernel_pkg,), (busybox_pkg,) = sets[kernel], sets[busybox]
        return {
            "recipe_version": RECIPE_VERSION,
            "arch": arch,
            "kernel": kernel_pkg.sha256,
            "busybox": busybox_pkg.sha256,
            "init": hashlib.sha256(init.read_bytes()).hexdigest(),
            "udhcpc": hashlib.sha256(UDHCPC_SCRIPT.read_bytes()).hexdigest(),
            "cpio_writer": hashlib.sha256((Path(__file__).parent.parent / "cpio.py").read_bytes()).hexdigest(),
            "modules": list(modules),
            # Only when there are any: the key of every image without extras stays as it was.
            **({"extra": {rel: hashlib.sha256(path.read_bytes()).hexdigest() for rel, path in extra}} if extra else {}),
        }

    def build(content: Path, debs: Debs) -> None:
        ((_, kernel_deb),), ((_, busybox_deb),) = debs[kernel], debs[busybox]
        with scratch_dir("kernel") as tmp:
            tree = Path(tmp)
            extract_kernel_files(kernel_deb, tree)
            kernel_path = sorted(tree.glob(ARCHES[arch].kernel_glob))[0]
            release = kernel_path.name.split("-", 1)[1]
            shutil.copy2(kernel_path, content / "kernel")
            archive = CpioArchive()
            for directory in ("bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "run", "root", "lib/modules"):
                archive.add_dir(directory)
            archive.add_char_device("dev/console", 5, 1)
            archive.add_char_device("dev/null", 1, 3, 0o666)
            bb_tree = tree / "busybox"
            extract_deb(busybox_deb, bb_tree, lambda p: p == "usr/bin/busybox")
            archive.add_file_from("bin/busybox", bb_tree / "usr/bin/busybox", 0o755)
            archive.add_symlink("bin/sh", "busybox")
            archive.add_file_from("init", init, 0o755)
            archive.add_file_from("etc/udhcpc.script", UDHCPC_SCRIPT, 0o755)
            for rel, path in extra:
                archive.add_file_from(rel, path, 0o755)
            load_list = []
            for module, data in module_order(tree / "usr/lib/modules" / release, list(modules)):
                archive.add_file(f"lib/modules/{module}", data)
                load_list.append(module)
            if POWER_BUTTON_MODULES[arch]:
                archive.add_file("etc/acpi/PWRF/00000080", POWER_BUTTON_SCRIPT, 0o755)
            archive.add_file("etc/modules-load", "".join(f"{m}\n" for m in load_list).encode())
            archive.write(content / "initramfs.cpio")
            (content / "image.json").write_text(
                json.dumps({"arch": arch, "kernel_release": release, "modules": load_list}, indent=2) + "\n"
            )

    root = built_from(store, fetcher, f"{name}-{arch}", [kernel, busybox], inputs_of=inputs, build=build)
    info = json.loads((root / "image.json").read_text())
    return MinimalImage(arch, root / "kernel", root / "initramfs.cpio", info["kernel_release"], key=root.parent.name,
                        bad_patterns=bad_patterns)
