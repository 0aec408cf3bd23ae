"""`bootmatrix doctor`: what this host has and lacks, capability by capability, and the one command that
fixes it. Quick and read-only unless `--fix`: it builds nothing and downloads nothing (the KVM probe, a
few seconds, runs once and is cached like the lab's).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from arches import NAMES
from harness.accel import kvm_verdict
from harness.qemu import QemuInstall, QemuNotFound
from images.debian.mirror import DEFAULT_KEYRING, KEYRING_ENV, MirrorNotFound, find_mirror
from images.store import CorruptEntry, Entry, Store
from images.tools import ToolMissing, host_tool
from matrix import host_packages
from matrix.host_packages import HostPackage

SNAPSHOT_QEMU = (8, 2)  # migration to a file: URI, which snapshots use
PINNED = "qemu-prefix"  # the store entry of the pinned QEMU (images/recipes/qemu.py)


@dataclass
class Capability:
    name: str
    ok: bool | None  # None: informational (the default matrix does not need it)
    detail: str


@dataclass
class Report:
    capabilities: list[Capability]
    cache: str
    missing: list[HostPackage]

    @property
    def default_matrix_runs(self) -> bool:
        needed = {"pinned QEMU", "Debian fetching", "the stick"}
        return all(c.ok for c in self.capabilities if c.name in needed)


def _missing_for(capability: str, missing: list[HostPackage]) -> list[HostPackage]:
    return [p for p in missing if p.capability == capability]


def _lacking(tools: list[str], capability: str, missing: list[HostPackage]) -> str:
    """"missing <tools>", and when their packages are installed all the same, that PATH is to blame."""
    words = "missing " + ", ".join(tools)
    if not _missing_for(capability, missing):
        owners = sorted({p.name for p in host_packages.PACKAGES if p.capability == capability})
        verb = "is" if len(owners) == 1 else "are"
        words += f" (yet {' and '.join(owners)} {verb} installed: is its folder on PATH?)"
    return words


def _tools(names: tuple[str, ...]) -> list[str]:
    """The tools of `names` not found the way the recipes look for them (images.tools.host_tool)."""
    lacking = []
    for name in names:
        try:
            host_tool(name, "", "be found")
        except ToolMissing:
            lacking.append(name)
    return lacking


def _version(qemu: QemuInstall, arch: str) -> str | None:
    try:
        return qemu.version(arch)
    except (QemuNotFound, OSError):
        return None


def _entry_named(store: Store, name: str) -> Entry | None:
    """A store entry built by the recipe `name` (any inputs), or None: what is cached, without building."""
    for entry in store.entries():
        try:
            if entry.manifest()["name"] == name:
                return entry
        except (CorruptEntry, OSError, KeyError):
            continue
    return None


def _pinned(store: Store) -> QemuInstall | None:
    entry = _entry_named(store, PINNED)
    return QemuInstall.from_prefix("pinned", entry.content) if entry is not None else None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _kvm(store: Store, pinned: QemuInstall | None, host: QemuInstall | None) -> Capability:
    """The lab's own verdict (its probe boots our x86_64 kernel under KVM) when what it needs is cached;
    otherwise the probe's first stage only (a boot sector), said as such: on some hosts (a nested
    "kvm-pvm" module) the boot sector runs and a Linux guest does not."""
    if pinned is not None and _entry_named(store, "minimal-x86_64") is not None:
        from matrix.lab import Lab
        from matrix.model import Cell

        accel, why = Lab(store).accel(Cell(arch="x86_64", firmware="seabios"))
        return Capability("KVM", None, f"{'usable' if accel == 'kvm' else 'not usable, TCG is used'}: "
                          f"{why.splitlines()[0]}")
    qemu = pinned or host
    if qemu is None:
        return Capability("KVM", None, "not probed: no x86_64 QEMU here yet (the pinned one comes on first use)")
    verdict = kvm_verdict(qemu, store.root / "accel")
    return Capability("KVM", None, f"first probe stage (a boot sector) {'ran' if verdict.kvm_usable else 'failed'} "
                      f"under KVM ({verdict.reason.splitlines()[0]}); the full probe boots a Linux guest on first use")


def examine(store: Store | None = None) -> Report:
    store = store or Store()
    missing = host_packages.missing()
    found: list[Capability] = []

    fetch_tools = _tools(("dpkg-deb",))
    try:
        mirror = find_mirror()
        mirror_words = f"mirror {mirror.uri} (from {mirror.origin})"
        mirror_ok = True
    except MirrorNotFound as error:
        mirror_words, mirror_ok = str(error), False
    keyring = Path(os.environ.get(KEYRING_ENV, str(DEFAULT_KEYRING)))
    fetch_problems = [f"no {t}" for t in fetch_tools] + ([] if keyring.exists() else [f"no keyring {keyring}"])
    fetching = Capability("Debian fetching", mirror_ok and not fetch_problems,
                          "; ".join([*fetch_problems, mirror_words]))
    found.append(fetching)

    pinned = _pinned(store)
    if pinned is not None:
        versions = {arch: _version(pinned, arch) for arch in NAMES}
        found.append(Capability("pinned QEMU", all(versions.values()),
                                "cached: " + ", ".join(f"{a} {v or 'MISSING'}" for a, v in versions.items())))
    else:
        found.append(Capability("pinned QEMU", fetching.ok, "not cached yet: fetched from Debian 13's packages "
                                "on first use" + ("" if fetching.ok else ", which needs Debian fetching")))

    host = QemuInstall.host()
    host_versions = {arch: _version(host, arch) for arch in NAMES}
    found.append(Capability("host QEMU", None if any(host_versions.values()) else False,
                            ", ".join(f"{a} {v or 'missing'}" for a, v in host_versions.items())
                            + " (cells with qemu = \"host\")"))

    found.append(_kvm(store, pinned, host if host_versions["x86_64"] else None))

    stick = _tools(("mkfs.vfat", "mmd", "mcopy"))
    found.append(Capability("the stick", not stick, _lacking(stick, "the stick", missing) if stick else
                            "mkfs.vfat, mmd, mcopy present"))
    iso = _tools(("xorriso", "mkfs.btrfs"))
    found.append(Capability("the tinyboot ISO", None if not iso else False, _lacking(iso, "the tinyboot ISO", missing)
                            if iso else "xorriso and mkfs.btrfs (its persistent disk) present"))

    lava = shutil.which("lava-run")
    found.append(Capability("LAVA", None if lava else False, (
        f"lava-run at {lava}" + ("" if os.geteuid() == 0 else "; it runs as root only") if lava
        else _lacking(["lava-run"], "LAVA", missing))))

    # Snapshots save a VM by migrating it to a file: URI, which QEMU has since 8.2.
    if pinned is None:
        found.append(Capability("snapshots", None, "with the pinned QEMU (10.0) once it is fetched"))
    else:
        version = _version(pinned, "x86_64") or "?"
        usable = _as_tuple(version) >= SNAPSHOT_QEMU
        found.append(Capability("snapshots", None if usable else False, f"pinned QEMU {version}: " + (
            "saves to a file" if usable else f"needs QEMU >= {'.'.join(map(str, SNAPSHOT_QEMU))}")))

    size = sum(p.lstat().st_size for p in store.root.rglob("*") if p.is_file() and not p.is_symlink())
    free = shutil.disk_usage(store.root).free
    cache = f"{store.root}: {size / 1e9:.2f} GB in {len(store.entries())} entries, {free / 1e9:.1f} GB free"
    return Report(found, cache, missing)
