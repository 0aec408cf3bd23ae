"""The Debian packages bootmatrix needs on the host: the one list, with what each is for.

Standard library only, and runnable as a script, because `scripts/setup-host` runs it with the system's
python3 before any virtual environment exists (`python3 matrix/host_packages.py --install`);
`bootmatrix doctor` reads the same list to say what a host lacks and which capability that costs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPackage:
    name: str
    capability: str  # a capability of `bootmatrix doctor`
    why: str
    tests_only: bool = False  # installed for `make test` (setup-host --tests), not for the main job


PACKAGES = (
    HostPackage("qemu-system-x86", "host QEMU", "qemu-system-x86_64 (the host QEMU axis; the KVM probe)"),
    HostPackage("qemu-system-arm", "host QEMU", "qemu-system-aarch64"),
    HostPackage("qemu-system-misc", "host QEMU", "qemu-system-riscv64"),
    HostPackage("qemu-utils", "disks", "qemu-img: the tests' qcow2 disks"),
    HostPackage("apt", "Debian fetching", "private-state apt, to resolve the lock"),
    HostPackage("dpkg", "Debian fetching", "dpkg-deb: unpacking every package (the pinned QEMU, kernels, firmware)"),
    HostPackage("debian-archive-keyring", "Debian fetching", "verifying Debian 13's indices"),
    HostPackage("ca-certificates", "Debian fetching", "HTTPS mirrors"),
    HostPackage("apt-utils", "tests", "apt-ftparchive: the tests' throwaway Debian mirror"),
    HostPackage("gnupg", "tests", "signing that mirror's Release"),
    HostPackage("cpio", "tests", "reading our initramfs back with the real cpio"),
    HostPackage("xz-utils", "Debian fetching", "xz-compressed package data"),
    HostPackage("zstd", "Debian fetching", "zstd-compressed package data"),
    HostPackage("dosfstools", "the stick", "mkfs.vfat: the VFAT boot stick, without root"),
    HostPackage("mtools", "the stick", "mmd, mcopy: files into the stick, without root"),
    HostPackage("xorriso", "the tinyboot ISO", "writing the El Torito ISO without root"),
    HostPackage("btrfs-progs", "the tinyboot ISO", "mkfs.btrfs: the tinyboot app's persistent disk"),
    HostPackage("squashfs-tools", "the A/B image", "mksquashfs: the A/B slots' read-only roots"),
    HostPackage("cryptsetup-bin", "the A/B image", "veritysetup format: the slots' dm-verity hash trees, on files"),
    HostPackage("fdisk", "the A/B image", "sfdisk: the A/B disk's GPT, from a script with fixed GUIDs"),
    HostPackage("python3", "Python", "the Python bootmatrix runs on"),
    HostPackage("python3-venv", "Python", "the virtual environment the Makefile creates"),
    # Measured on Debian 12: 146 packages (14 of them upgrades), 48 MB downloaded, 200 MB on disk, 76 s.
    HostPackage("lava-dispatcher", "LAVA", "lava-run: exported LAVA jobs run on a real dispatcher", tests_only=True),
)


def installed(name: str) -> bool:
    found = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True,
                           check=False)
    return found.stdout.strip() == "installed"


def missing(packages: tuple[HostPackage, ...] = PACKAGES) -> list[HostPackage]:
    """The packages not installed (all of them, when this is no Debian-like host: no dpkg-query)."""
    if shutil.which("dpkg-query") is None:
        return list(packages)
    return [package for package in packages if not installed(package.name)]


def install_line(packages: list[HostPackage]) -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(p.name for p in packages)


def install(packages: list[HostPackage]) -> int:
    """apt-get install them, as root or through sudo; 1 with a line saying so when neither is possible."""
    if not packages:
        print("host packages: all present")
        return 0
    if shutil.which("apt-get") is None:
        print(f"host packages: no apt-get here; install by hand: {' '.join(p.name for p in packages)}", file=sys.stderr)
        return 1
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            print(f"host packages: need root or sudo to run: {install_line(packages)}", file=sys.stderr)
            return 1
        prefix = ["sudo"]
    names = [p.name for p in packages]
    print(f"host packages: installing {' '.join(names)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names]):
        done = subprocess.run([*prefix, *argv], env=env, check=False)
        if done.returncode != 0:
            print(f"host packages: {' '.join(argv)} failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--install"]:
        return install([p for p in missing() if not p.tests_only])
    if argv == ["--install", "--tests"]:
        return install(missing())
    if argv == ["--missing"]:
        print(" ".join(p.name for p in missing()))
        return 0
    print("usage: host_packages.py --install [--tests] | --missing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
