"""The A/B image of one arch (issue 24): two read-only root slots checked by dm-verity, boot counting (by
systemd-boot on UEFI, by the initramfs behind syslinux on SeaBIOS), an update agent, and a data
partition that outlives every update.

The disk (GPT, written by sfdisk from a script with fixed GUIDs, so a rebuild gives the same bytes):

    1 esp     FAT32: EFI/BOOT/BOOT<ARCH>.EFI (systemd-boot), loader/loader.conf,
              loader/entries/ab-1.conf (slot a, blessed), ab/linux and ab/initrd (shared by both slots);
              on x86_64 also syslinux (the protective MBR runs gptmbr.bin; the ESP is BIOS-bootable)
    2 slot-a  a slot image: squashfs root, padded to 4 KiB, then its dm-verity hash tree (no superblock)
    3 slot-b  empty until the first update
    4 data    ext4, labelled abdata: the state every version keeps

A boot entry binds its slot: `bootmatrix.slot=a bootmatrix.entry=ab-1 bootmatrix.verity=<data
blocks>:<hash start block>:<salt>:<root hash>` on its options line. The initramfs (guest/ab/boot/
initramfs-init.sh) maps that slot through dm-verity with that root hash and reads it all before
mounting it, so a slot that is not bit for bit what the entry names is never started. The slot's own
init (slot-init.sh) runs the version's health check and blesses the entry (abagent bless) or reboots.
Behind syslinux the kernel's command line says bootmatrix.select instead, and the initramfs chooses
and counts from the same entries (abagent select), as systemd-boot would.

An update (abagent update <url>) is a slot image served with its manifest (Slot.manifest): version,
size, sha256 and the verity spec; build_slot makes one per version, healthy or failing its health check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from arches import ARCHES, KERNEL_OPTIONS
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import STICK_TOOLS_SET, busybox_set
from images.recipes import esp, fat, gpt, stick
from images.recipes.esp import BIOS_ARCHES, syslinux_files, systemd_boot_files, write_esp
from images.recipes.fat import EPOCH
from images.recipes.gosource import GoRoot, build_on_host, sources_digest, write_guest_sources
from images.recipes.gpt import ESP_TYPE, LINUX_DATA_TYPE, Partition, mib_layout, write_gpt
from images.recipes.minimal import UDHCPC_SCRIPT, MinimalImage, build_minimal
from images.recipes.stick import stick_tools
from images.store import Store, code_sha256, scratch_dir
from images.tools import host_tool, run_tool

RECIPE_VERSION = 1
AB_GO = Path(__file__).parent.parent / "guest" / "ab"
INITRAMFS_INIT = AB_GO / "boot" / "initramfs-init.sh"
SLOT_INIT = AB_GO / "boot" / "slot-init.sh"
AGENT = "abagent"
MIB = 1 << 20
BLOCK = 4096  # dm-verity's data and hash block
SLOT_MIB = 32
DATA_MIB = 32
TRIES = 3  # boot attempts a new entry gets (ab-<n>+3-0.conf)
READY = r"BOOTMATRIX-READY ab slot=(?P<slot>[ab]) version=(?P<version>\S+)"
# dm_verity pulls dm_mod and dm_bufio in; ext4 its jbd2 and mbcache. libcrc32c (ext4) asks the crypto
# API for crc32c, which arm64's and riscv64's kernels have as a module.
MODULES = ("dm_verity", "squashfs", "vfat", "nls_cp437", "nls_ascii", "ext4")
FIRST_MODULES = {"aarch64": ("crc32c_generic",), "riscv64": ("crc32c_generic",)}
BAD_PATTERNS = (("A/B agent failure", r"ab-agent: failed [^\n]*"),)
HEALTHY = b"#!/bin/sh\nexit 0\n"
DATA_NOTE = "written when the image was built; every version must keep it"  # /data/note
UNHEALTHY = b"#!/bin/sh\necho 'health: this version fails its health check on purpose'\nexit 1\n"


def fixed_uuid(*names: str) -> str:
    """A GUID that is the same on every build: uuid5 of what it names."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "bootmatrix-ab:" + ":".join(names)))


