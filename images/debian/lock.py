"""The lock file: exactly which Debian packages (name, arch, version, sha256, size, pool path) the
default images use.

`bootmatrix lock` resolves the package sets below against the mirror's index and rewrites the file;
every download goes to the locked pool path and is verified against the locked size and sha256, so a
build is reproducible, a tampered or changed package is refused, and a valid lock needs no index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from arches import ARCHES, host_debian_arch
from images.debian.apt import AptError, IndexUnusable, PackageRef, PrivateApt
from images.debian.mirror import Mirror

DEFAULT_SUITE = "trixie"
# Firmware sets: the default one, and an older one kept for side-by-side regression comparisons.
FIRMWARE_SUITES = ("trixie", "bookworm")


def lock_path(suite: str) -> Path:
    return Path(__file__).with_name(f"{suite}.lock.json")


DEFAULT_LOCK = lock_path(DEFAULT_SUITE)

# Debian architecture of each guest architecture (arches.ARCHES is the one table).
GUEST_DEBIAN_ARCH = {a.name: a.debian for a in ARCHES.values()}
QEMU_PACKAGES = ["qemu-system-x86", "qemu-system-arm", "qemu-system-riscv"]
# Firmware of a firmware set (all Architecture: all). A package the suite lacks is left out of its set
# (bookworm has no qemu-efi-riscv64), and cells that need it say so when they are skipped.
FIRMWARE_PACKAGES = ["seabios", "ovmf", "qemu-efi-aarch64", "qemu-efi-riscv64", "opensbi", "u-boot-qemu"]
FIRMWARE_SET = "firmware"
# Go for the mostly-source image: the toolchain of each guest arch, and one source tree.
GO_VERSION = "1.24"
GO_SRC_SET = "go-src"


def go_set(arch: str) -> str:
    return f"go-{arch}"


# The shell of the mostly-source image: dash with its C library. Not busybox: busybox's shell is built
# standalone (it runs its own applets before searching PATH), so `ls` would never reach /ubin/ls.
SHELL_PACKAGES = ("dash", "libc6")


def shell_set(arch: str) -> str:
    return f"shell-{arch}"


# What builds the boot stick: syslinux (installer for the host arch, modules arch-independent) and
# systemd-boot for each guest arch.
STICK_TOOLS_SET = "stick-tools"
ISO_TOOLS_SET = "iso-tools"  # the BIOS half of the tinyboot ISO: ISOLINUX and its hybrid MBR


# The Debian root (issue 23): everything Debian marks required or essential (debootstrap's minbase),
# then systemd as init with udev and logind, the arch's kernel with initramfs-tools (zstd is what it
# compresses with), e2fsprogs (fsck and mke2fs in the guest), iproute2 and busybox (wget, for the
# payload server). Their closure is locked as one set per arch.
DEBIAN_ROOT_PACKAGES = ("systemd-sysv", "udev", "libpam-systemd", "dbus", "initramfs-tools", "zstd", "e2fsprogs",
                        "iproute2", "busybox")


# What the root's build needs besides the root: mke2fs reads a tar through libarchive (dlopen'd), so
# the final filesystem is made from a sorted, clamped tar. Installed into the throwaway build tree only.
DEBIAN_ROOT_TOOLS = ("libarchive13t64",)


def debian_root_set(arch: str) -> str:
    return f"debian-root-{arch}"


def debian_root_tools_set(arch: str) -> str:
    return f"debian-root-tools-{arch}"


class LockError(Exception):
    pass


@dataclass(frozen=True)
class LockedPackage:
    name: str
    arch: str
    version: str
    sha256: str
    size: int
    filename: str  # the pool path below the mirror root (the index's Filename): enough to fetch it directly

    @property
    def ref(self) -> PackageRef:
        return PackageRef(self.name, self.arch, self.version)


def kernel_set(arch: str) -> str:
    return f"kernel-{arch}"


def busybox_set(arch: str) -> str:
    return f"busybox-{arch}"


def qemu_set(host_arch: str | None = None) -> str:
    return f"qemu-host-{host_arch or host_debian_arch()}"


# Debian 13's systemd-repart with the mkfs tools it runs, for the host: no image uses them;
# bench/repart_disk.py measures them against our own disk writer (docs/debian.md). The host's own
# systemd-repart (252, Debian 12) has no --offline and needs loop devices, so root.
REPART_PACKAGES = ("systemd-repart", "e2fsprogs", "dosfstools", "mtools")


def repart_set(host_arch: str | None = None) -> str:
    return f"repart-host-{host_arch or host_debian_arch()}"


@dataclass
class Lockfile:
    suite: str
    sets: dict[str, list[LockedPackage]]
    path: Path = DEFAULT_LOCK

    @classmethod
    def load(cls, path: Path = DEFAULT_LOCK) -> Lockfile:
        try:
            data = json.loads(path.read_text())
            sets = {name: [LockedPackage(**p) for p in pkgs] for name, pkgs in data["sets"].items()}
            return cls(data["suite"], sets, path)
        except FileNotFoundError:
            raise LockError(f"lock file {path} is missing: run `bootmatrix lock`") from None
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise LockError(f"lock file {path} is malformed ({error}): run `bootmatrix lock`") from None

    def packages(self, set_name: str) -> list[LockedPackage]:
        try:
            return self.sets[set_name]
        except KeyError:
            raise LockError(
                f"package set {set_name!r} is not in {self.path} (it has: {', '.join(sorted(self.sets))}); "
                "run `bootmatrix lock`"
            ) from None

    def write(self) -> None:
        payload = {
            "comment": "Generated by `bootmatrix lock`; every download is verified against these hashes.",
            "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "suite": self.suite,
            "sets": {name: [asdict(p) for p in pkgs] for name, pkgs in sorted(self.sets.items())},
        }
        self.path.write_text(json.dumps(payload, indent=1) + "\n")


class Indexes:
    """The mirror's current index, one private apt per Debian arch, each updated once when first needed.
    A broken index (IndexUnusable) stops only the sets that need that arch."""

    def __init__(self, state_root: Path, mirror: Mirror, suite: str):
        self.state_root = state_root
        self.mirror = mirror
        self.suite = suite
        self.host = host_debian_arch()
        self._apts: dict[str, PrivateApt] = {}
        self._broken: dict[str, IndexUnusable] = {}

    def apt(self, arch: str) -> PrivateApt:
        arch = self.host if arch == "all" else arch
        if arch in self._broken:
            raise self._broken[arch]
        if arch not in self._apts:
            apt = PrivateApt(self.state_root / self.suite / arch, self.mirror, self.suite, (arch,))
            try:
                apt.update()
            except IndexUnusable as error:
                self._broken[arch] = error
                raise
            self._apts[arch] = apt
        return self._apts[arch]

    def locked(self, refs: list[PackageRef]) -> list[LockedPackage]:
        """Lock entries (with sha256, size and pool path from the signed index) for `refs`, in order."""
        by_arch: dict[str, list[PackageRef]] = {}
        for ref in refs:
            by_arch.setdefault(ref.arch, []).append(ref)
        described: dict[PackageRef, dict[str, str]] = {}
        for arch, group in by_arch.items():
            described |= self.apt(arch).show(group)
        locked = []
        for ref in refs:
            fields = described.get(ref) or described.get(PackageRef(ref.name, "all", ref.version))
            if fields is None:
                raise LockError(f"the {self.suite} index does not describe {ref.spec}")
            locked.append(LockedPackage(
                ref.name, fields["Architecture"], ref.version, fields["SHA256"], int(fields["Size"]), fields["Filename"]
            ))
        return locked

    def candidate(self, name: str, arch: str) -> PackageRef:
        return self.apt(arch).candidate(name, arch)

    def candidates(self, names: list[str], arch: str) -> list[PackageRef]:
        return [self.candidate(name, arch) for name in names]


SetResolver = Callable[[Indexes], list[LockedPackage]]


def _kernel(guest_arch: str) -> SetResolver:
    def resolve(index: Indexes) -> list[LockedPackage]:
        deb_arch = GUEST_DEBIAN_ARCH[guest_arch]
        meta = f"{ARCHES[guest_arch].kernel_metapackage}:{deb_arch}"
        concrete = [d for d in index.apt(deb_arch).depends(meta) if d.startswith("linux-image-")]
        if not concrete:
            raise LockError(f"{meta} depends on no linux-image package")
        return index.locked([index.candidate(concrete[0].split(":")[0], deb_arch)])

    return resolve


def _debian_root(guest_arch: str, tools: bool = False) -> SetResolver:
    def resolve(index: Indexes) -> list[LockedPackage]:
        deb_arch = GUEST_DEBIAN_ARCH[guest_arch]
        apt = index.apt(deb_arch)
        names = ([*DEBIAN_ROOT_TOOLS] if tools else
                 [*apt.required(deb_arch), *DEBIAN_ROOT_PACKAGES, ARCHES[guest_arch].kernel_metapackage])
        closure = apt.closure([f"{name}:{deb_arch}" for name in names])
        return index.locked(sorted(closure, key=lambda r: (r.name, r.arch)))

    return resolve


def _named(names: tuple[str, ...], arch: str) -> SetResolver:
    return lambda index: index.locked(index.candidates(list(names), arch))


def _host_closure(packages: tuple[str, ...]) -> SetResolver:
    """The host arch's closure of `packages` into an empty root: a prefix with its own C library."""
    def resolve(index: Indexes) -> list[LockedPackage]:
        host = index.host
        closure = index.apt(host).closure([f"{p}:{host}" for p in packages])
        return index.locked(sorted(closure, key=lambda r: (r.name, r.arch)))

    return resolve


