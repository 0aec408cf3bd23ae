"""A real Debian 13 root of one arch with systemd as init (issue 23), built rootless on any host.

No emulator is registered (binfmt_misc is not mounted here, and often cannot be on CI runners), so the
target's own maintainer scripts run where the target's binaries run natively: in a VM of that arch.

1. host: every locked package of `debian-root-<arch>` is unpacked into a build tree (images.debian.
   extract, no root), beside the .debs, the second stage and its configuration, and the owner and mode
   each package gives its directories. mke2fs -d makes the tree an ext4 image.
2. guest: our kernel and a busybox initramfs (guest/debian/build-init.sh) boot that image as /dev/vda
   and chroot into it. stage2.sh installs every package again with dpkg, as debootstrap's second stage
   does (preinst, unpack, postinst, triggers: initramfs-tools builds the initrd there), configures the
   system (configure.sh), removes what records when the build ran, and writes the root as a sorted
   tar with every time clamped to EPOCH. mke2fs (Debian 13's, which reads a tar) turns the tar into the
   root filesystem on /dev/vdb, with a fixed UUID, hash seed and time.
3. host: the kernel and initrd are read out of that filesystem (debugfs); images/recipes/debian_disk.py
   puts them and the filesystem on a bootable disk.

The VM is the caller's: `GuestRunner` boots a `GuestJob` and returns its console transcript (the matrix
gives one that boots through the harness, images knows nothing of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images.debian.extract import extract_deb, member_name
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import LockedPackage, debian_root_set, debian_root_tools_set
from images.recipes.minimal import MinimalImage, build_minimal
from images.store import Store, scratch_dir
from images.tools import BuildError, host_tool, run_tool

RECIPE_VERSION = 1
GUEST = Path(__file__).parent.parent / "guest" / "debian"
BUILD_INIT = GUEST / "build-init.sh"
STAGE_FILES = ("stage2.sh", "configure.sh", "fstab", "dhcp.network")
EPOCH = 946684800  # 2000-01-01 00:00 UTC: every time in the root filesystem
LOGIN = "root"  # who the console logs in as (LAVA's and labgrid's Debian targets do the same)
USER = "tester"  # the unprivileged test user; both have PASSWORD (docs/debian.md)
PASSWORD = "tester-13"  # not a word the console shows otherwise: transcripts hide it
SALT = "$6$bootmatrix$"  # sha512-crypt with a fixed salt: the same shadow line on every build
SPARE_BYTES = 512 << 20  # free room in the root filesystem for what tests write
BUILD_MIB = 1024
BUILD_TIMEOUT = 2400.0  # seconds under TCG before the build VM counts as hung (riscv64 is the slowest)
BUILD_END = r"BOOTMATRIX-BUILD-END status=(?P<status>\S+)"
# ext4 in the builder's initramfs (dm and squashfs are the A/B image's); crc32c for ext4's checksums.
BUILD_MODULES = {"aarch64": ("crc32c_generic", "ext4"), "riscv64": ("crc32c_generic", "ext4"), "x86_64": ("ext4",)}
# The initrd's own modules (MODULES=list): what mounts a virtio disk's ext4 on each arch's kernel
# (virtio_pci is built in everywhere; the cloud-amd64 kernel has ext4 and crc32c built in too).
INITRAMFS_MODULES = {"x86_64": ("virtio_blk",), "aarch64": ("virtio_blk", "ext4", "crc32c_generic"),
                     "riscv64": ("virtio_blk", "ext4", "crc32c_generic")}
BUILD_BAD = (("Debian root build failure", r"BOOTMATRIX-BUILD-END status=(?!ok)\S+"),
             ("dpkg error", r"dpkg: error processing [^\n]*"))


def fixed_uuid(arch: str, name: str) -> str:
    """A UUID that is the same on every build: uuid5 of what it names."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bootmatrix-debian:{arch}:{name}"))


@dataclass(frozen=True)
class GuestJob:
    """One boot of a VM of `arch` that runs a build step: the kernel, initramfs and command line, the raw
    disks in order (virtio, written in place), and the console line that ends it."""

    name: str
    arch: str
    kernel: Path
    initrd: Path
    append: str
    disks: tuple[Path, ...]
    end: str  # regex; its `status` group is "ok" on success
    timeout: float
    bad_patterns: tuple[tuple[str, str], ...] = ()
    memory_mib: int = BUILD_MIB


GuestRunner = Callable[[GuestJob], str]  # boots the job to its end line; returns the console transcript


@dataclass(frozen=True)
class DebianRoot:
    arch: str
    root: Path  # the ext4 root filesystem
    kernel: Path
    initrd: Path
    kernel_release: str
    packages: int  # how many packages dpkg says are installed
    key: str


