"""Unpack a .deb's data safely into a folder, without root and without dpkg's database.

`dpkg-deb --fsys-tarfile` turns the package (whatever its compression) into a tar stream, and each
member is written here by our own code, which needs nothing of tarfile but reading the stream: the
extraction filters of recent Pythons are missing from Debian 12's own python3 (3.11.2), and they were
defeated by CVE-2025-4517 (a symlink chain whose expansion exceeds PATH_MAX, which `os.path.realpath`
then stops expanding) even where present. The rules:
- a member's name must be relative, without `..`, and short enough that its path stays under PATH_MAX;
- the folders on the way to a member are resolved one component at a time as if the folder were `/`
  (a symlink is followed by reading it; an absolute target starts again at the folder; `..` at the
  folder stays there), so every write, link and folder lands inside, whatever links came before;
- the member itself is never followed: whatever is at its place (an earlier file or link) is replaced;
- device nodes and FIFOs are skipped (a package has no business creating them here); setuid, setgid and
  sticky bits are cleared; owners are not kept;
- absolute symlink targets are rewritten relative to the link, so they resolve inside the folder on the
  host too; a link that resolves outside the folder (on the host, at the end) rejects the package;
- a hard link must name a regular file already extracted.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

MAX_LINK_HOPS = 40  # as the kernel's limit for one path walk
PATH_MAX = 4096


class UnsafePackage(Exception):
    pass


def member_name(raw: str) -> str:
    """The member's path relative to the folder ("" for the folder itself); UnsafePackage when it is
    absolute or climbs out."""
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafePackage(f"member {raw!r} escapes the extraction folder")
    return "" if str(path) == "." else str(path)


class Tree:
    """The extraction folder, walked as a chroot would walk it."""

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)

    def host(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def _is_link(self, parts: list[str]) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.host(parts)).st_mode)
        except FileNotFoundError:
            return False
        except OSError as error:  # ENAMETOOLONG, ELOOP, ENOTDIR: nothing safe can be said; refuse
            raise UnsafePackage(f"cannot walk {'/'.join(parts)!r} inside the package: {error}") from error

    def resolve(self, relative: str, *, as_host: bool = False) -> list[str]:
        """The components of `relative`, every symlink expanded inside the folder. `as_host`: walk it as
        the host will, where `..` at the folder leaves it and an absolute target means the host's `/`:
        either is UnsafePackage. Strings are never expanded whole (no realpath), so no length limit
        can stop the walk halfway."""
        resolved: list[str] = []
        pending = [p for p in relative.split("/") if p not in ("", ".")]
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                elif as_host:
                    raise UnsafePackage(f"{relative!r} leads out of the extraction folder")
                continue
            candidate = [*resolved, part]
            if self._is_link(candidate):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise UnsafePackage(f"{relative!r}: more than {MAX_LINK_HOPS} symlinks on its way")
                target = os.readlink(self.host(candidate))
                if target.startswith("/"):
                    if as_host:
                        raise UnsafePackage(f"{relative!r} leads to the host's {target!r}")
                    resolved = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(part)
        return resolved

    def place(self, name: str) -> str:
        """The host path where member `name` goes: its folders resolved inside, itself not followed."""
        parent, _, leaf = name.rpartition("/")
        path = self.host([*self.resolve(parent), leaf])
        if len(path) >= PATH_MAX:
            raise UnsafePackage(f"member {name!r}: its path is longer than PATH_MAX here")
        return path


def _replace(path: str) -> None:
    """Make room for a new member at `path`: an earlier file or link goes; a folder stays only for a folder."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise UnsafePackage(f"{path}: a folder is in the way of a file or link")
    os.unlink(path)


def _write_file(path: str, data: IO[bytes], mode: int) -> None:
    _replace(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := data.read(1 << 20):
            out.write(chunk)
    os.chmod(path, mode, follow_symlinks=False)


def _symlink_target(name: str, target: str) -> str:
    """An absolute target made relative to the link's folder, so it resolves inside on the host too."""
    if not target.startswith("/"):
        return target
    depth = len(PurePosixPath(name).parent.parts) if "/" in name else 0
    return str(PurePosixPath(*([".."] * depth), target.lstrip("/")))


def _extract_member(tree: Tree, member: tarfile.TarInfo, name: str, archive: tarfile.TarFile) -> str | None:
    """Write one member; the host path written, or None when it is skipped (a device or FIFO)."""
    mode = (member.mode or 0) & 0o777
    if member.isdev() or member.isfifo():
        return None
    if member.isdir():
        path = tree.host(tree.resolve(name))
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode | 0o700)  # we must be able to write into it; no one else needs more than given
        return path
    path = tree.place(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if member.issym():
        target = _symlink_target(name, member.linkname)
        _replace(path)
        os.symlink(target, path)
        try:
            tree.resolve(os.path.relpath(path, tree.root), as_host=True)
        except UnsafePackage:
            os.unlink(path)
            raise UnsafePackage(f"symlink {name!r} -> {member.linkname!r} points outside the folder") from None
    elif member.islnk():
        source = tree.host(tree.resolve(member_name(member.linkname)))
        if not os.path.lexists(source) or not stat.S_ISREG(os.lstat(source).st_mode):
            raise UnsafePackage(f"hard link {name!r} -> {member.linkname!r} names no extracted regular file")
        _replace(path)
        os.link(source, path, follow_symlinks=False)
    elif member.isreg():
        data = archive.extractfile(member)
        if data is None:
            raise UnsafePackage(f"member {name!r}: no data")
        _write_file(path, data, mode)
    else:
        raise UnsafePackage(f"member {name!r}: unsupported type {member.type!r}")
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    return path


def extract_deb(deb: Path, dest: Path, wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Extract the data of `deb` into `dest`; `wanted(path)` selects members. Returns the paths written."""
    dest.mkdir(parents=True, exist_ok=True)
    tree = Tree(dest)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    written: list[str] = []
    links: list[str] = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member_name(member.name)
                if not name or (wanted is not None and not member.isdir() and not wanted(name)):
                    continue
                path = _extract_member(tree, member, name, archive)
                if path is not None and not member.isdir():
                    written.append(name)
                    if member.issym():
                        links.append(os.path.relpath(path, tree.root))
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise UnsafePackage(f"dpkg-deb could not read {deb} (exit {proc.returncode})")
    # A link made safe when written can be turned outwards by a later one on its way: judge them all again.
    for link in links:
        if os.path.lexists(tree.host([link])):
            tree.resolve(link, as_host=True)
    return written
