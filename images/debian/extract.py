"""Unpack a .deb's data safely into a folder, without root and without dpkg's database.

`dpkg-deb --fsys-tarfile` turns the package (whatever its compression) into a tar stream; each member
goes through `safe_member` before it touches the disk:
- absolute paths and `..` are refused (the package is rejected: it is malformed or hostile);
- device nodes and FIFOs are skipped (a package has no business creating them here);
- setuid, setgid and sticky bits are cleared;
- absolute symlink targets are rewritten relative to the member, so they resolve inside the folder;
then Python's own `tarfile.data_filter` checks that nothing, links included, points outside.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath


class UnsafePackage(Exception):
    pass


def safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafePackage(f"member {member.name!r} escapes the extraction folder")
    if member.isdev() or member.isfifo():
        return None
    member = member.replace(mode=(member.mode or 0) & 0o777, uid=0, gid=0, uname="", gname="", deep=False)
    if member.issym() and member.linkname.startswith("/"):
        target = PurePosixPath(member.linkname.lstrip("/"))
        depth = len(PurePosixPath(member.name.removeprefix("./")).parent.parts)
        member = member.replace(linkname=str(PurePosixPath(*([".."] * depth), target)), deep=False)
    if member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or ".." in link.parts:
            raise UnsafePackage(f"hard link {member.name!r} -> {member.linkname!r} escapes the folder")
    return tarfile.data_filter(member, dest)


def extract_deb(deb: Path, dest: Path, wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Extract the data of `deb` into `dest`; `wanted(path)` selects members. Returns the paths written."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    written = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if not name or (wanted is not None and not member.isdir() and not wanted(name)):
                    continue
                filtered = safe_member(member, str(dest))
                if filtered is None:
                    continue
                archive.extract(filtered, dest, filter="fully_trusted")
                if not member.isdir():
                    written.append(name)
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise UnsafePackage(f"dpkg-deb could not read {deb} (exit {proc.returncode})")
    return written
