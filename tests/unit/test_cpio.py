"""The newc writer: read back by the real cpio, and by our reader enforcing the kernel's alignment rules."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from images.cpio import CpioArchive, read_newc

needs_cpio = pytest.mark.bootmatrix_needs("cpio", "cpio", "read back the initramfs")


def sample() -> CpioArchive:
    archive = CpioArchive()
    archive.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    archive.add_file("etc/odd-size", b"12345")  # forces data padding
    archive.add_symlink("bin/sh", "busybox")
    archive.add_char_device("dev/console", 5, 1)
    archive.add_dir("proc")
    return archive


@needs_cpio
def test_real_cpio_lists_every_member_with_its_type() -> None:
    listing = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"], input=sample().to_bytes(), capture_output=True, check=True
    ).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
    assert set(lines) == {"bin", "bin/sh", "dev", "dev/console", "etc", "etc/odd-size", "init", "proc"}
    assert lines["dev/console"].startswith("c")
    assert lines["bin/sh"].startswith("l") and lines["bin/sh"].endswith("-> busybox")
    assert lines["init"].startswith("-rwxr-xr-x")


@needs_cpio
def test_real_cpio_extracts_the_same_bytes(tmp_path: Path) -> None:
    archive = sample()
    del archive.entries["dev/console"]  # creating a device node needs root
    subprocess.run(["cpio", "-i", "-d", "--quiet"], input=archive.to_bytes(), cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "etc/odd-size").read_bytes() == b"12345"
    assert (tmp_path / "bin/sh").is_symlink() and (tmp_path / "bin/sh").readlink() == Path("busybox")


def test_reader_round_trip_and_alignment() -> None:
    blob = sample().to_bytes()
    assert len(blob) % 4 == 0
    entries = {e.path: e for e in read_newc(blob)}
    assert entries["etc/odd-size"].data == b"12345"
    assert stat.S_ISCHR(entries["dev/console"].mode)
    assert (entries["dev/console"].rdev_major, entries["dev/console"].rdev_minor) == (5, 1)
    assert stat.S_ISLNK(entries["bin/sh"].mode) and entries["bin/sh"].data == b"busybox"
    assert list(entries) == sorted(entries)  # sorted, parents before children


def test_output_does_not_depend_on_insertion_order() -> None:
    first, second = CpioArchive(), CpioArchive()
    first.add_file("a/x", b"1")
    first.add_file("b/y", b"2")
    second.add_file("b/y", b"2")
    second.add_file("a/x", b"1")
    assert first.to_bytes() == second.to_bytes()


def test_owner_and_mtime_are_fixed() -> None:
    for entry_header in _headers(sample().to_bytes()):
        fields = [int(entry_header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        uid, gid, mtime = fields[2], fields[3], fields[5]
        assert (uid, gid, mtime) == (0, 0, 0)


def _headers(blob: bytes) -> list[bytes]:
    return [blob[i : i + 110] for i in range(0, len(blob), 4) if blob[i : i + 6] == b"070701"]


@pytest.mark.parametrize("bad", ["/abs", "../up", "a/../../b", ""])
def test_paths_outside_the_archive_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        CpioArchive().add_file(bad, b"")


def test_duplicate_member_is_refused() -> None:
    archive = CpioArchive()
    archive.add_file("x", b"1")
    with pytest.raises(ValueError, match="added twice"):
        archive.add_file("x", b"2")
