"""The pinned QEMU: Debian's qemu-system-{x86,arm,riscv} and their library closure, unpacked into a prefix.

The closure was resolved by apt against an empty dpkg status (see images/debian/lock.py), so the prefix
holds its own C library and loader; harness.qemu.QemuInstall starts it through that loader.
"""

from __future__ import annotations

from pathlib import Path

from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import qemu_set
from images.store import Store

RECIPE_VERSION = 1
SKIPPED_PREFIXES = ("usr/share/doc/", "usr/share/man/", "usr/share/locale/", "usr/share/lintian/", "etc/")


def _wanted(path: str) -> bool:
    return not path.startswith(SKIPPED_PREFIXES)


def pinned_qemu_prefix(store: Store, fetcher: DebianFetcher) -> Path:
    qemu = qemu_set()

    def build(content: Path, debs: Debs) -> None:
        for _, deb in debs[qemu]:
            extract_deb(deb, content, _wanted)

    def inputs(sets: Packages) -> dict[str, object]:
        return {"recipe_version": RECIPE_VERSION, "debs": sorted(p.sha256 for p in sets[qemu])}

    return built_from(store, fetcher, "qemu-prefix", [qemu], inputs_of=inputs, build=build)