def _control(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def _directories(deb: Path) -> list[tuple[str, int, int, str]]:
    """(mode, uid, gid, path) of each directory the package ships, as its data tar gives them."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member_name(member.name).rstrip("/")
                if member.isdir() and name:
                    found.append((f"{member.mode & 0o7777:o}", member.uid, member.gid, name))
    finally:
        proc.stdout.close()
        proc.wait()
    return found


def _is_base(deb: Path) -> bool:
    """What debootstrap's second stage installs first: Essential, or Priority required."""
    return _control(deb, "Essential") == "yes" or _control(deb, "Priority") == "required"


def write_build_tree(tree: Path, root_debs: list[tuple[LockedPackage, Path]],
                     tool_debs: list[tuple[LockedPackage, Path]], arch: str) -> None:
    """The build tree: every package unpacked, and /bootmatrix with what stage2.sh reads."""
    stage = tree / "bootmatrix"
    (stage / "debs").mkdir(parents=True)
    (stage / "tools").mkdir()
    base: list[str] = []
    rest: list[str] = []
    kernel: list[str] = []
    directories: dict[str, tuple[str, int, int]] = {}
    for package, deb in root_debs:
        extract_deb(deb, tree)
        name = f"{package.name}_{package.arch}.deb"
        shutil.copyfile(deb, stage / "debs" / name)
        (base if _is_base(deb) else kernel if package.name.startswith("linux-image-") else rest).append(name)
        for mode, uid, gid, path in _directories(deb):
            directories.setdefault(path, (mode, uid, gid))
    in_root = {package.name for package, _ in root_debs}
    tools = []
    for package, deb in tool_debs:
        if package.name not in in_root:
            name = f"{package.name}_{package.arch}.deb"
            shutil.copyfile(deb, stage / "tools" / name)
            tools.append(name)
    # Merged /usr: trixie's packages ship their files below /usr and base-files the aliases; make sure
    # they are there before anything runs (the loader path of every binary goes through one).
    for alias in ("bin", "sbin", "lib", *(["lib64"] if arch == "x86_64" else [])):
        if not os.path.lexists(tree / alias):
            (tree / alias).symlink_to(f"usr/{alias}")
    for folder in ("proc", "sys", "dev", "run", "tmp", "var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (tree / folder).mkdir(parents=True, exist_ok=True)
    for name in ("status", "available"):
        (tree / "var/lib/dpkg" / name).touch()
    (stage / "essential").write_text("".join(f"{n}\n" for n in sorted(base)))
    (stage / "rest").write_text("".join(f"{n}\n" for n in sorted(rest)))
    (stage / "kernel").write_text("".join(f"{n}\n" for n in sorted(kernel)))
    (stage / "tools.list").write_text("".join(f"{n}\n" for n in sorted(tools)))
    (stage / "directories").write_text("".join(
        f"{mode} {uid} {gid} {path}\n" for path, (mode, uid, gid) in sorted(directories.items())
        if not os.path.islink(tree / path)))
    for file in STAGE_FILES:
        shutil.copyfile(GUEST / file, stage / file)
    (stage / "initramfs-modules").write_text("".join(f"{m}\n" for m in INITRAMFS_MODULES[arch]))
    for name, value in (("epoch", str(EPOCH)), ("user", USER), ("password", PASSWORD), ("salt", SALT),
                        ("spare-bytes", str(SPARE_BYTES)), ("fs-uuid", fixed_uuid(arch, "root-fs"))):
        (stage / name).write_text(value + "\n")


def _tree_bytes(tree: Path) -> int:
    total = 0
    for folder, _, files in os.walk(tree):
        for file in files:
            path = os.path.join(folder, file)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def make_build_image(tree: Path, target: Path, arch: str) -> None:
    """The build tree as an ext4 image (room for a second copy of it: the root's tar), rootless."""
    size = (_tree_bytes(tree) * 3 + (1 << 30)) // (64 << 20) * (64 << 20)
    with target.open("wb") as handle:
        handle.truncate(size)
    mkfs = host_tool("mkfs.ext4", "package e2fsprogs", "make the Debian root's build image")
    run_tool([mkfs, "-q", "-F", "-L", "bootmatrix-build", "-E", "root_owner=0:0", "-d", str(tree), str(target)],
             f"Debian root for {arch}: the build image")


def read_out(image: Path, inside: str, target: Path, what: str) -> None:
    """One file of an ext4 image, by its path inside, to `target` (debugfs: no mount, no root)."""
    debugfs = host_tool("debugfs", "package e2fsprogs", "read the kernel out of the Debian root")
    run_tool([debugfs, "-R", f"dump {inside} {target}", str(image)], what)
    if not target.exists() or target.stat().st_size == 0:
        raise BuildError(f"{what}: {inside} is not in {image.name}")


def list_boot(image: Path) -> list[str]:
    debugfs = host_tool("debugfs", "package e2fsprogs", "read the kernel out of the Debian root")
    listing = run_tool([debugfs, "-R", "ls -p /boot", str(image)], "listing /boot of the Debian root").stdout
    return [fields[5] for line in listing.splitlines() if len(fields := line.split("/")) > 5 and fields[5]]


def fs_bytes(image: Path) -> int:
    dumpe2fs = host_tool("dumpe2fs", "package e2fsprogs", "read the Debian root's size")
    header = run_tool([dumpe2fs, "-h", str(image)], "reading the Debian root's superblock").stdout
    count = re.search(r"^Block count:\s+(\d+)", header, re.MULTILINE)
    size = re.search(r"^Block size:\s+(\d+)", header, re.MULTILINE)
    if not count or not size:
        raise BuildError(f"the Debian root's superblock gives no size:\n{header[-500:]}")
    return int(count.group(1)) * int(size.group(1))


def build_debian_root(store: Store, fetcher: DebianFetcher, arch: str, run_guest: GuestRunner) -> DebianRoot:
    """The Debian root filesystem of `arch`, its kernel and its initrd (built by dpkg in a VM of `arch`)."""
    root_set, tools_set = debian_root_set(arch), debian_root_tools_set(arch)
    builder: MinimalImage = build_minimal(store, fetcher, arch, BUILD_MODULES[arch], init=BUILD_INIT,
                                          name="debian-builder", bad_patterns=BUILD_BAD)

    def inputs(sets: Packages) -> dict[str, object]:
        return {
            "recipe_version": RECIPE_VERSION, "arch": arch, "builder": builder.key,
            "packages": sorted(p.sha256 for p in sets[root_set]), "tools": sorted(p.sha256 for p in sets[tools_set]),
            "guest": {f: _sha256(GUEST / f) for f in STAGE_FILES},
            "recipe": _sha256(Path(__file__)), "epoch": EPOCH, "initramfs_modules": INITRAMFS_MODULES[arch],
            "user": [LOGIN, USER, PASSWORD, SALT], "spare": SPARE_BYTES,
        }

    def build(content: Path, debs: Debs) -> None:
        with scratch_dir("debian-root") as tmp:
            work = Path(tmp)
            tree = work / "tree"
            write_build_tree(tree, debs[root_set], debs[tools_set], arch)
            make_build_image(tree, work / "build.img", arch)
            shutil.rmtree(tree)
            root = work / "root.img"
            with root.open("wb") as handle:
                handle.truncate(8 << 30)  # sparse: mke2fs in the guest writes only what it uses
            append = f"console={ARCHES[arch].console} {KERNEL_OPTIONS}"
            transcript = run_guest(GuestJob(f"debian-build-{arch}", arch, builder.kernel, builder.initrd, append,
                                            (work / "build.img", root), BUILD_END, BUILD_TIMEOUT, BUILD_BAD))
            end = re.search(BUILD_END, transcript)
            if end is None or end.group("status") != "ok":
                raise BuildError(f"Debian root for {arch}: the build VM ended with "
                                 f"{end.group('status') if end else 'no end line'}")
            packages = re.search(r"BOOTMATRIX-BUILD-PACKAGES (\d+)", transcript)
            with root.open("r+b") as handle:
                handle.truncate(fs_bytes(root))
            shutil.move(root, content / "root.img")
        boot = list_boot(content / "root.img")
        kernels = sorted(n for n in boot if n.startswith(("vmlinuz-", "vmlinux-")))
        if not kernels:
            raise BuildError(f"Debian root for {arch}: no kernel in /boot (it has: {', '.join(boot)})")
        release = kernels[-1].split("-", 1)[1]
        read_out(content / "root.img", f"/boot/{kernels[-1]}", content / "kernel", f"Debian root for {arch}: kernel")
        read_out(content / "root.img", f"/boot/initrd.img-{release}", content / "initrd",
                 f"Debian root for {arch}: initrd")
        (content / "image.json").write_text(json.dumps(
            {"arch": arch, "kernel_release": release, "packages": int(packages.group(1)) if packages else 0},
            indent=2) + "\n")

    entry = built_from(store, fetcher, f"debian-root-{arch}", [root_set, tools_set], inputs_of=inputs, build=build)
    info = json.loads((entry / "image.json").read_text())
    return DebianRoot(arch, entry / "root.img", entry / "kernel", entry / "initrd", info["kernel_release"],
                      info["packages"], entry.parent.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
