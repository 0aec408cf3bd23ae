"""Unpacking .debs: hostile members are refused or neutralised before they touch the disk."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from images.debian.extract import UnsafePackage, extract_deb

pytestmark = pytest.mark.bootmatrix_needs("dpkg-deb", "dpkg", "build the test packages")


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def make_deb(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    control = tarfile.TarInfo("./control")
    text = b"Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: t\n"
    deb = tmp_path / "t.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.gz", _tar([(control, text)])),
                         ("data.tar.gz", _tar(members))]))
    return deb


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.linkname = kind, mode, link
    return member


def test_regular_tree_with_absolute_symlink_stays_inside(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, [
        (info("./usr/", tarfile.DIRTYPE, 0o755), b""),
        (info("./usr/lib/", tarfile.DIRTYPE, 0o755), b""),
        (info("./usr/lib/real.bin"), b"payload"),
        (info("./usr/share/", tarfile.DIRTYPE, 0o755), b""),
        (info("./usr/share/link.bin", tarfile.SYMTYPE, link="/usr/lib/real.bin"), b""),
    ])
    dest = tmp_path / "out"
    written = extract_deb(deb, dest)
    assert sorted(written) == ["usr/lib/real.bin", "usr/share/link.bin"]
    link = dest / "usr/share/link.bin"
    assert not link.readlink().is_absolute()
    assert link.resolve() == (dest / "usr/lib/real.bin").resolve()
    assert link.read_bytes() == b"payload"


def test_setuid_bits_are_cleared(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, [(info("./su", mode=0o4755), b"x"), (info("./sg", mode=0o2755), b"y")])
    dest = tmp_path / "out"
    extract_deb(deb, dest)
    assert (dest / "su").stat().st_mode & 0o7777 == 0o755
    assert (dest / "sg").stat().st_mode & 0o7777 == 0o755


def test_device_nodes_are_skipped(tmp_path: Path) -> None:
    device = info("./dev/sda", tarfile.BLKTYPE)
    device.devmajor, device.devminor = 8, 0
    deb = make_deb(tmp_path, [(device, b""), (info("./ok"), b"ok")])
    dest = tmp_path / "out"
    assert extract_deb(deb, dest) == ["ok"]
    assert not (dest / "dev/sda").exists()


@pytest.mark.parametrize("name", ["/etc/passwd", "./../escape", "./a/../../escape"])
def test_paths_that_escape_are_refused(tmp_path: Path, name: str) -> None:
    deb = make_deb(tmp_path, [(info(name), b"evil")])
    with pytest.raises(UnsafePackage):
        extract_deb(deb, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_relative_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, [(info("./evil", tarfile.SYMTYPE, link="../../../etc/passwd"), b"")])
    with pytest.raises(UnsafePackage, match="points outside"):
        extract_deb(deb, tmp_path / "out")


def test_a_link_turned_outwards_by_a_later_link_is_refused(tmp_path: Path) -> None:
    """`a -> b/..` is harmless while b is a folder; once b becomes `../..` the host would leave the folder."""
    deb = make_deb(tmp_path, [
        (info("./b/", tarfile.DIRTYPE, 0o755), b""),
        (info("./a", tarfile.SYMTYPE, link="b/.."), b""),
        (info("./c", tarfile.SYMTYPE, link="../.."), b""),
    ])
    with pytest.raises(UnsafePackage, match="points outside"):
        extract_deb(deb, tmp_path / "out")


def test_writes_through_links_stay_inside(tmp_path: Path) -> None:
    """A link to a folder outside, then a file under it: the file lands inside (absolute targets are
    rooted at the folder), never in the host's folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    deb = make_deb(tmp_path, [
        (info("./etc", tarfile.SYMTYPE, link=str(outside)), b""),
        (info("./etc/passwd"), b"evil"),
    ])
    extract_deb(deb, tmp_path / "out")
    assert list(outside.iterdir()) == []
    assert (tmp_path / "out" / str(outside).lstrip("/") / "passwd").read_bytes() == b"evil"


def test_cve_2025_4517_symlink_chain_past_path_max_writes_nothing_outside(tmp_path: Path) -> None:
    """After the regression test of CPython's fix: nested folders and one-letter links to them, sized so
    that the names fit PATH_MAX but their expansion does not; a last link climbs back out through the
    chain, then a hard link and a write go through it to a file beside the folder."""
    dest = tmp_path / "out"
    dest.mkdir()
    flag = tmp_path / "flag"
    flag.write_text("original")
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(dest, "PC_PATH_MAX") - len(str(dest)) - 1) // (len(steps) + 1))
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    folder = ""
    for step in steps:
        members.append((info(f"./{folder}{component}/", tarfile.DIRTYPE, 0o777), b""))
        members.append((info(f"./{folder}{step}", tarfile.SYMTYPE, link=component), b""))
        folder += f"{component}/"
    long_link = "/".join(steps) + "/" + "l" * 254
    members += [
        (info(f"./{long_link}", tarfile.SYMTYPE, link="/".join([".."] * len(steps))), b""),
        (info("./escape", tarfile.SYMTYPE, link=f"{long_link}/.."), b""),
        (info("./flaglink", tarfile.LNKTYPE, link="escape/flag"), b""),
        (info("./flaglink"), b"overwritten"),
        (info("./escape/newfile"), b"new"),
    ]
    deb = make_deb(tmp_path, members)
    with pytest.raises(UnsafePackage):
        extract_deb(deb, dest)
    assert flag.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flag", "out", "t.deb"]


def test_selection_extracts_only_wanted_files(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, [(info("./a"), b"1"), (info("./b"), b"2")])
    assert extract_deb(deb, tmp_path / "out", lambda p: p == "b") == ["b"]
    assert not (tmp_path / "out/a").exists()
