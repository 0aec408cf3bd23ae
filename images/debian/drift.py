"""`bootmatrix lock --check`: how far the lock has drifted from the mirror, without writing anything.

Each locked package is one of:
- current: the index still lists exactly this version;
- superseded: the index has moved on, but the pool file is still served (downloads work; a later
  mirror clean-up will remove it, so refresh the lock soon);
- gone: the pool file answers 404: a default run re-resolves its set, --locked fails;
- unknown: the index for its arch is unusable now (mirror mid-sync): only the pool file was checked;
and a package the index's resolution of a set has that the lock lacks (a new kernel ABI, a new
library in QEMU's closure) is listed as `new`.
"""

from __future__ import annotations

from dataclasses import dataclass

import urllib3

from images.debian.apt import AptError, IndexUnusable
from images.debian.lock import Indexes, LockedPackage, LockError, Lockfile, resolve_set


@dataclass(frozen=True)
class PackageStatus:
    set_name: str
    package: LockedPackage
    status: str  # current, superseded, gone, unknown, new
    index_version: str | None  # what the index resolves the set to for this package, when it could
    pool_http: int | None  # the pool file's HTTP status, when it was asked (not for current packages)
    note: str = ""


def _pool_status(http: urllib3.PoolManager, url: str) -> int:
    try:
        response = http.request("HEAD", url, redirect=True, retries=urllib3.Retry(3, backoff_factor=0.5))
    except urllib3.exceptions.HTTPError:
        return 0
    return int(response.status)


def check_lock(lock: Lockfile, index: Indexes, http: urllib3.PoolManager) -> list[PackageStatus]:
    statuses = []
    for set_name, packages in sorted(lock.sets.items()):
        note = ""
        resolved: dict[tuple[str, str], str] = {}
        try:
            resolution = resolve_set(index, set_name, packages)
            resolved = {(p.name, p.arch): p.version for p in resolution}
        except IndexUnusable as error:
            note = str(error).splitlines()[0]
        except (AptError, LockError) as error:
            note = f"could not resolve: {str(error).splitlines()[0]}"
        for package in packages:
            now = resolved.get((package.name, package.arch))
            if now == package.version:
                statuses.append(PackageStatus(set_name, package, "current", now, None))
                continue
            code = _pool_status(http, f"{index.mirror.uri}/{package.filename}")
            if code in (404, 410):
                status = "gone"
            elif not resolved:
                status = "unknown"
            else:
                status = "superseded"
            statuses.append(PackageStatus(set_name, package, status, now, code, note))
        names = {(p.name, p.arch) for p in packages}
        statuses += [PackageStatus(set_name, p, "new", p.version, None)
                     for p in (resolution if resolved else []) if (p.name, p.arch) not in names]
    return statuses