def _firmware(index: Indexes) -> list[LockedPackage]:
    refs = []
    for package in FIRMWARE_PACKAGES:
        try:
            refs.append(index.candidate(package, index.host))
        except IndexUnusable:
            raise
        except AptError:
            continue  # this suite lacks it (bookworm: no qemu-efi-riscv64)
    return index.locked(refs)


def _stick_tools(index: Indexes) -> list[LockedPackage]:
    refs = index.candidates(["syslinux", "syslinux-common"], index.host)
    refs += [index.candidate("systemd-boot-efi", arch) for arch in GUEST_DEBIAN_ARCH.values()]
    return index.locked(refs)


def _iso_tools(index: Indexes) -> list[LockedPackage]:
    return index.locked(index.candidates(["isolinux"], index.host))


def set_resolvers(suite: str) -> dict[str, SetResolver]:
    """How each package set of `suite` is resolved against the current index, by set name."""
    if suite != DEFAULT_SUITE:
        return {FIRMWARE_SET: _firmware}
    resolvers: dict[str, SetResolver] = {}
    for guest_arch, deb_arch in GUEST_DEBIAN_ARCH.items():
        resolvers[kernel_set(guest_arch)] = _kernel(guest_arch)
        resolvers[busybox_set(guest_arch)] = _named(("busybox-static",), deb_arch)
        resolvers[go_set(guest_arch)] = _named((f"golang-{GO_VERSION}-go",), deb_arch)
        resolvers[shell_set(guest_arch)] = _named(SHELL_PACKAGES, deb_arch)
        resolvers[debian_root_set(guest_arch)] = _debian_root(guest_arch)
        resolvers[debian_root_tools_set(guest_arch)] = _debian_root(guest_arch, tools=True)
    resolvers[qemu_set()] = _host_closure(tuple(QEMU_PACKAGES))
    resolvers[repart_set()] = _host_closure(REPART_PACKAGES)
    resolvers[FIRMWARE_SET] = _firmware
    resolvers[STICK_TOOLS_SET] = _stick_tools
    resolvers[ISO_TOOLS_SET] = _iso_tools
    resolvers[GO_SRC_SET] = _named((f"golang-{GO_VERSION}-src",), host_debian_arch())
    return resolvers


