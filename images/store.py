"""Content-addressed artifact store shared by xdist workers and concurrent pytest sessions.

An entry is keyed by the sha256 of its recipe inputs (a JSON document: recipe name, recipe version,
hashes of everything the recipe reads). Building happens under a per-key file lock (filelock), into a
temporary folder beside the entries, and ends with an atomic rename, so readers see either nothing or
a complete entry. Each entry carries a manifest with the sha256 of its content tree; that hash is
checked when the entry is used (once per process), and an entry that fails it is moved aside and
rebuilt, never used. Like git's index, a stamp (`verified.json`) remembers the tree's stat signature
(every path with its type, mode, size, inode, mtime and ctime) from the last time the content hashed
right: while the signature is the same, nothing was written to the tree and it is not hashed again
(a warm run then stats the files instead of reading them); any write changes a ctime, and the tree is
hashed again.

Layout under the root:
    entries/<key>/manifest.json   name, inputs, content hash, size, created
    entries/<key>/content/...     the artifact
    entries/<key>/last-used       touched on every use, for `cache prune`
    entries/<key>/verified.json   content hash and stat signature when last verified
    locks/<key>.lock              filelock
    tmp/                          builds in progress and entries moved aside
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import platformdirs
from filelock import FileLock

from harness.paths import SPACE_ERRNOS, CannotWrite, NoSpace, as_cannot_write, writing
from images.tools import BuildError

log = logging.getLogger(__name__)

CACHE_ENV = "BOOTMATRIX_CACHE"


def default_cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("bootmatrix"))


def inputs_key(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON form of the inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def code_sha256(*modules: ModuleType) -> str:
    """sha256 of the source of the modules a recipe calls into, for its inputs: the recipe's own file
    is in them already, and without this a change to a shared writer (a GPT, a FAT) would not rebuild
    what it wrote."""
    digest = hashlib.sha256()
    for module in modules:
        if module.__file__ is None:
            raise ValueError(f"{module.__name__} has no source file to hash")
        digest.update(module.__name__.encode() + b"\0" + Path(module.__file__).read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TreePath:
    """One path of a content folder as the tree hash sees it: `detail` is a file's sha256, a link's
    target, or "" for a folder."""

    rel: str
    mode: int
    size: int
    detail: str

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


def tree_paths(root: Path) -> list[TreePath]:
    """Every path of a folder, sorted, each file read once; ValueError on anything but files, links and
    folders."""
    paths = []
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            detail = os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            detail = ""
        elif stat.S_ISREG(info.st_mode):
            detail = file_sha256(path)
        else:
            raise ValueError(f"unexpected file type in store entry: {path}")
        paths.append(TreePath(path.relative_to(root).as_posix(), info.st_mode, info.st_size, detail))
    return paths


def tree_digest(paths: list[TreePath]) -> str:
    """Hash of a folder from its tree_paths: every path, its type, executable bit and content (or link
    target)."""
    digest = hashlib.sha256()
    for entry in paths:
        if stat.S_ISLNK(entry.mode):
            digest.update(f"L {entry.rel} -> {entry.detail}\n".encode())
        elif stat.S_ISDIR(entry.mode):
            digest.update(f"D {entry.rel}\n".encode())
        else:
            digest.update(f"F {entry.rel} {'x' if entry.executable else '-'} {entry.detail}\n".encode())
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """Hash of a folder: every path, its type, executable bit and content (or link target), sorted."""
    return tree_digest(tree_paths(root))


def stat_signature(path: Path) -> list[int]:
    """Type and mode, size, inode, mtime and ctime: what any write, replacement or chmod changes (a write
    moves ctime even when size and mtime are put back), read without opening the file."""
    info = path.lstat()
    return [info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns]


def tree_signature(root: Path) -> str:
    """sha256 of every path's stat_signature: changes whenever anything in the tree is written, added,
    removed or replaced, without reading any file."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        digest.update(f"{path.relative_to(root).as_posix()} {stat_signature(path)}\n".encode())
    return digest.hexdigest()


class CorruptEntry(Exception):
    pass