@dataclass(frozen=True)
class Slot:
    """One version's slot image, as an update serves it."""

    arch: str
    version: str
    image: Path  # the squashfs, padded, then its hash tree
    size: int
    sha256: str
    verity: str  # <data blocks>:<hash start block>:<salt>:<root hash>
    healthy: bool

    def manifest(self) -> bytes:
        """manifest.json of this slot (what abagent update reads before slot.img)."""
        return json.dumps({"version": self.version, "size": self.size, "sha256": self.sha256,
                           "verity": self.verity}).encode()


@dataclass(frozen=True)
class AbImage:
    arch: str
    disk: Path
    partitions: dict[str, Partition]  # by name: esp, slot-a, slot-b, data
    boot: MinimalImage  # the shared kernel and initramfs
    first: Slot  # what slot a holds
    key: str


def build_agent(store: Store, go_root: GoRoot, arch: str) -> Path:
    """abagent for `arch`, built with the image's Go toolchain."""
    goarch = ARCHES[arch].goarch
    inputs = {"recipe_version": RECIPE_VERSION, "go_root": go_root.root.parent.name, "goarch": goarch,
              "sources": sources_digest(AB_GO)}

    def build(content: Path) -> None:
        with scratch_dir("abagent") as tmp:
            tree = Path(tmp) / "src"
            write_guest_sources(tree, AB_GO)
            build_on_host(go_root, tree, Path(tmp), {goarch: [(content / AGENT, f"./cmd/{AGENT}")]})

    return store.get(f"ab-agent-{arch}", inputs, build) / AGENT


def verity_format(image: Path, data_bytes: int, salt: str, what: str) -> str:
    """Append the dm-verity hash tree of image's first `data_bytes` to it (veritysetup, no superblock)
    and return the verity spec: <data blocks>:<hash start block>:<salt>:<root hash>."""
    veritysetup = host_tool("veritysetup", "package cryptsetup-bin", "make the A/B slots' dm-verity trees")
    blocks = data_bytes // BLOCK
    done = run_tool([veritysetup, "format", "--no-superblock", f"--salt={salt}", "--hash=sha256",
                     f"--data-block-size={BLOCK}", f"--hash-block-size={BLOCK}", f"--data-blocks={blocks}",
                     f"--hash-offset={data_bytes}", str(image), str(image)], f"{what}: veritysetup format")
    found = re.search(r"Root hash:\s+([0-9a-f]{64})", done.stdout)
    if found is None:
        raise ValueError(f"{what}: veritysetup printed no root hash: {done.stdout.strip()[-300:]}")
    return f"{blocks}:{blocks}:{salt}:{found.group(1)}"