def same_names(packages: list[LockedPackage]) -> SetResolver:
    """For a set no resolver knows (a user's own): the current version of each package it names."""
    return lambda index: index.locked([index.candidate(p.name, p.arch if p.arch != "all" else index.host)
                                       for p in packages])


def resolve_set(index: Indexes, set_name: str, current: list[LockedPackage] | None = None) -> list[LockedPackage]:
    resolver = set_resolvers(index.suite).get(set_name)
    if resolver is None:
        if current is None:
            raise LockError(f"no resolver for package set {set_name!r}")
        resolver = same_names(current)
    return resolver(index)


@dataclass
class Resolution:
    lock: Lockfile
    kept: dict[str, str]  # set name -> why its old entries were kept


def resolve_lock(index: Indexes, path: Path, previous: Lockfile | None = None,
                 only: frozenset[str] | None = None) -> Resolution:
    """Resolve every set of the suite (or only the sets named in `only`, keeping the rest of `previous`
    as it is) against the current index. A set whose index is unusable keeps its entries from
    `previous` (when there are some), so one arch's broken index does not block the rest."""
    sets: dict[str, list[LockedPackage]] = {}
    kept: dict[str, str] = {}
    resolvers = set_resolvers(index.suite)
    for name, packages in (previous.sets.items() if previous is not None else ()):
        if name not in resolvers:  # a user's own set (`bootmatrix lock --add`): same names, current versions
            resolvers[name] = same_names(packages)
    for name, resolver in resolvers.items():
        if only is not None and name not in only:
            if previous is not None and name in previous.sets:
                sets[name] = previous.sets[name]
            continue
        try:
            sets[name] = resolver(index)
        except IndexUnusable as error:
            if previous is None or name not in previous.sets:
                raise
            sets[name] = previous.sets[name]
            kept[name] = str(error).splitlines()[0]
    return Resolution(Lockfile(index.suite, sets, path), kept)


def parse_package_spec(spec: str) -> tuple[str, str | None, str | None]:
    """"name[:arch][=version]" (apt's spelling) -> (name, arch or None, version or None)."""
    name, _, version = spec.partition("=")
    name, _, arch = name.partition(":")
    return name.strip(), (arch.strip() or None), (version.strip() or None)


def add_package(index: Indexes, lock: Lockfile, spec: str, set_name_of: Callable[[str, str], str]) -> LockedPackage:
    """Put one package ("name[:arch][=version]"; arch defaults to the host's, version to the index's
    candidate) into `lock` as a set of its own, named by `set_name_of(name, arch)`. For artifacts a
    matrix takes from Debian (`deb = ...`): `bootmatrix lock --add`."""
    name, arch, version = parse_package_spec(spec)
    arch = arch or index.host
    ref = PackageRef(name, arch, version) if version else index.candidate(name, arch)
    (package,) = index.locked([ref])
    lock.sets[set_name_of(package.name, package.arch)] = [package]
    return package
