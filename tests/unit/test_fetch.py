"""Downloads are verified against the lock: a bad cached file is fetched again, bad bytes are refused.

apt itself is replaced by a stand-in that writes given bytes: what is tested is the verification logic.
The real apt path is exercised by every VM test (they fetch their kernels and QEMU through it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from images.debian.apt import PackageRef
from images.debian.fetch import DebianFetcher, FetchError
from images.debian.lock import LockedPackage, LockError, Lockfile


class StandInApt:
    def __init__(self, payload: bytes):
        self.payload = payload
        self.downloads: list[list[str]] = []

    def ensure_lists(self) -> None:
        pass

    def update(self) -> None:
        pass

    def download(self, refs: list[PackageRef], dest: Path) -> None:
        self.downloads.append([r.spec for r in refs])
        for ref in refs:
            (dest / ref.deb_name).write_bytes(self.payload)


def fetcher(tmp_path: Path, good: bytes, served: bytes) -> tuple[DebianFetcher, StandInApt, LockedPackage]:
    package = LockedPackage("hello", "amd64", "1:2.0-1", hashlib.sha256(good).hexdigest(), len(good))
    lock = Lockfile("trixie", {"hello-set": [package]}, tmp_path / "lock.json")
    instance = DebianFetcher(tmp_path / "cache", lock)
    apt = StandInApt(served)
    instance._apt = apt  # type: ignore[assignment]
    return instance, apt, package


def test_download_verified_then_served_from_cache(tmp_path: Path) -> None:
    instance, apt, _package = fetcher(tmp_path, b"good deb", b"good deb")
    ((_, path),) = instance.fetch_set("hello-set")
    assert path.name == "hello_1%3a2.0-1_amd64.deb" and path.read_bytes() == b"good deb"
    instance.fetch_set("hello-set")
    assert apt.downloads == [["hello:amd64=1:2.0-1"]]


def test_corrupted_cached_deb_is_downloaded_again(tmp_path: Path) -> None:
    instance, apt, _package = fetcher(tmp_path, b"good deb", b"good deb")
    ((_, path),) = instance.fetch_set("hello-set")
    path.write_bytes(b"bit rot")
    ((_, path),) = instance.fetch_set("hello-set")
    assert path.read_bytes() == b"good deb" and len(apt.downloads) == 2


def test_bytes_that_do_not_match_the_lock_are_refused(tmp_path: Path) -> None:
    instance, _, package = fetcher(tmp_path, b"good deb", b"tampered deb")
    with pytest.raises(FetchError, match="does not match the lock"):
        instance.fetch_set("hello-set")
    assert not (tmp_path / "cache/debs" / package.ref.deb_name).exists()


def test_lock_errors_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="bootmatrix lock"):
        Lockfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"suite": "trixie"}))
    with pytest.raises(LockError, match="malformed"):
        Lockfile.load(tmp_path / "bad.json")
    lock = Lockfile("trixie", {}, tmp_path / "l.json")
    with pytest.raises(LockError, match="not in"):
        lock.packages("kernel-x86_64")


def test_lock_round_trips(tmp_path: Path) -> None:
    package = LockedPackage("a", "arm64", "1.0", "0" * 64, 3)
    Lockfile("trixie", {"s": [package]}, tmp_path / "l.json").write()
    assert Lockfile.load(tmp_path / "l.json").packages("s") == [package]


def test_the_shipped_lock_pins_every_default_set() -> None:
    lock = Lockfile.load()
    for arch in ("x86_64", "aarch64", "riscv64"):
        assert lock.packages(f"kernel-{arch}")[0].name.startswith("linux-image-")
        assert lock.packages(f"busybox-{arch}")[0].name == "busybox-static"
    qemu = lock.packages("qemu-host-amd64")
    assert {"qemu-system-x86", "qemu-system-arm", "qemu-system-riscv", "libc6"} <= {p.name for p in qemu}
    assert all(len(p.sha256) == 64 for p in qemu)
