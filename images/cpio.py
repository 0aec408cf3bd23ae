"""A deterministic writer for the "newc" cpio format the Linux kernel unpacks as an initramfs.

Written here rather than shelling out to `cpio` because an initramfs needs a `dev/console` character
device inside the archive, and only root can create that on disk for `cpio -o` to pick up. Building the
archive in memory needs no root, and fixing inode numbers, owners and mtimes makes it bit-identical
from one build to the next.

Format rules (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header of
"070701" and thirteen 8-digit hex fields, the NUL-terminated name, padding to 4 bytes, the data, padding
to 4 bytes; the archive ends with an entry named "TRAILER!!!".
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. `path` is relative ("bin/sh"), never absolute."""

    path: str
    mode: int  # full st_mode: file type bits and permissions
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def _check_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or str(pure) == ".":
        raise ValueError(f"cpio member path must be relative and inside the archive: {path!r}")
    return str(pure)


@dataclass
class CpioArchive:
    """Collects entries, then writes them sorted by path so the output does not depend on call order.

    Parent directories are added implicitly (mode 0755), as the kernel needs a directory to exist
    before it can create anything inside it.
    """

    mtime: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)

    def add_entry(self, entry: Entry) -> None:
        path = _check_path(entry.path)
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            self.entries.setdefault(str(parent), Entry(str(parent), stat.S_IFDIR | 0o755))
            parent = parent.parent
        existing = self.entries.get(path)
        if existing is not None and not (stat.S_ISDIR(existing.mode) and stat.S_ISDIR(entry.mode)):
            raise ValueError(f"cpio member added twice: {path}")
        self.entries[path] = Entry(path, entry.mode, entry.data, entry.rdev_major, entry.rdev_minor)

    def add_dir(self, path: str, perm: int = 0o755) -> None:
        self.add_entry(Entry(path, stat.S_IFDIR | perm))

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self.add_entry(Entry(path, stat.S_IFREG | perm, data))

    def add_file_from(self, path: str, source: Path, perm: int | None = None) -> None:
        mode = perm if perm is not None else stat.S_IMODE(source.stat().st_mode)
        self.add_file(path, source.read_bytes(), mode)

    def add_symlink(self, path: str, target: str) -> None:
        self.add_entry(Entry(path, stat.S_IFLNK | 0o777, target.encode()))

    def add_char_device(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.add_entry(Entry(path, stat.S_IFCHR | perm, b"", major, minor))

    def to_bytes(self) -> bytes:
        out = bytearray()
        for inode, path in enumerate(sorted(self.entries), start=1):
            entry = self.entries[path]
            out += _member(path, entry, inode, self.mtime)
        out += _member(TRAILER, Entry(TRAILER, 0), 0, 0)
        return bytes(out)

    def write(self, target: Path) -> None:
        target.write_bytes(self.to_bytes())


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(path: str, entry: Entry, inode: int, mtime: int) -> bytes:
    name = path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        inode, entry.mode, 0, 0, nlink, mtime, len(entry.data),
        0, 0, entry.rdev_major, entry.rdev_minor, len(name), 0,
    )
    header = NEWC_MAGIC + b"".join(f"{value:08x}".encode() for value in fields)
    return header + name + _pad4(len(header) + len(name)) + entry.data + _pad4(len(entry.data))


def read_newc(blob: bytes) -> list[Entry]:
    """Parse a newc archive, enforcing the alignment rules the kernel relies on. For tests and tools."""
    entries: list[Entry] = []
    offset = 0
    while True:
        header = blob[offset : offset + 110]
        if len(header) < 110 or header[:6] != NEWC_MAGIC:
            raise ValueError(f"bad newc header at offset {offset}")
        values = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = values[1], values[6], values[9], values[10], values[11]
        name_start = offset + 110
        name = blob[name_start : name_start + namesize - 1].decode()
        if blob[name_start + namesize - 1] != 0:
            raise ValueError(f"name of member at {offset} is not NUL-terminated")
        data_start = name_start + namesize
        data_start += -data_start % 4
        data = blob[data_start : data_start + filesize]
        offset = data_start + filesize
        offset += -offset % 4
        if name == TRAILER:
            return entries
        entries.append(Entry(name, mode, data, rmajor, rminor))
