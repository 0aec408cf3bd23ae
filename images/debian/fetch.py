"""Download locked .debs into the cache, verified against the lock file before anyone uses them.

Downloads land in `<cache>/debs/` under their Debian file names. A file already there is used only if
its sha256 matches the lock; otherwise it is fetched again. apt's index is fetched once per cache (and
again only when a locked version is missing from it), so a warm cache needs no network at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from images.debian.apt import AptError, PrivateApt
from images.debian.lock import LockedPackage, Lockfile
from images.debian.mirror import Mirror, find_mirror
from images.store import file_sha256


class FetchError(Exception):
    pass


DOWNLOAD_DIRS = ("debs", "apt")  # below the cache root: verified .debs, and the private apt's state


def share_downloads(cache_root: Path, target_root: Path) -> None:
    """Let a second cache at `target_root` use the packages this one downloaded (symlinks), so that
    building everything again there repeats the builds and not the downloads."""
    target_root.mkdir(parents=True, exist_ok=True)
    for name in DOWNLOAD_DIRS:
        (cache_root / name).mkdir(exist_ok=True)
        (target_root / name).symlink_to(cache_root / name, target_is_directory=True)


class DebianFetcher:
    def __init__(self, cache_root: Path, lock: Lockfile, mirror: Mirror | None = None):
        self.lock = lock
        self.debs = cache_root / DOWNLOAD_DIRS[0]
        self.debs.mkdir(parents=True, exist_ok=True)
        self.apt_dir = cache_root / DOWNLOAD_DIRS[1] / lock.suite
        self._mirror = mirror
        self._apt: PrivateApt | None = None

    def apt(self) -> PrivateApt:
        if self._apt is None:
            mirror = self._mirror or find_mirror()
            self._apt = PrivateApt(self.apt_dir, mirror, self.lock.suite)
        return self._apt

    def fetch_set(self, set_name: str) -> list[tuple[LockedPackage, Path]]:
        packages = self.lock.packages(set_name)
        with FileLock(str(self.debs / ".download.lock"), timeout=3600):
            missing = [p for p in packages if not self._valid(p)]
            if missing:
                self._download(missing)
        return [(p, self.debs / p.ref.deb_name) for p in packages]

    def _valid(self, package: LockedPackage) -> bool:
        path = self.debs / package.ref.deb_name
        return path.exists() and file_sha256(path) == package.sha256

    def _download(self, packages: list[LockedPackage]) -> None:
        apt = self.apt()
        with tempfile.TemporaryDirectory(dir=self.debs, prefix=".dl-") as tmp:
            staging = Path(tmp)
            try:
                apt.ensure_lists()
                try:
                    apt.download([p.ref for p in packages], staging)
                except AptError:
                    apt.update()  # the index may be older than the lock
                    apt.download([p.ref for p in packages], staging)
            except AptError as error:
                raise FetchError(
                    f"could not download {len(packages)} locked package(s) "
                    f"({', '.join(p.ref.spec for p in packages[:5])}{', ...' if len(packages) > 5 else ''}). "
                    f"If the mirror no longer has these versions, refresh the lock with `bootmatrix lock`.\n"
                    f"{error}"
                ) from error
            for package in packages:
                path = staging / package.ref.deb_name
                if not path.exists():
                    raise FetchError(f"apt reported success but {path.name} was not downloaded")
                actual = file_sha256(path)
                if actual != package.sha256:
                    raise FetchError(
                        f"{path.name}: sha256 {actual} does not match the lock ({package.sha256}); refusing it"
                    )
                os.replace(path, self.debs / package.ref.deb_name)
            shutil.rmtree(staging, ignore_errors=True)
