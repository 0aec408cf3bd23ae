"""A firmware set: Debian's SeaBIOS, edk2 (OVMF, AAVMF, riscv64), OpenSBI and U-Boot of one suite,
unpacked into the store, and read through the QEMU firmware descriptors Debian ships
(usr/share/qemu/firmware/*.json, the format libvirt uses) rather than by hard-coded file names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, built_from
from images.debian.lock import FIRMWARE_SET
from images.store import Store

RECIPE_VERSION = 1


class FirmwareMissing(Exception):
    """The set has no firmware of that kind (e.g. bookworm has no edk2 for riscv64)."""


@dataclass(frozen=True)
class Edk2:
    code: Path
    vars_template: Path
    descriptor: str  # file name of the descriptor that chose these, for results
    features: tuple[str, ...]

    @property
    def requires_smm(self) -> bool:
        return "requires-smm" in self.features


@dataclass(frozen=True)
class FirmwareSet:
    suite: str
    root: Path
    versions: dict[str, str]  # package -> version

    def _in_tree(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def descriptors(self) -> list[tuple[str, dict[str, Any]]]:
        folder = self.root / "usr/share/qemu/firmware"
        if not folder.is_dir():
            return []
        return [(p.name, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]

    def edk2(self, arch: str, secure: bool = False, enrolled: bool = False) -> Edk2:
        """The first descriptor (by priority) for a UEFI flash firmware of `arch` with these features."""
        for name, data in self.descriptors():
            mapping: dict[str, Any] = data.get("mapping", {})
            targets: list[dict[str, Any]] = data.get("targets", [])
            features: tuple[str, ...] = tuple(data.get("features", []))
            if "uefi" not in data.get("interface-types", []) or mapping.get("device") != "flash":
                continue
            if not any(t.get("architecture") == arch for t in targets):
                continue
            if ("secure-boot" in features) != secure or ("enrolled-keys" in features) != enrolled:
                continue
            code = self._in_tree(mapping["executable"]["filename"])
            template = self._in_tree(mapping["nvram-template"]["filename"])
            if code.exists() and template.exists():
                return Edk2(code, template, name, features)
        kind = "secure-boot " if secure else ""
        raise FirmwareMissing(f"firmware set {self.suite} has no {kind}UEFI firmware for {arch}")

    def file(self, relative: str, what: str) -> Path:
        path = self.root / relative
        if not path.exists():
            raise FirmwareMissing(f"firmware set {self.suite} has no {what} ({relative})")
        return path

    def seabios(self) -> Path:
        return self.file("usr/share/seabios/bios-256k.bin", "SeaBIOS")

    def uboot(self, board: str) -> Path:
        return self.file(f"usr/lib/u-boot/{board}/u-boot.bin", f"U-Boot for {board}")

    def opensbi(self, kind: str = "fw_dynamic") -> Path:
        return self.file(f"usr/lib/riscv64-linux-gnu/opensbi/generic/{kind}.bin", f"OpenSBI {kind}")


def firmware_set(store: Store, fetcher: DebianFetcher) -> FirmwareSet:
    suite = fetcher.lock.suite

    def build(content: Path, debs: Debs) -> None:
        for _, deb in debs[FIRMWARE_SET]:
            extract_deb(deb, content, lambda p: p.startswith(("usr/share/", "usr/lib/")) and "/doc/" not in p)

    root = built_from(
        store, fetcher, f"firmware-{suite}", [FIRMWARE_SET],
        inputs_of=lambda sets: {"recipe_version": RECIPE_VERSION, "suite": suite,
                                "debs": sorted(p.sha256 for p in sets[FIRMWARE_SET])},
        build=build,
    )
    return FirmwareSet(suite, root, {p.name: p.version for p in fetcher.packages(FIRMWARE_SET)})
