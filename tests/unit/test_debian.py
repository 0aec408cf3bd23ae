"""The Debian image's pure parts (issue 23): systemd's timeline parsed, the lock's sets, the loaders'
command line, the build tree's lists, and a lock re-resolved one set at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.debian.lock import (
    DEBIAN_ROOT_PACKAGES,
    LockedPackage,
    Lockfile,
    debian_root_set,
    debian_root_tools_set,
    resolve_lock,
)
from images.recipes.debian import fixed_uuid
from images.recipes.debian_disk import ROOT_TYPES, esp_files, kernel_options
from matrix.userspace import parse_blame, parse_startup, seconds

UEFI_BOOT = ("Startup finished in 2.019s (firmware) + 312ms (loader) + 3.770s (kernel) + 8.102s (initrd) "
             "+ 1min 4.550s (userspace) = 1min 18.754s\nmulti-user.target reached after 1min 4.512s in userspace.\n")
BIOS_BOOT = "Startup finished in 4.118s (kernel) + 10.009s (initrd) + 52.8s (userspace) = 1min 6.927s\n"
BLAME = """  21.402s systemd-udev-trigger.service
1min 2.5s dev-vda2.device
    812ms systemd-networkd.service
     95us tmp.mount
"""


def test_systemd_spans_are_read_in_seconds() -> None:
    assert seconds("1min 4.550s") == pytest.approx(64.55)
    assert seconds("312ms") == pytest.approx(0.312)
    assert seconds("1h 2min 3s") == pytest.approx(3723)
    assert seconds("12us") == pytest.approx(12e-6)
    with pytest.raises(ValueError, match="not a systemd time span"):
        seconds("soon")


def test_the_startup_line_gives_each_phase_it_names() -> None:
    assert parse_startup(UEFI_BOOT) == pytest.approx(
        {"firmware": 2.019, "loader": 0.312, "kernel": 3.77, "initrd": 8.102, "userspace": 64.55})
    assert parse_startup(BIOS_BOOT) == pytest.approx({"kernel": 4.118, "initrd": 10.009, "userspace": 52.8})


def test_a_boot_that_has_not_finished_is_an_error_not_zeros() -> None:
    with pytest.raises(ValueError, match="no 'Startup finished' line"):
        parse_startup("Bootup is not yet finished (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0).")


def test_blame_gives_the_slowest_units_first() -> None:
    units = parse_blame(BLAME)
    assert [name for name, _ in units] == ["systemd-udev-trigger.service", "dev-vda2.device",
                                           "systemd-networkd.service"]
    assert [seconds for _, seconds in units] == pytest.approx([21.402, 62.5, 0.812])


def test_the_shipped_lock_has_a_root_and_its_build_tools_per_arch() -> None:
    lock = Lockfile.load()
    for arch in ("x86_64", "aarch64", "riscv64"):
        names = {p.name for p in lock.packages(debian_root_set(arch))}
        assert {"systemd", "systemd-sysv", "dpkg", "base-files", "initramfs-tools", "mawk"} <= names
        assert set(DEBIAN_ROOT_PACKAGES) <= names
        assert any(name.startswith("linux-image-6.") for name in names)
        assert "libarchive13t64" in {p.name for p in lock.packages(debian_root_tools_set(arch))}
        assert "libarchive13t64" not in names  # only the throwaway build tree gets it


def test_every_loader_boots_the_root_by_its_fixed_partition_uuid(tmp_path: Path) -> None:
    options = kernel_options("aarch64")
    assert f"root=PARTUUID={fixed_uuid('aarch64', 'root')} ro console=ttyAMA0" in options
    assert "systemd.firstboot=off" in options and "net.ifnames=0" in options
    assert fixed_uuid("aarch64", "root") == fixed_uuid("aarch64", "root") != fixed_uuid("riscv64", "root")
    assert len(set(ROOT_TYPES.values())) == 3

    class Root:
        kernel, initrd, kernel_release = tmp_path / "k", tmp_path / "i", "6.12"

    x86 = esp_files("x86_64", Root(), tmp_path)  # type: ignore[arg-type]
    entry = x86["loader/entries/debian.conf"]
    assert isinstance(entry, bytes) and f"options {kernel_options('x86_64')}\n".encode() in entry
    syslinux = x86["syslinux/syslinux.cfg"]
    assert isinstance(syslinux, bytes) and f"APPEND {kernel_options('x86_64')}\n".encode() in syslinux
    assert "EFI/BOOT/BOOTX64.EFI" in x86
    riscv = esp_files("riscv64", Root(), tmp_path)  # type: ignore[arg-type]
    assert "EFI/BOOT/BOOTRISCV64.EFI" in riscv and not any(k.startswith("syslinux/") for k in riscv)


def test_a_lock_re_resolved_for_one_set_keeps_every_other_set(tmp_path: Path, monkeypatch) -> None:
    old = LockedPackage("a", "amd64", "1", "0" * 64, 1, "pool/main/a/a/a_1_amd64.deb")
    new = LockedPackage("b", "amd64", "2", "1" * 64, 2, "pool/main/b/b/b_2_amd64.deb")
    previous = Lockfile("trixie", {"firmware": [old], "iso-tools": [old]}, tmp_path / "l.json")
    asked: list[str] = []

    def resolver(name: str):
        def resolve(index: object) -> list[LockedPackage]:
            asked.append(name)
            return [new]
        return resolve


    class Index:
        suite = "trixie"

    resolvers = {name: resolver(name) for name in ("firmware", "iso-tools", "debian-root-x86_64")}
    monkeypatch.setattr("images.debian.lock.set_resolvers", lambda suite: dict(resolvers))
    resolution = resolve_lock(Index(), tmp_path / "l.json", previous, only=frozenset({"iso-tools"}))  # type: ignore[arg-type]
    assert asked == ["iso-tools"]
    assert resolution.lock.sets == {"firmware": [old], "iso-tools": [new]}


def test_the_debian_boot_timeline_has_the_initrd_and_userspace_between_kernel_and_login() -> None:
    from matrix.boot import boot_timeline
    from matrix.kinds.debian import DEBIAN

    timeline = boot_timeline(DEBIAN.readiness(None, None))  # type: ignore[arg-type]
    # Lines of a real x86_64 OVMF boot (results of `bootmatrix run matrix/debian.toml`), in order.
    for t, line in enumerate([
        "BdsDxe: loading Boot0001 \"UEFI Misc Device\"", "BdsDxe: starting Boot0001",
        "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path",
        "[    6.897737] Run /init as init process", "Loading, please wait...",
        "[   16.278270] systemd[1]: systemd 257.13-1~deb13u1 running in system mode (+PAM +AUDIT)",
        "Debian GNU/Linux 13 bootmatrix-debian ttyS0", "", "bootmatrix-debian login: ",
    ], start=1):
        timeline.observe(line + "\n", float(t))
    assert timeline.as_dict() == {"first-output": 1.0, "firmware": 1.0, "bootloader": 2.0, "kernel": 3.0,
                                  "initrd": 4.0, "userspace": 6.0, "init": 9.0}
