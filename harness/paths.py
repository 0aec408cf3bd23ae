"""One error for "cannot write here", whoever finds it: a results folder, the history, the cache, a disk
that filled up. The CLI and the pytest plugin each turn it into one line naming the path; nothing else
needs to know which OSError it was.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What the host's state is to blame for (not our code): these become CannotWrite.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG}
SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class CannotWrite(Exception):
    """`what` at `path` cannot be written: one line, naming both and why."""

    def __init__(self, what: str, path: Path | str, why: str):
        super().__init__(f"{what}: cannot write {path}: {why}")
        self.path = Path(path)
        self.why = why


class NoSpace(CannotWrite):
    """The file system of `path` is full (or the user's quota is)."""

    def __init__(self, what: str, path: Path | str):
        super().__init__(what, path, "no space left on its file system")


def why(error: OSError) -> str:
    """An OSError in words a person expects."""
    words = {
        errno.ENOSPC: "no space left on its file system", errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "its file system is read-only", errno.EACCES: "permission denied",
        errno.EPERM: "not permitted", errno.ENOTDIR: "a part of it is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file", errno.EEXIST: "it exists and is not a folder",
        errno.ELOOP: "a symlink loop", errno.ENAMETOOLONG: "its name is too long",
    }
    return words.get(error.errno or 0, error.strerror or str(error))


def as_cannot_write(error: OSError, what: str, path: Path | str | None = None) -> CannotWrite | None:
    """The CannotWrite an OSError means, or None when it is not a "cannot write here" error."""
    if error.errno not in WRITE_ERRNOS:
        return None
    where = path if path is not None else (error.filename or "?")
    if error.errno in SPACE_ERRNOS:
        return NoSpace(what, where)
    return CannotWrite(what, where, why(error))


@contextmanager
def writing(what: str, path: Path | str | None = None) -> Iterator[None]:
    """Around code that writes `what` (at `path`): a write error of the host's becomes CannotWrite."""
    try:
        yield
    except OSError as error:
        problem = as_cannot_write(error, what, path)
        if problem is None:
            raise
        raise problem from error


def writable_folder(path: Path, what: str) -> Path:
    """`path` as a folder this process can write into (made when missing), or CannotWrite naming it."""
    with writing(what, path):
        if path.exists() and not path.is_dir():
            raise CannotWrite(what, path, "it is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise CannotWrite(what, path, "permission denied")
        probe = path / f".bootmatrix-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    return path
