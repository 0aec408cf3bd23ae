"""Fetching locked packages against a real Debian mirror made on the spot (tests/debian_mirror.py).

A valid lock needs no index: pinned files are downloaded straight from the pool, verified, and the
index is read only to re-resolve a set whose locked files are really gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import images.debian.download as download_module
import images.debian.fetch as fetch_module
from images.debian.download import pool
from images.debian.drift import check_lock
from images.debian.fetch import DebianFetcher, FetchError, LockDrift
from images.debian.lock import Indexes, LockedPackage, LockError, Lockfile
from tests.debian_mirror import SUITE, LocalMirror, run_fetch_in_subprocess

V1, V2 = "1.0-1", "2.0-1"


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalMirror]:
    """bm-hello 1.0-1 and 2.0-1 for amd64 and riscv64 and bm-data (all) in the pool; the index lists
    only the 2.0-1 versions (1.0-1 is superseded), signed with a throwaway key."""
    monkeypatch.setattr(download_module, "BACKOFF", 0.01)
    served = LocalMirror(tmp_path)
    for version in (V1, V2):
        for arch in ("amd64", "riscv64"):
            # Incompressible, so the .deb is large enough to be cut mid-file after whole chunks arrived.
            served.add_deb("bm-hello", version, arch, random.Random(f"{version}{arch}").randbytes(300_000))
    served.add_deb("bm-data", V1, "all", b"data\n" * 100)
    served.publish([("bm-hello", "amd64", V2), ("bm-hello", "riscv64", V2), ("bm-data", "all", V1)])
    yield served
    served.close()


def make_lock(mirror: LocalMirror, path: Path, version: str = V1) -> Lockfile:
    lock = Lockfile(SUITE, {
        "hello-amd64": [mirror.locked("bm-hello", "amd64", version), mirror.locked("bm-data", "all", V1)],
        "hello-riscv64": [mirror.locked("bm-hello", "riscv64", version)],
    }, path)
    lock.write()
    return lock


def fetcher(mirror: LocalMirror, tmp_path: Path, locked: bool = False, version: str = V1) -> DebianFetcher:
    return DebianFetcher(tmp_path / "cache", make_lock(mirror, tmp_path / "lock.json", version), mirror.mirror(),
                         locked=locked)


def test_locked_files_come_from_the_pool_without_the_index(mirror: LocalMirror, tmp_path: Path) -> None:
    """1.0-1 is no longer in the index (superseded) and riscv64's index is mid-sync: neither matters."""
    mirror.break_index("riscv64")
    instance = fetcher(mirror, tmp_path)
    for set_name in ("hello-amd64", "hello-riscv64"):
        for package, path in instance.fetch_set(set_name):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256
            assert package.version == V1
    assert mirror.index_requests() == []
    assert set(mirror.downloads().values()) == {1} and len(mirror.downloads()) == 3


