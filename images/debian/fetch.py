"""Locked .debs in the cache, downloaded straight from their pool paths and verified before anyone uses them.

Downloads land in `<cache>/debs/` under their Debian file names. A file there counts as verified when
its stamp (`.verified/<name>.json`: sha256, size, inode, mtime, ctime as they were when it was hashed)
still matches its stat, so a warm run neither hashes the .debs again nor touches the network. A file
without a valid stamp is hashed once; one that fails is fetched again.

Drift (the `uv sync` / `uv sync --locked` split): when a locked pool file is really gone (404), the
default is to re-resolve just that set against the mirror's current index, say loudly which packages
moved (old -> new), remember the result in the cache (`debs/resolved-<suite>.json`, used until the lock
changes) and go on; `locked=True` (`--locked`, strict, CI) fails instead, naming the packages and the
command that refreshes the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import urllib3
from filelock import FileLock

from images.debian.apt import AptError
from images.debian.download import Gone, Wanted, download_all, pool
from images.debian.lock import Indexes, LockedPackage, LockError, Lockfile, resolve_set
from images.debian.mirror import Mirror, MirrorNotFound, find_mirror
from images.store import Store, file_sha256, stat_signature

log = logging.getLogger(__name__)

LOCKED_ENV = "BOOTMATRIX_LOCKED"
DOWNLOAD_DIRS = ("debs", "apt")  # below the cache root: verified .debs, and the private apt's state


class FetchError(Exception):
    pass


class LockDrift(FetchError):
    """Locked files are gone from the mirror and re-resolving was not allowed (or not possible)."""


def share_downloads(cache_root: Path, target_root: Path) -> None:
    """Let a second cache at `target_root` use the packages this one downloaded (symlinks), so that
    building everything again there repeats the builds and not the downloads."""
    target_root.mkdir(parents=True, exist_ok=True)
    for name in DOWNLOAD_DIRS:
        (cache_root / name).mkdir(exist_ok=True)
        (target_root / name).symlink_to(cache_root / name, target_is_directory=True)


def _set_digest(packages: list[LockedPackage]) -> str:
    return hashlib.sha256(json.dumps([asdict(p) for p in packages], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Moved:
    """One package of a re-resolved set: what the lock said and what is used instead (None: not any more)."""

    set_name: str
    name: str
    arch: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        return f"{self.name}:{self.arch} {self.old or '(new)'} -> {self.new or '(dropped)'}"


def moved(set_name: str, old: list[LockedPackage], new: list[LockedPackage]) -> list[Moved]:
    before = {(p.name, p.arch): p.version for p in old}
    after = {(p.name, p.arch): p.version for p in new}
    return [
        Moved(set_name, name, arch, before.get((name, arch)), after.get((name, arch)))
        for name, arch in sorted(before.keys() | after.keys())
        if before.get((name, arch)) != after.get((name, arch))
    ]


def locked_by_default() -> bool:
    return os.environ.get(LOCKED_ENV, "") not in ("", "0")


class DebianFetcher:
    def __init__(self, cache_root: Path, lock: Lockfile, mirror: Mirror | None = None, locked: bool | None = None):
        self.lock = lock
        self.locked = locked_by_default() if locked is None else locked
        self.debs = cache_root / DOWNLOAD_DIRS[0]
        self.stamps = self.debs / ".verified"
        self.locks = self.debs / ".locks"
        for folder in (self.debs, self.stamps, self.locks):
            folder.mkdir(parents=True, exist_ok=True)
        self.apt_root = cache_root / DOWNLOAD_DIRS[1]
        self.resolved_path = self.debs / f"resolved-{lock.suite}.json"
        self._mirror = mirror
        self._http: urllib3.PoolManager | None = None
        self._index: Indexes | None = None
        self.drift: list[Moved] = []  # what this process uses instead of the lock, for reports
        # Recipes may build in threads (the mostly-source image does); what a set stands for and getting
        # its files (the mirror, the HTTP pool, re-resolving) happen one set at a time.
        self._serial = threading.RLock()

    # -- what a set is -------------------------------------------------------------------------------

    def mirror(self) -> Mirror:
        if self._mirror is None:
            self._mirror = find_mirror()
        return self._mirror

    def index(self) -> Indexes:
        if self._index is None:
            self._index = Indexes(self.apt_root, self.mirror(), self.lock.suite)
        return self._index

    def _overrides(self) -> dict[str, dict[str, object]]:
        try:
            data: dict[str, dict[str, object]] = json.loads(self.resolved_path.read_text())
            return data
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def packages(self, set_name: str) -> list[LockedPackage]:
        """The packages a set stands for now: the lock's, or (not in locked mode) the set re-resolved
        earlier because locked files were gone, for as long as the lock's own set is unchanged."""
        with self._serial:
            return self._packages(set_name)

    def _packages(self, set_name: str) -> list[LockedPackage]:
        locked = self.lock.packages(set_name)
        override = self._overrides().get(set_name)
        if override is None or override.get("replaces") != _set_digest(locked):
            return locked
        if self.locked:
            raise LockDrift(self._drift_message(set_name, locked, "were gone from the mirror earlier"))
        packages = [LockedPackage(**p) for p in override["packages"]]  # type: ignore[attr-defined]
        changes = moved(set_name, locked, packages)
        if not any(m.set_name == set_name for m in self.drift):
            self.drift += changes
            log.warning("package set %s: using versions re-resolved earlier (%s); run `bootmatrix lock`",
                        set_name, "; ".join(map(str, changes)))
        return packages

    # -- getting the files ---------------------------------------------------------------------------

    def path(self, package: LockedPackage) -> Path:
        return self.debs / package.ref.deb_name

    def _stamp(self, package: LockedPackage) -> Path:
        return self.stamps / f"{package.ref.deb_name}.json"

    def verified(self, package: LockedPackage) -> bool:
        """True when the cached file is the locked one: by its stamp when the file is unchanged since it
        was hashed, else by hashing it again (and stamping it when it passes)."""
        path = self.path(package)
        try:
            signature = stat_signature(path)
        except FileNotFoundError:
            return False
        try:
            stamp = json.loads(self._stamp(package).read_text())
            if stamp == {"sha256": package.sha256, "signature": signature}:
                return True
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if path.stat().st_size != package.size or file_sha256(path) != package.sha256:
            return False
        self._write_stamp(package)
        return True

    def _write_stamp(self, package: LockedPackage) -> None:
        stamp = self._stamp(package)
        temporary = stamp.with_name(f".{stamp.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"sha256": package.sha256, "signature": stat_signature(self.path(package))}))
        os.replace(temporary, stamp)

    def fetch_set(self, set_name: str) -> list[tuple[LockedPackage, Path]]:
        """The set's packages, each verified in the cache; downloads what is missing (see the module doc)."""
        with self._serial:
            return self._fetch_set(set_name)

    def _fetch_set(self, set_name: str) -> list[tuple[LockedPackage, Path]]:
        packages = self.packages(set_name)
        missing = [p for p in packages if not self.verified(p)]
        if missing:
            gone = self._download(set_name, missing)
            if gone:
                packages = self._re_resolve(set_name, packages, gone)
        return [(p, self.path(p)) for p in packages]

    def _download(self, set_name: str, packages: list[LockedPackage]) -> list[LockedPackage]:
        """Download `packages`; the ones the mirror says are gone are returned, anything else fails."""
        try:
            mirror = self.mirror()
        except MirrorNotFound as error:
            raise FetchError(str(error)) from error
        if self._http is None:
            self._http = pool()
        by_dest = {self.path(p): p for p in packages}

        @contextmanager
        def claim(wanted: Wanted) -> Iterator[bool]:
            # One download per file across threads, processes and sessions: the second waits for the
            # first, then finds the file verified. Held for one file only, so two processes never wait
            # on each other in a cycle.
            package = by_dest[wanted.dest]
            with FileLock(str(self.locks / f"{wanted.dest.name}.lock"), timeout=3600):
                # A cached file that fails the lock's hash is not used, and not deleted either: the
                # download replaces it only once verified bytes arrived (when the lock itself was
                # edited wrongly, the good file of a shared debs/ folder survives the refused download).
                needed = not self.verified(package)
                yield needed
                if needed and wanted.dest.exists():
                    self._write_stamp(package)

        wanted = [Wanted(f"{mirror.uri}/{p.filename}", self.path(p), p.size, p.sha256) for p in packages]
        failures = download_all(self._http, wanted, f"{self.lock.suite} {set_name}", guard=claim)
        gone = [by_dest[d] for d, e in failures.items() if isinstance(e, Gone)]
        other = {d: e for d, e in failures.items() if not isinstance(e, Gone)}
        if other:
            lines = "\n".join(f"  {by_dest[d].ref.spec}: {e}" for d, e in sorted(other.items()))
            raise FetchError(f"could not download {len(other)} locked package(s) of set {set_name}:\n{lines}")
        return gone

    def _drift_message(self, set_name: str, gone: list[LockedPackage], how: str) -> str:
        names = ", ".join(p.ref.spec for p in gone)
        return (
            f"locked package(s) of set {set_name} {how}: {names}. Refresh the lock with `bootmatrix lock` "
            f"(and commit {self.lock.path.name}), or run without --locked / BOOTMATRIX_LOCKED / strict mode "
            "to re-resolve the set against the mirror's current index"
        )

    def _re_resolve(
        self, set_name: str, packages: list[LockedPackage], gone: list[LockedPackage]
    ) -> list[LockedPackage]:
        if self.locked:
            raise LockDrift(self._drift_message(set_name, gone, "are gone from the mirror (HTTP 404)"))
        try:
            current = resolve_set(self.index(), set_name, packages)
        except (AptError, LockError, MirrorNotFound) as error:
            raise LockDrift(
                f"{self._drift_message(set_name, gone, 'are gone from the mirror (HTTP 404)')}; "
                f"re-resolving failed: {error}"
            ) from error
        changes = moved(set_name, self.lock.packages(set_name), current)
        self.drift = [m for m in self.drift if m.set_name != set_name] + changes
        banner = (
            f"bootmatrix: WARNING: locked package(s) of set {set_name} are gone from the mirror "
            f"({', '.join(p.ref.spec for p in gone)}); re-resolved against the current index:\n"
            + "".join(f"    {m}\n" for m in changes)
            + f"  These versions are recorded in boot.json and the run summary. Run `bootmatrix lock` to "
            f"refresh {self.lock.path.name}; --locked (or strict/CI) would have failed here."
        )
        log.warning("%s", banner)
        print(banner, file=sys.stderr)
        missing = [p for p in current if not self.verified(p)]
        if missing:
            still_gone = self._download(set_name, missing)
            if still_gone:
                raise LockDrift(
                    f"re-resolved package(s) of set {set_name} are missing from the mirror too: "
                    f"{', '.join(p.ref.spec for p in still_gone)}: the mirror is inconsistent, try again later"
                )
        with FileLock(str(self.locks / f"{self.resolved_path.name}.lock"), timeout=60):
            overrides = self._overrides()
            overrides[set_name] = {"replaces": _set_digest(self.lock.packages(set_name)),
                                   "packages": [asdict(p) for p in current]}
            temporary = self.resolved_path.with_name(f".{self.resolved_path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(overrides, indent=1, sort_keys=True))
            os.replace(temporary, self.resolved_path)
        return current


Packages = dict[str, list[LockedPackage]]
Debs = dict[str, list[tuple[LockedPackage, Path]]]


def built_from(
    store: Store, fetcher: DebianFetcher, name: str, set_names: list[str], *,
    inputs_of: Callable[[Packages], Mapping[str, Any]], build: Callable[[Path, Debs], None],
) -> Path:
    """A store entry made from package sets: looked up by the packages the sets stand for, and only
    when it must be built are the .debs fetched (a warm run touches neither the network nor the .debs).
    When fetching re-resolves a set (locked files gone), the entry is keyed by what was really used."""
    found = store.find(name, inputs_of({s: fetcher.packages(s) for s in set_names}))
    if found is not None:
        return found
    debs = {s: fetcher.fetch_set(s) for s in set_names}
    used = {s: [package for package, _ in pairs] for s, pairs in debs.items()}
    return store.get(name, inputs_of(used), lambda content: build(content, debs))