NO_SPACE_WORDS = "No space left on device"  # how a build tool (cp, mkfs, go) says ENOSPC
# The staging folder of the build running in this thread (Store._build): scratch_dir() folders go in it,
# so what a killed build leaves is in the cache's tmp/, which the next Store cleans, not in /tmp.
_staging: contextvars.ContextVar[Path | None] = contextvars.ContextVar("bootmatrix_staging", default=None)


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for a recipe's intermediate files: inside the current build's staging folder
    (the system's temporary folder outside a build)."""
    return tempfile.TemporaryDirectory(prefix=f"bm-{prefix}-", dir=_staging.get())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Entry:
    key: str
    root: Path

    @property
    def content(self) -> Path:
        return self.root / "content"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        """The entry's manifest; CorruptEntry when it is not the object the store wrote."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise CorruptEntry(f"manifest.json is not JSON: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("content_sha256"), str):
            raise CorruptEntry(f"manifest.json has the wrong shape ({type(data).__name__}, not the store's object)")
        return data

    def last_used(self) -> float:
        marker = self.root / "last-used"
        return marker.stat().st_mtime if marker.exists() else self.manifest_path.stat().st_mtime


Builder = Callable[[Path], object]  # what it returns is ignored


class Store:
    """`get(name, inputs, build)` returns the content folder of a verified entry, building it once."""

    def __init__(self, root: Path | None = None, lock_timeout: float = 3600.0):
        self.root = root or default_cache_root()
        self.lock_timeout = lock_timeout
        if self.root.exists() and not self.root.is_dir():
            raise CannotWrite("the cache (BOOTMATRIX_CACHE)", self.root, "it is a file, not a folder")
        with writing("the cache (BOOTMATRIX_CACHE)", self.root):
            for sub in ("entries", "locks", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Remove what builds killed mid-way left in tmp/: a staging folder (`<key>.<pid>.<id>`) whose
        process is gone, or a discarded entry (`<key>.corrupt.<id>`) whose removal was cut short."""
        for leftover in (self.root / "tmp").iterdir():
            parts = leftover.name.split(".")
            dead = len(parts) == 3 and (parts[1] == "corrupt" or (parts[1].isdigit() and not _pid_alive(int(parts[1]))))
            if dead:
                shutil.rmtree(leftover, ignore_errors=True)

    def entry(self, key: str) -> Entry:
        return Entry(key, self.root / "entries" / key)

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{key}.lock"), timeout=self.lock_timeout)

    def find(self, name: str, inputs: Mapping[str, Any]) -> Path | None:
        """The content folder of a verified entry for these inputs, or None when it must be built (a
        recipe then fetches what it needs, and only then)."""
        key = inputs_key({"name": name, **inputs})
        with self.lock(key):
            return self._usable(self.entry(key), name)

    def _usable(self, entry: Entry, name: str) -> Path | None:
        if not entry.root.exists():
            return None
        try:
            self._verify(entry)
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError) as error:
            log.warning("store entry %s (%s) failed verification, rebuilding: %s", entry.key, name, error)
            self._discard(entry)
            return None
        self._touch(entry)
        return entry.content

    def get(self, name: str, inputs: Mapping[str, Any], build: Builder) -> Path:
        key = inputs_key({"name": name, **inputs})
        entry = self.entry(key)
        with self.lock(key):
            found = self._usable(entry, name)
            if found is not None:
                return found
            self._build(entry, name, inputs, build)
            self._touch(entry)
            return entry.content

    def discard(self, name: str, inputs: Mapping[str, Any]) -> None:
        """Remove an entry that verified but turned out unusable (a VM snapshot QEMU refused): the next
        `get` builds it again."""
        key = inputs_key({"name": name, **inputs})
        entry = self.entry(key)
        with self.lock(key):
            if entry.root.exists():
                self._discard(entry)

    def _verify(self, entry: Entry) -> None:
        """Content as built: by the stamp's stat signature while nothing changed (every use, even in the
        process that verified it before: a file damaged mid-session is noticed), else by hashing."""
        manifest = entry.manifest()
        signature = tree_signature(entry.content)
        stamp = entry.root / "verified.json"
        try:
            if json.loads(stamp.read_text()) == {"content_sha256": manifest["content_sha256"], "signature": signature}:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        actual = tree_sha256(entry.content)
        if actual != manifest["content_sha256"]:
            raise CorruptEntry(f"content hash {actual} != manifest {manifest['content_sha256']}")
        self._stamp_verified(entry, actual)

    @staticmethod
    def _stamp_verified(entry: Entry, content_sha256: str) -> None:
        stamp = entry.root / "verified.json"
        temporary = stamp.with_name(f".verified.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        temporary.write_text(json.dumps({"content_sha256": content_sha256,
                                         "signature": tree_signature(entry.content)}))
        os.replace(temporary, stamp)

    def _build(self, entry: Entry, name: str, inputs: Mapping[str, Any], build: Builder) -> None:
        staging = self.root / "tmp" / f"{entry.key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        content = staging / "content"
        started = time.monotonic()
        token = _staging.set(staging)  # scratch_dir() folders of this build go inside it
        try:
            try:
                content.mkdir(parents=True)
                self._run_build(build, name, content)
                manifest = {
                    "name": name,
                    "key": entry.key,
                    "inputs": dict(inputs),
                    "content_sha256": tree_sha256(content),
                    "size": sum(p.lstat().st_size for p in content.rglob("*")),
                    "created": time.time(),
                    "build_seconds": round(time.monotonic() - started, 3),
                }
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
                os.rename(staging, entry.root)
                self._stamp_verified(entry, str(manifest["content_sha256"]))
            except OSError as error:  # a full disk, a read-only cache: one line naming the cache
                space = error.errno in SPACE_ERRNOS
                problem = as_cannot_write(error, f"building {name}", self.root if space else None)
                if problem is None:
                    raise
                raise problem from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if entry.root.exists() and not (entry.root / "verified.json").exists():
                shutil.rmtree(entry.root, ignore_errors=True)  # renamed, never stamped: not kept half-made
            raise
        finally:
            _staging.reset(token)
        log.info("built store entry %s (%s) in %.1f s", entry.key[:12], name, time.monotonic() - started)

    def _run_build(self, build: Builder, name: str, content: Path) -> None:
        try:
            build(content)
        except BuildError as error:
            if NO_SPACE_WORDS in error.stderr or NO_SPACE_WORDS in str(error):
                raise NoSpace(f"building {name}", self.root) from error
            raise BuildError(f"building {name}: {error}", error.tool, error.stderr) from error
        except subprocess.CalledProcessError as error:  # a recipe's tool run without run_tool
            words = (error.stderr or b"").decode(errors="replace") if isinstance(error.stderr, bytes) else (
                error.stderr or "")
            raise BuildError(f"building {name}: {error}: {words.strip()[-2000:]}", str(error.cmd), words) from error

    def _discard(self, entry: Entry) -> None:
        aside = self.root / "tmp" / f"{entry.key}.corrupt.{uuid.uuid4().hex[:8]}"
        os.rename(entry.root, aside)
        shutil.rmtree(aside, ignore_errors=True)

    @staticmethod
    def _touch(entry: Entry) -> None:
        (entry.root / "last-used").touch()

    def entries(self) -> list[Entry]:
        root = self.root / "entries"
        return [self.entry(p.name) for p in sorted(root.iterdir()) if (p / "manifest.json").exists()]

    def prune(self, older_than_days: float | None = None) -> list[Entry]:
        """Remove entries unused for longer than `older_than_days` (all entries when None)."""
        removed = []
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for entry in self.entries():
            with self.lock(entry.key):
                if not entry.manifest_path.exists():  # another prune took it while we waited for the lock
                    continue
                if cutoff is None or entry.last_used() < cutoff:
                    self._discard(entry)
                    removed.append(entry)
        stale = time.time() - 3600  # a build still running in tmp/ is younger than this
        for leftover in (self.root / "tmp").iterdir():
            try:
                if leftover.lstat().st_mtime < stale:
                    shutil.rmtree(leftover, ignore_errors=True)
            except FileNotFoundError:  # another prune removed it first
                continue
        return removed