def test_a_warm_fetch_makes_no_request_and_hashes_nothing(
    mirror: LocalMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher(mirror, tmp_path).fetch_set("hello-amd64")
    requests = len(mirror.requests)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(fetch_module, "file_sha256", no_hashing)
    again = fetcher(mirror, tmp_path)  # a new process: nothing remembered in memory
    assert [p.version for p, _ in again.fetch_set("hello-amd64")] == [V1, V1]
    assert len(mirror.requests) == requests


def test_a_changed_cached_file_is_hashed_and_fetched_again(mirror: LocalMirror, tmp_path: Path) -> None:
    ((package, path), _) = fetcher(mirror, tmp_path).fetch_set("hello-amd64")
    path.write_bytes(b"bit rot")
    ((package, path), _) = fetcher(mirror, tmp_path).fetch_set("hello-amd64")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256
    assert mirror.downloads()[mirror.path_of(package)] == 2


def test_bytes_that_do_not_match_the_lock_are_refused(mirror: LocalMirror, tmp_path: Path) -> None:
    instance = fetcher(mirror, tmp_path)
    package = instance.lock.packages("hello-riscv64")[0]
    mirror.faults.replaced[mirror.path_of(package)] = b"X" * package.size  # same size, other bytes
    with pytest.raises(FetchError, match=rf"bm-hello:riscv64={V1}.*sha256 .* expected .*refusing it"):
        instance.fetch_set("hello-riscv64")
    assert sorted(p.name for p in (tmp_path / "cache/debs").iterdir() if p.is_file()) == []


def test_a_cut_connection_is_resumed(mirror: LocalMirror, tmp_path: Path) -> None:
    instance = fetcher(mirror, tmp_path)
    package = instance.lock.packages("hello-riscv64")[0]
    mirror.faults.cut[mirror.path_of(package)] = 2
    ((_, path),) = instance.fetch_set("hello-riscv64")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256
    attempts = [r for r in mirror.requests if r.path == mirror.path_of(package)]
    assert [r.status for r in attempts] == [200, 206, 206]
    assert attempts[1].range is not None and attempts[1].range.startswith("bytes=")


def test_a_connection_that_always_breaks_is_a_clear_error(mirror: LocalMirror, tmp_path: Path) -> None:
    instance = fetcher(mirror, tmp_path)
    package = instance.lock.packages("hello-riscv64")[0]
    mirror.faults.cut_always.add(mirror.path_of(package))
    with pytest.raises(FetchError, match=r"bm-hello:riscv64=1\.0-1: gave up after 5 attempts: .*(connection lost|body "
                                         r"ended)"):
        instance.fetch_set("hello-riscv64")
    assert not (tmp_path / "cache/debs" / package.ref.deb_name).exists()


def test_a_gone_file_re_resolves_its_set_by_default(
    mirror: LocalMirror, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror.remove("bm-hello", "amd64", V1)
    instance = fetcher(mirror, tmp_path)
    with caplog.at_level(logging.WARNING):
        packages = [p for p, _ in instance.fetch_set("hello-amd64")]
    assert [(p.name, p.version) for p in packages] == [("bm-hello", V2), ("bm-data", V1)]
    warning = capsys.readouterr().err
    assert f"gone from the mirror (bm-hello:amd64={V1})" in warning
    assert f"bm-hello:amd64 {V1} -> {V2}" in warning and "bootmatrix lock" in warning
    assert [str(m) for m in instance.drift] == [f"bm-hello:amd64 {V1} -> {V2}"]
    # The other set and the lock file are untouched; a later process uses the re-resolved set offline.
    assert [p.version for p, _ in instance.fetch_set("hello-riscv64")] == [V1]
    assert Lockfile.load(tmp_path / "lock.json").packages("hello-amd64")[0].version == V1
    requests = len(mirror.requests)
    later = fetcher(mirror, tmp_path)
    assert [p.version for p, _ in later.fetch_set("hello-amd64")] == [V2, V1]
    assert len(mirror.requests) == requests and [str(m) for m in later.drift] == [f"bm-hello:amd64 {V1} -> {V2}"]


def test_locked_mode_fails_on_a_gone_file_naming_it(mirror: LocalMirror, tmp_path: Path) -> None:
    mirror.remove("bm-hello", "amd64", V1)
    instance = fetcher(mirror, tmp_path, locked=True)
    with pytest.raises(LockDrift, match=rf"hello-amd64 are gone from the mirror \(HTTP 404\): bm-hello:amd64={V1}\. "
                                        r"Refresh the lock with `bootmatrix lock`"):
        instance.fetch_set("hello-amd64")
    assert mirror.index_requests() == []
    # A set re-resolved earlier by a default run is refused too.
    fetcher(mirror, tmp_path).fetch_set("hello-amd64")
    with pytest.raises(LockDrift, match="were gone from the mirror earlier"):
        fetcher(mirror, tmp_path, locked=True).packages("hello-amd64")


def test_a_broken_index_stops_only_what_needs_it(mirror: LocalMirror, tmp_path: Path) -> None:
    """riscv64's index is mid-sync: re-resolving a gone riscv64 file fails naming the file, the arch
    and the likely cause, while a gone amd64 file re-resolves through amd64's intact index."""
    mirror.break_index("riscv64")
    mirror.remove("bm-hello", "amd64", V1)
    mirror.remove("bm-hello", "riscv64", V1)
    instance = fetcher(mirror, tmp_path)
    with pytest.raises(LockDrift) as caught:
        instance.fetch_set("hello-riscv64")
    message = str(caught.value)
    assert "binary-riscv64/Packages" in message and "for riscv64 is unusable" in message
    assert "mirror sync in progress" in message and "BOOTMATRIX_DEBIAN_MIRROR" in message
    assert [p.version for p, _ in instance.fetch_set("hello-amd64")] == [V2, V1]


def test_two_processes_download_each_file_once(mirror: LocalMirror, tmp_path: Path) -> None:
    make_lock(mirror, tmp_path / "lock.json")
    mirror.faults.delay = 0.2
    children = [run_fetch_in_subprocess(tmp_path / "cache", mirror.url, mirror.keyring, tmp_path / "lock.json",
                                        "hello-amd64") for _ in range(2)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
        assert out.decode().strip() == "2"
    assert sorted(mirror.downloads().values()) == [1, 1]


def test_lock_check_reports_current_superseded_gone_and_unknown(mirror: LocalMirror, tmp_path: Path) -> None:
    mirror.remove("bm-hello", "amd64", V1)
    mirror.break_index("riscv64")
    lock = make_lock(mirror, tmp_path / "lock.json")
    lock.sets["hello-current"] = [mirror.locked("bm-hello", "amd64", V2)]
    statuses = check_lock(lock, Indexes(tmp_path / "apt", mirror.mirror(), SUITE), pool())
    found = {(s.set_name, s.package.name, s.status, s.index_version) for s in statuses}
    assert found == {
        ("hello-amd64", "bm-hello", "gone", V2),
        ("hello-amd64", "bm-data", "current", V1),
        ("hello-current", "bm-hello", "current", V2),
        ("hello-riscv64", "bm-hello", "unknown", None),
    }
    unknown = next(s for s in statuses if s.status == "unknown")
    assert unknown.pool_http == 200 and "mirror sync in progress" in unknown.note


def test_lock_errors_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="bootmatrix lock"):
        Lockfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"suite": "trixie"}))
    with pytest.raises(LockError, match="malformed"):
        Lockfile.load(tmp_path / "bad.json")
    old = {"suite": "trixie", "sets": {"s": [{"name": "a", "arch": "all", "version": "1", "sha256": "0", "size": 1}]}}
    (tmp_path / "old.json").write_text(json.dumps(old))  # a lock from before pool paths
    with pytest.raises(LockError, match=r"malformed.*bootmatrix lock"):
        Lockfile.load(tmp_path / "old.json")
    lock = Lockfile("trixie", {}, tmp_path / "l.json")
    with pytest.raises(LockError, match="not in"):
        lock.packages("kernel-x86_64")


def test_lock_round_trips(tmp_path: Path) -> None:
    package = LockedPackage("a", "arm64", "1.0", "0" * 64, 3, "pool/main/a/a/a_1.0_arm64.deb")
    Lockfile("trixie", {"s": [package]}, tmp_path / "l.json").write()
    assert Lockfile.load(tmp_path / "l.json").packages("s") == [package]


def test_the_shipped_lock_pins_every_default_set_with_its_pool_path() -> None:
    lock = Lockfile.load()
    for arch in ("x86_64", "aarch64", "riscv64"):
        assert lock.packages(f"kernel-{arch}")[0].name.startswith("linux-image-")
        assert lock.packages(f"busybox-{arch}")[0].name == "busybox-static"
    qemu = lock.packages("qemu-host-amd64")
    assert {"qemu-system-x86", "qemu-system-arm", "qemu-system-riscv", "libc6"} <= {p.name for p in qemu}
    for packages in lock.sets.values():
        for package in packages:
            assert len(package.sha256) == 64 and package.size > 0
            assert package.filename.startswith("pool/main/") and package.filename.endswith(
                f"_{package.version.split(':')[-1]}_{package.arch}.deb"), package