def write_slot_image(target: Path, arch: str, version: str, *, healthy: bool, busybox: Path, agent: Path) -> str:
    """The squashfs root of one version at `target`, padded to a whole block, with its verity tree
    after it; returns the verity spec. Every time and owner is fixed, so the bytes are the same."""
    what = f"A/B slot {version} for {arch}"
    with scratch_dir("ab-slot") as tmp:
        tree = Path(tmp) / "root"
        for directory in ("bin", "sbin", "etc/ab", "etc/udhcpc", "dev", "proc", "sys", "tmp", "run", "efi",
                          "data"):
            (tree / directory).mkdir(parents=True)
        for source, rel, mode in ((busybox, "bin/busybox", 0o755), (agent, f"bin/{AGENT}", 0o755),
                                  (SLOT_INIT, "sbin/init", 0o755), (UDHCPC_SCRIPT, "etc/udhcpc/default.script", 0o755)):
            shutil.copyfile(source, tree / rel)
            os.chmod(tree / rel, mode)
        (tree / "bin/sh").symlink_to("busybox")
        (tree / "etc/resolv.conf").symlink_to("/run/resolv.conf")  # the root is read-only: DNS goes to tmpfs
        (tree / "etc/ab-release").write_text(f"{version}\n")
        (tree / "etc/ab/health").write_bytes(HEALTHY if healthy else UNHEALTHY)
        os.chmod(tree / "etc/ab/health", 0o755)
        mksquashfs = host_tool("mksquashfs", "package squashfs-tools", "make the A/B slots' root")
        # The times are fixed on the command line; mksquashfs refuses SOURCE_DATE_EPOCH beside them.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"}
        run_tool([mksquashfs, str(tree), str(target), "-noappend", "-all-root", "-no-xattrs", "-no-progress",
                  "-comp", "gzip", "-mkfs-time", str(EPOCH), "-all-time", str(EPOCH)], f"{what}: mksquashfs",
                 env=env)
    data_bytes = -(-target.stat().st_size // BLOCK) * BLOCK
    with target.open("r+b") as handle:
        handle.truncate(data_bytes)
    salt = hashlib.sha256(f"bootmatrix-ab {arch} {version}".encode()).hexdigest()
    verity = verity_format(target, data_bytes, salt, what)
    if target.stat().st_size > SLOT_MIB * MIB:
        raise ValueError(f"{what}: {target.stat().st_size} bytes do not fit a {SLOT_MIB} MiB slot")
    return verity


def build_slot(store: Store, fetcher: DebianFetcher, arch: str, agent: Path, version: str, *,
               healthy: bool = True) -> Slot:
    """The slot image of `version` (its health check passing or, for the rollback tests, failing)."""
    busybox = busybox_set(arch)

    def inputs(sets: Packages) -> dict[str, object]:
        return {"recipe_version": RECIPE_VERSION, "arch": arch, "version": version, "healthy": healthy,
                "busybox": [p.sha256 for p in sets[busybox]], "agent": _sha256(agent),
                "init": _sha256(SLOT_INIT), "udhcpc": _sha256(UDHCPC_SCRIPT), "recipe": _sha256(Path(__file__))}

    def build(content: Path, debs: Debs) -> None:
        ((_, busybox_deb),) = debs[busybox]
        with scratch_dir("ab-busybox") as tmp:
            extract_deb(busybox_deb, Path(tmp), lambda p: p == "usr/bin/busybox")
            verity = write_slot_image(content / "slot.img", arch, version, healthy=healthy,
                                      busybox=Path(tmp) / "usr/bin/busybox", agent=agent)
        (content / "slot.json").write_text(json.dumps({"verity": verity}) + "\n")

    root = built_from(store, fetcher, f"ab-slot-{arch}-{version}" + ("" if healthy else "-unhealthy"), [busybox],
                      inputs_of=inputs, build=build)
    image = root / "slot.img"
    verity = json.loads((root / "slot.json").read_text())["verity"]
    return Slot(arch, version, image, image.stat().st_size, _sha256(image), verity, healthy)


def entry_text(arch: str, generation: int, slot: str, first: Slot) -> bytes:
    """A boot entry, as abagent's EntryText writes it (guest/ab/entries.go): the shared kernel and
    initramfs, and the options that bind the slot and its root hash."""
    options = (f"console={ARCHES[arch].console} {KERNEL_OPTIONS} bootmatrix.slot={slot} "
               f"bootmatrix.entry=ab-{generation} bootmatrix.verity={first.verity}")
    return (f"title bootmatrix A/B version {first.version}\nsort-key bootmatrix-ab\nversion {generation}\n"
            f"linux /ab/linux\ninitrd /ab/initrd\noptions {options}\n").encode()


def syslinux_cfg(arch: str) -> bytes:
    """The BIOS path: syslinux starts the shared kernel and initramfs, which chooses the entry itself."""
    return esp.syslinux_cfg("ab", "/ab/linux", "/ab/initrd",
                            f"console={ARCHES[arch].console} {KERNEL_OPTIONS} bootmatrix.select=initramfs")


def layout(esp_mib: int) -> list[Partition]:
    """The four partitions, MiB-aligned after the primary GPT's first MiB."""
    return mib_layout([("esp", esp_mib), ("slot-a", SLOT_MIB), ("slot-b", SLOT_MIB), ("data", DATA_MIB)])


def write_disk(target: Path, arch: str, partitions: list[Partition], contents: dict[str, Path],
               boot_code: bytes | None = None) -> None:
    """The GPT disk (images/recipes/gpt.py): the ESP and three Linux data partitions, fixed GUIDs."""
    write_gpt(target, f"A/B disk for {arch}", fixed_uuid(arch, "disk"), partitions,
              types={p.name: ESP_TYPE if p.name == "esp" else LINUX_DATA_TYPE for p in partitions},
              uuids={p.name: fixed_uuid(arch, p.name) for p in partitions}, contents=contents, boot_code=boot_code)


def write_data_partition(target: Path, arch: str) -> None:
    """An ext4 of DATA_MIB holding `note` (DATA_NOTE: what the tests find intact after every update
    and cut), its UUID, hash seed and times fixed (E2FSPROGS_FAKE_TIME, the note's own mtime)."""
    with target.open("wb") as handle:
        handle.truncate(DATA_MIB * MIB)
    tree = target.with_name("data-tree")
    tree.mkdir()
    (tree / "note").write_text(DATA_NOTE + "\n")
    for path in (tree / "note", tree):
        os.utime(path, (EPOCH, EPOCH))
    mkfs = host_tool("mkfs.ext4", "package e2fsprogs", "format the A/B data partition")
    seed = fixed_uuid(arch, "data-fs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "E2FSPROGS_FAKE_TIME": str(EPOCH), "TZ": "UTC"}
    run_tool([mkfs, "-q", "-F", "-L", "abdata", "-U", seed, "-E", f"hash_seed={seed},root_owner=0:0",
              "-O", "^metadata_csum_seed", "-d", str(tree), str(target)], f"A/B data partition for {arch}: mkfs.ext4",
             env=env)
    # -d copies the note's uid, gid and ctime (the moment it was written here, which utime cannot set);
    # root's and the epoch's on every build, so any user at any time builds the same bytes.
    debugfs = host_tool("debugfs", "package e2fsprogs", "fix the A/B data partition's owners and times")
    commands = target.with_name("debugfs-commands")
    epoch = time.strftime("%Y%m%d%H%M%S", time.gmtime(EPOCH))
    commands.write_text("".join(f"set_inode_field /note {field} {value}\n" for field, value in (
        ("uid", 0), ("gid", 0), ("ctime", epoch), ("ctime_extra", 0))))
    run_tool([debugfs, "-w", "-f", str(commands), str(target)], f"A/B data partition for {arch}: debugfs", env=env)


def build_ab_image(store: Store, fetcher: DebianFetcher, arch: str, agent: Path) -> AbImage:
    """The A/B disk of `arch` with version 1 in slot a, and the boot files both slots share."""
    modules = (*FIRST_MODULES.get(arch, ()), *MODULES)
    boot = build_minimal(store, fetcher, arch, modules, init=INITRAMFS_INIT, name="ab-boot",
                         bad_patterns=BAD_PATTERNS, extra=((f"bin/{AGENT}", agent),))
    first = build_slot(store, fetcher, arch, agent, "1")

    def inputs(sets: Packages) -> dict[str, object]:
        return {"recipe_version": RECIPE_VERSION, "arch": arch, "boot": boot.key, "first": first.sha256,
                "tools": sorted(p.sha256 for p in sets[STICK_TOOLS_SET]), "recipe": _sha256(Path(__file__)),
                "code": code_sha256(esp, fat, gpt, stick), "slot_mib": SLOT_MIB, "data_mib": DATA_MIB}

    def build(content: Path, debs: Debs) -> None:
        with stick_tools(debs[STICK_TOOLS_SET]) as tools, scratch_dir("ab-disk") as tmp:
            files = systemd_boot_files(arch, tools, {"ab-1.conf": entry_text(arch, 1, "a", first)})
            files.update({"ab/linux": boot.kernel, "ab/initrd": boot.initrd})
            if arch in BIOS_ARCHES:
                files.update(syslinux_files(tools, syslinux_cfg(arch)))
            work = Path(tmp)
            esp_mib, boot_code = write_esp(work / "esp.img", arch, tools, files, label="ABESP",
                                           what=f"A/B disk for {arch}")
            write_data_partition(work / "data.img", arch)
            partitions = layout(esp_mib)
            write_disk(content / "disk.img", arch, partitions,
                       {"esp": work / "esp.img", "slot-a": first.image, "data": work / "data.img"}, boot_code)
        (content / "image.json").write_text(json.dumps(
            {"arch": arch, "partitions": [vars(p) for p in partitions], "first": first.verity}, indent=2) + "\n")

    root = built_from(store, fetcher, f"ab-disk-{arch}", [STICK_TOOLS_SET], inputs_of=inputs, build=build)
    info = json.loads((root / "image.json").read_text())
    partitions = {p["name"]: Partition(**p) for p in info["partitions"]}
    return AbImage(arch, root / "disk.img", partitions, boot, first, root.parent.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
